"""Adapter of rule evaluate_seqrec: the backbone as ranker, per row, in the evaluation's format."""

from llara.runlog import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from llara.evaluate.seqrec_ranker import seqrec_predictions  # noqa: E402

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards  # noqa: F821
seqrec_predictions(
    i.model, i.item_table, {s: i[f"split_{s}"] for s in p.splits}, snakemake.output.predictions,  # noqa: F821
    snakemake.output.metrics, seed=p.seed, n_resamples=p.bootstrap["n_resamples"],  # noqa: F821
    alpha=p.bootstrap["alpha"], meta={"method": "seqrec", "dataset": w.dataset, "seqrec": w.seqrec},
    threads=snakemake.threads, train_seed=p.train_seed,  # noqa: F821
)
