# Evaluation stage (issue #5): the tuned LLaRA model, the zero-shot base LLM and the ablations in
# generate mode (greedy answer + LLaRA's validity/hit rule, docs/metrics.md) and rank mode
# (candidate log-likelihoods) on the first k stored candidate sets; the seqrec backbones as
# per-row rankers (for paired comparisons). Outputs: predictions.parquet + metrics.json.
# Params carry only the resolved slice of config `evaluate` (+ seed): changing an evaluation key
# reruns the evaluations and the report, nothing upstream. Config -> inputs/params mapping:
# llara.evaluate.workflow.
from llara.evaluate import workflow as evalwf


rule evaluate:
    input:
        unpack(lambda w: evalwf.eval_inputs(config, "llara", w.dataset, w.seqrec)),
    output:
        predictions="results/{dataset}/{seqrec}/predictions.parquet",
        metrics="results/{dataset}/{seqrec}/metrics.json",
    params:
        settings=lambda w: evalwf.eval_settings(config, "llara"),
        method="llara",
        seed=config["seed"],
    log:
        "logs/evaluate/{dataset}_{seqrec}.log",
    wildcard_constraints:
        seqrec="|".join(evalwf.SEQREC),
    threads: 2
    conda:
        ENV
    script:
        "../scripts/evaluate_llm.py"


rule evaluate_zeroshot:
    input:
        unpack(lambda w: evalwf.eval_inputs(config, "zeroshot", w.dataset)),
    output:
        predictions="results/{dataset}/zeroshot/predictions.parquet",
        metrics="results/{dataset}/zeroshot/metrics.json",
    params:
        settings=lambda w: evalwf.eval_settings(config, "zeroshot"),
        method="zeroshot",
        seed=config["seed"],
    log:
        "logs/evaluate_zeroshot/{dataset}.log",
    threads: 2
    conda:
        ENV
    script:
        "../scripts/evaluate_llm.py"


rule evaluate_ablation:
    input:
        unpack(lambda w: evalwf.eval_inputs(config, "ablation", w.dataset, w.seqrec, w.variant)),
    output:
        predictions="results/{dataset}/{seqrec}/ablations/{variant}/predictions.parquet",
        metrics="results/{dataset}/{seqrec}/ablations/{variant}/metrics.json",
    params:
        settings=lambda w: evalwf.eval_settings(config, "ablation", w.variant),
        method="ablation",
        seed=config["seed"],
    log:
        "logs/evaluate_ablation/{dataset}_{seqrec}_{variant}.log",
    wildcard_constraints:
        seqrec="|".join(evalwf.SEQREC),
    threads: 2
    conda:
        ENV
    script:
        "../scripts/evaluate_llm.py"


rule evaluate_seqrec:
    input:
        unpack(lambda w: evalwf.seqrec_ranker_inputs(config, w.dataset, w.seqrec)),
    output:
        predictions="results/{dataset}/{seqrec}/seqrec/ranker_predictions.parquet",
        metrics="results/{dataset}/{seqrec}/seqrec/ranker_metrics.json",
    params:
        splits=config["evaluate"]["splits"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["seed"],
    log:
        "logs/evaluate_seqrec/{dataset}_{seqrec}.log",
    wildcard_constraints:
        seqrec="|".join(evalwf.SEQREC),
    threads: 1
    conda:
        ENV
    script:
        "../scripts/evaluate_seqrec.py"
