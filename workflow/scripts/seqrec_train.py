"""Adapter: items/train/valid/test Parquet -> trained backbone, item embeddings, ranking metrics (llara.seqrec)."""
from llara.runlog import setup_logging
from llara.seqrec import run_seqrec

setup_logging(snakemake.log[0])
run_seqrec(snakemake.wildcards.seqrec, items=snakemake.input.item_table, train=snakemake.input.train,
           valid=snakemake.input.valid, test=snakemake.input.test,
           out_model=snakemake.output.model, out_embeddings=snakemake.output.embeddings,
           out_metrics=snakemake.output.metrics, hparams=snakemake.params.hparams, seed=snakemake.params.seed,
           threads=snakemake.threads, dataset=snakemake.wildcards.dataset)
