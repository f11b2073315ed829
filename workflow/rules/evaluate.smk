# Evaluation stage (issue #5): the tuned LLaRA model, the zero-shot base LLM and the ablations in
# generate mode (greedy answer + LLaRA's validity/hit rule, docs/metrics.md) and rank mode
# (candidate log-likelihoods) on the first k stored candidate sets; the seqrec backbones as
# per-row rankers (for paired comparisons); two no-LLM reference scorers on the same rows and sets
# (popularity: train-target counts; last_item: a backbone's embedding of the last history item).
# Outputs: predictions.parquet + metrics.json; rule evaluate (the main target's job) also writes summary.md beside
# them and prints it (llara.evaluate.summary: HR@1 [CI] / ValidRatio per mode, chance, the backbone; in a sweep
# rule aggregate_seeds writes the method-level one).
# Params carry only the resolved slice of config `evaluate` (+ seed): changing an evaluation key
# reruns the evaluations and the report, nothing upstream. Config -> inputs/params mapping:
# llara.evaluate.workflow.
# Seeds (llara.seeds): with one training seed every file is where it always was. In a seed sweep each
# trained method is evaluated once per seed in results/{dataset}/{seqrec}/seeds/{seed}/ and the
# aggregate_* rules write the method-level metrics.json over seeds x candidate sets; the zero-shot
# model is not trained, so it is evaluated once; so is the popularity reference (no seed plays a part),
# while last_item follows its backbone's training seed like evaluate_seqrec.
from llara.evaluate import workflow as evalwf

SWEEP = seedwf.is_sweep(config)
# one seed's evaluation folder
RUN = "results/{dataset}/{seqrec}/seeds/{seed}" if SWEEP else "results/{dataset}/{seqrec}"
RUN_LOG = "_seed{seed}" if SWEEP else ""


rule evaluate:
    input:
        unpack(
            lambda w: evalwf.eval_inputs(
                config, "llara", w.dataset, w.seqrec, seed=seedwf.wildcard_seed(config, w)
            )
        ),
    output:
        predictions=f"{RUN}/predictions.parquet",
        metrics=f"{RUN}/metrics.json",
        summary=f"{RUN}/summary.md",
    params:
        settings=lambda w: evalwf.eval_settings(config, "llara"),
        method="llara",
        seed=config["seed"],
        train_seed=lambda w: seedwf.wildcard_seed(config, w),
    log:
        f"logs/evaluate/{{dataset}}_{{seqrec}}{RUN_LOG}.log",
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
        train_seed=None,
    log:
        "logs/evaluate_zeroshot/{dataset}.log",
    threads: 2
    conda:
        ENV
    script:
        "../scripts/evaluate_llm.py"


rule evaluate_ablation:
    input:
        unpack(
            lambda w: evalwf.eval_inputs(
                config, "ablation", w.dataset, w.seqrec, w.variant, seed=seedwf.wildcard_seed(config, w)
            )
        ),
    output:
        predictions=f"{RUN}/ablations/{{variant}}/predictions.parquet",
        metrics=f"{RUN}/ablations/{{variant}}/metrics.json",
    params:
        settings=lambda w: evalwf.eval_settings(config, "ablation", w.variant),
        method="ablation",
        seed=config["seed"],
        train_seed=lambda w: seedwf.wildcard_seed(config, w),
    log:
        f"logs/evaluate_ablation/{{dataset}}_{{seqrec}}_{{variant}}{RUN_LOG}.log",
    wildcard_constraints:
        seqrec="|".join(evalwf.SEQREC),
    threads: 2
    conda:
        ENV
    script:
        "../scripts/evaluate_llm.py"


rule evaluate_seqrec:
    input:
        unpack(
            lambda w: evalwf.seqrec_ranker_inputs(
                config, w.dataset, w.seqrec, seed=seedwf.wildcard_seed(config, w)
            )
        ),
    output:
        predictions=f"{RUN}/seqrec/ranker_predictions.parquet",
        metrics=f"{RUN}/seqrec/ranker_metrics.json",
    params:
        splits=config["evaluate"]["splits"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["seed"],
        train_seed=lambda w: seedwf.wildcard_seed(config, w),
    log:
        f"logs/evaluate_seqrec/{{dataset}}_{{seqrec}}{RUN_LOG}.log",
    wildcard_constraints:
        seqrec="|".join(evalwf.SEQREC),
    threads: 1
    conda:
        ENV
    script:
        "../scripts/evaluate_seqrec.py"


rule evaluate_reference_popularity:
    input:
        unpack(lambda w: evalwf.reference_inputs(config, w.dataset, "popularity")),
    output:
        predictions="results/{dataset}/reference/popularity/predictions.parquet",
        metrics="results/{dataset}/reference/popularity/metrics.json",
    params:
        kind="popularity",
        splits=config["evaluate"]["splits"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["seed"],
        train_seed=None,
    log:
        "logs/evaluate_reference/{dataset}_popularity.log",
    threads: 1
    conda:
        ENV
    script:
        "../scripts/evaluate_reference.py"


rule evaluate_reference_last_item:
    input:
        unpack(
            lambda w: evalwf.reference_inputs(
                config, w.dataset, "last_item", w.seqrec, seed=seedwf.wildcard_seed(config, w)
            )
        ),
    output:
        predictions=f"{RUN}/reference/last_item/predictions.parquet",
        metrics=f"{RUN}/reference/last_item/metrics.json",
    params:
        kind="last_item",
        splits=config["evaluate"]["splits"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["seed"],
        train_seed=lambda w: seedwf.wildcard_seed(config, w),
    log:
        f"logs/evaluate_reference/{{dataset}}_{{seqrec}}_last_item{RUN_LOG}.log",
    wildcard_constraints:
        seqrec="|".join(evalwf.SEQREC),
    threads: 1
    conda:
        ENV
    script:
        "../scripts/evaluate_reference.py"


if SWEEP:

    rule aggregate_seeds:
        input:
            unpack(lambda w: {**evalwf.seed_run_inputs(config, "llara", w.dataset, w.seqrec),
                              **evalwf.backbone_inputs(config, w.dataset, w.seqrec)}),
        output:
            metrics="results/{dataset}/{seqrec}/metrics.json",
            summary="results/{dataset}/{seqrec}/summary.md",  # the derived rules below write none
        params:
            runs=lambda w: evalwf.seed_runs(config, "llara", w.dataset, w.seqrec),
            bootstrap=config["evaluate"]["bootstrap"],
            seed=config["seed"],
        log:
            "logs/aggregate_seeds/{dataset}_{seqrec}.log",
        wildcard_constraints:
            seqrec="|".join(evalwf.SEQREC),
        conda:
            ENV
        script:
            "../scripts/evaluate_aggregate.py"

    use rule aggregate_seeds as aggregate_seeds_ablation with:
        input:
            unpack(lambda w: evalwf.seed_run_inputs(config, "ablation", w.dataset, w.seqrec, w.variant)),
        output:
            metrics="results/{dataset}/{seqrec}/ablations/{variant}/metrics.json",
        params:
            runs=lambda w: evalwf.seed_runs(config, "ablation", w.dataset, w.seqrec, w.variant),
        log:
            "logs/aggregate_seeds/{dataset}_{seqrec}_{variant}.log",
        wildcard_constraints:
            seqrec="|".join(evalwf.SEQREC),

    use rule aggregate_seeds as aggregate_seeds_seqrec with:
        input:
            unpack(lambda w: evalwf.seed_run_inputs(config, "seqrec", w.dataset, w.seqrec)),
        output:
            metrics="results/{dataset}/{seqrec}/seqrec/ranker_metrics.json",
        params:
            runs=lambda w: evalwf.seed_runs(config, "seqrec", w.dataset, w.seqrec),
        log:
            "logs/aggregate_seeds/{dataset}_{seqrec}_seqrec.log",

    use rule aggregate_seeds as aggregate_seeds_reference with:
        input:
            unpack(lambda w: evalwf.seed_run_inputs(config, "last_item", w.dataset, w.seqrec)),
        output:
            metrics="results/{dataset}/{seqrec}/reference/last_item/metrics.json",
        params:
            runs=lambda w: evalwf.seed_runs(config, "last_item", w.dataset, w.seqrec),
        log:
            "logs/aggregate_seeds/{dataset}_{seqrec}_last_item.log",
        wildcard_constraints:
            seqrec="|".join(evalwf.SEQREC),
