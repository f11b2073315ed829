# Seqrec stage: train SASRec / GRU4Rec / Caser on a dataset's train split, evaluate it as a ranker on the
# stored candidates, export its item-embedding table for the LLM stage (see docs/interfaces.md).
# Seeds (config seed / seeds, llara.seeds): one training seed -> the folders below; a seed sweep trains every
# other seed in results/{dataset}/{seqrec}/seeds/{seed}/seqrec/ (rule seqrec_train_seed).
from llara import seeds as seedwf

SEQREC_MODELS = ["sasrec", "gru4rec", "caser"]


wildcard_constraints:
    seed="[0-9]+",


rule seqrec_train:
    input:
        item_table="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        test="results/{dataset}/data/test.parquet",
    output:
        model="results/{dataset}/{seqrec}/seqrec/model.safetensors",
        embeddings="results/{dataset}/{seqrec}/seqrec/item_embeddings.parquet",
        metrics="results/{dataset}/{seqrec}/seqrec/metrics.json",
    params:
        # seqrec.<model> with seqrec.overrides.<dataset>.<model> on top: only this model's slice
        hparams=lambda w: {
            **config["seqrec"][w.seqrec],
            **config["seqrec"]["overrides"].get(w.dataset, {}).get(w.seqrec, {}),
        },
        seed=seedwf.legacy_seed(config),
    log:
        "logs/seqrec/{dataset}_{seqrec}.log",
    wildcard_constraints:
        seqrec="|".join(SEQREC_MODELS),
    # small models: one thread each lets two models train side by side on 2 cores
    threads: 1
    conda:
        ENV
    script:
        "../scripts/seqrec_train.py"


if seedwf.is_sweep(config):

    use rule seqrec_train as seqrec_train_seed with:
        output:
            model="results/{dataset}/{seqrec}/seeds/{seed}/seqrec/model.safetensors",
            embeddings="results/{dataset}/{seqrec}/seeds/{seed}/seqrec/item_embeddings.parquet",
            metrics="results/{dataset}/{seqrec}/seeds/{seed}/seqrec/metrics.json",
        params:
            seed=lambda w: int(w.seed),
        log:
            "logs/seqrec/{dataset}_{seqrec}_seed{seed}.log",
