"""Adapter: raw files (or the user's own files) -> items/train/valid/test Parquet (llara.data.preprocess)."""
from llara.data.preprocess import preprocess
from llara.runlog import setup_logging

setup_logging(snakemake.log[0])
preprocess(snakemake.wildcards.dataset, snakemake.params.source, snakemake.input.get("raw"),
           {"items": snakemake.output.item_table, **{s: snakemake.output[s] for s in ("train", "valid", "test")}},
           snakemake.params.data, seed=snakemake.params.seed, extra_sha256=snakemake.params.extra_sha256)
