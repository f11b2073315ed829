# Data stage: download (mirror or official URLs, sha256-pinned) -> Parquet splits with stored candidates.


rule download:
    output:
        directory("resources/raw/{dataset}/{source}"),
    params:
        extra_sha256=lambda w: source_pins(w.dataset, w.source),
    resources:
        # where the bytes come from is not a rerun trigger (they are sha256-verified either way), so
        # switching between a mirror and the official hosts does not rerun the pipeline: not a param
        mirror=lambda w: mirror() or "",
    log:
        "logs/download/{dataset}_{source}.log",
    conda:
        ENV
    wildcard_constraints:
        source="llara|raw",
    script:
        "../scripts/data_download.py"


rule preprocess:
    input:
        raw=lambda w: f"resources/raw/{w.dataset}/{dataset_source(w.dataset)}",
    output:
        item_table="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        test="results/{dataset}/data/test.parquet",
    params:
        source=lambda w: dataset_source(w.dataset),
        data=config["data"],
        seed=config["seed"],
        extra_sha256=lambda w: source_pins(w.dataset, dataset_source(w.dataset)),
    log:
        "logs/preprocess/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/data_preprocess.py"
