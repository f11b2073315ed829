# Data stage: download (mirror or official URLs, sha256-pinned) -> Parquet splits with stored candidates.
# A `source: interactions` dataset has no download: rule preprocess reads the user's two files where the
# config says (read only; llara.data.datasets, docs/own-data.md).


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
        unpack(lambda w: dsets.preprocess_inputs(w.dataset, dataset_entry(w.dataset))),
    output:
        item_table="results/{dataset}/data/items.parquet",
        train="results/{dataset}/data/train.parquet",
        valid="results/{dataset}/data/valid.parquet",
        test="results/{dataset}/data/test.parquet",
    params:
        # built-in: the source name; interactions: the file layout (not the prompt wording)
        source=lambda w: dsets.data_slice(w.dataset, dataset_entry(w.dataset)),
        data=config["data"],
        seed=config["seed"],
        extra_sha256=lambda w: preprocess_pins(w.dataset),
    log:
        "logs/preprocess/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/data_preprocess.py"
