"""Adapter: fetch and verify the raw files of one dataset/source (llara.data.download)."""
from llara.data.download import download_dataset
from llara.runlog import setup_logging

setup_logging(snakemake.log[0])
download_dataset(snakemake.wildcards.dataset, snakemake.wildcards.source, snakemake.output[0],
                 mirror=snakemake.resources.mirror or None, extra_sha256=snakemake.params.extra_sha256)
