# LLM stage (issue #4): the base LLM in Hugging Face layout, then LLaRA tuning (curriculum LoRA +
# projector under DeepSpeed ZeRO). The package (llara.llm) holds all logic; the scripts are adapters.
# Params carry only the resolved config slices a rule needs (llm.* for base_llm; tune.* + seed + the
# prompt format for tune), so changing an evaluation key reruns nothing here. Config -> inputs/params
# mapping: llara.llm.workflow. Seeds (llara.seeds): a seed sweep tunes every seed but the data seed in
# results/{dataset}/{seqrec}/seeds/{seed}/ (rules tune_seed, tune_variant_seed), on that seed's backbone.
# GPUs: the tune job starts one DeepSpeed process per visible GPU (torch.distributed.run), one CPU
# process (gloo) without GPU; request GPUs per rule in the profile (e.g. set-resources: tune:gpu=4).
# Nodes: the `nodes` resource (default 1; the SLURM plugin makes it sbatch --nodes) is passed on as
# --nnodes: the tune job then starts one torch.distributed.run agent per node with srun (docs/clusters.md).
from llara.llm import workflow as llmwf


rule base_llm:
    output:
        directory("resources/llm/{name}"),
    params:
        llm=lambda w: llmwf.base_slice(config, w.name),
        download_dir="resources/llm/_downloads",
    log:
        "logs/base_llm/{name}.log",
    threads: 2
    conda:
        ENV
    script:
        "../scripts/llm_base.py"


localrules:
    prompts,  # writes one small YAML file: no cluster job for it


rule prompts:
    # the dataset's prompt templates: the templates file (llm.templates or the packaged one) resolved with
    # config datasets.<dataset>.domain; strings copied unchanged (the built-in datasets keep the authors' prompts)
    input:
        templates=lambda w: llmwf.templates_path(config),
    output:
        "results/{dataset}/prompts.yaml",
    params:
        domain=lambda w: llmwf.prompt_domain(config, w.dataset),
    log:
        "logs/prompts/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/llm_prompts.py"


rule tune:
    input:
        unpack(lambda w: llmwf.tune_inputs(config, w.dataset, w.seqrec, repo=workflow.basedir,
                                           seed=seedwf.legacy_seed(config))),
    output:
        adapter=directory("results/{dataset}/{seqrec}/llara/adapter"),
        projector="results/{dataset}/{seqrec}/llara/projector.safetensors",
        train_log="results/{dataset}/{seqrec}/llara/train_log.csv",
        probe="results/{dataset}/{seqrec}/llara/probe.csv",
    params:
        settings=lambda w: llmwf.tune_settings(config, w.dataset, repo=workflow.basedir, seed=seedwf.legacy_seed(config)),
        ckpt_dir="results/{dataset}/{seqrec}/llara_ckpt",  # kept outside the outputs: resume after a kill
    log:
        "logs/tune/{dataset}_{seqrec}.log",
    wildcard_constraints:
        seqrec="|".join(llmwf.SEQREC),
    threads: 2
    resources:
        nodes=1,  # nodes of the tuning job (profile: set-resources: tune: nodes: N), passed as --nnodes
    conda:
        ENV
    script:
        "../scripts/llm_tune.py"


rule tune_variant:
    input:
        unpack(lambda w: llmwf.tune_inputs(config, w.dataset, w.seqrec, w.variant, workflow.basedir,
                                           seedwf.legacy_seed(config))),
    output:
        adapter=directory("results/{dataset}/{seqrec}/ablations/{variant}/llara/adapter"),
        projector="results/{dataset}/{seqrec}/ablations/{variant}/llara/projector.safetensors",
        train_log="results/{dataset}/{seqrec}/ablations/{variant}/llara/train_log.csv",
        probe="results/{dataset}/{seqrec}/ablations/{variant}/llara/probe.csv",
    params:
        settings=lambda w: llmwf.tune_settings(config, w.dataset, w.variant, workflow.basedir, seedwf.legacy_seed(config)),
        ckpt_dir="results/{dataset}/{seqrec}/ablations/{variant}/llara_ckpt",
    log:
        "logs/tune/{dataset}_{seqrec}_{variant}.log",
    wildcard_constraints:
        seqrec="|".join(llmwf.SEQREC),
    threads: 2
    resources:
        nodes=1,  # nodes of the tuning job (profile: set-resources: tune: nodes: N), passed as --nnodes
    conda:
        ENV
    script:
        "../scripts/llm_tune.py"


if seedwf.is_sweep(config):

    use rule tune as tune_seed with:
        input:
            unpack(lambda w: llmwf.tune_inputs(config, w.dataset, w.seqrec, repo=workflow.basedir, seed=int(w.seed))),
        output:
            adapter=directory("results/{dataset}/{seqrec}/seeds/{seed}/llara/adapter"),
            projector="results/{dataset}/{seqrec}/seeds/{seed}/llara/projector.safetensors",
            train_log="results/{dataset}/{seqrec}/seeds/{seed}/llara/train_log.csv",
            probe="results/{dataset}/{seqrec}/seeds/{seed}/llara/probe.csv",
        params:
            settings=lambda w: llmwf.tune_settings(config, w.dataset, repo=workflow.basedir, seed=int(w.seed)),
            ckpt_dir="results/{dataset}/{seqrec}/seeds/{seed}/llara_ckpt",
        log:
            "logs/tune/{dataset}_{seqrec}_seed{seed}.log",

    use rule tune_variant as tune_variant_seed with:
        input:
            unpack(lambda w: llmwf.tune_inputs(config, w.dataset, w.seqrec, w.variant, workflow.basedir, int(w.seed))),
        output:
            adapter=directory("results/{dataset}/{seqrec}/seeds/{seed}/ablations/{variant}/llara/adapter"),
            projector="results/{dataset}/{seqrec}/seeds/{seed}/ablations/{variant}/llara/projector.safetensors",
            train_log="results/{dataset}/{seqrec}/seeds/{seed}/ablations/{variant}/llara/train_log.csv",
            probe="results/{dataset}/{seqrec}/seeds/{seed}/ablations/{variant}/llara/probe.csv",
        params:
            settings=lambda w: llmwf.tune_settings(config, w.dataset, w.variant, workflow.basedir, int(w.seed)),
            ckpt_dir="results/{dataset}/{seqrec}/seeds/{seed}/ablations/{variant}/llara_ckpt",
        log:
            "logs/tune/{dataset}_{seqrec}_{variant}_seed{seed}.log",
