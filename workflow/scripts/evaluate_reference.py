"""Adapter of rules evaluate_reference_*: a no-LLM reference scorer, per row, in the evaluation's format."""

from llara.runlog import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from llara.evaluate.reference import reference_predictions  # noqa: E402

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards  # noqa: F821
reference_predictions(
    p.kind, i.item_table, {s: i[f"split_{s}"] for s in p.splits}, snakemake.output.predictions,  # noqa: F821
    snakemake.output.metrics, train_path=i.get("train"), embeddings_path=i.get("embeddings"),  # noqa: F821
    seed=p.seed, n_resamples=p.bootstrap["n_resamples"], alpha=p.bootstrap["alpha"], train_seed=p.train_seed,
    meta={"dataset": w.dataset, "seqrec": w.get("seqrec")},
)
