"""Adapter of rules aggregate_seeds*: one method's per-seed evaluations -> its metrics.json (llara.evaluate.aggregate)."""

from llara.runlog import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from llara.evaluate.aggregate import write_seed_aggregate  # noqa: E402

p = snakemake.params  # noqa: F821
write_seed_aggregate(p.runs, snakemake.output.metrics, seed=p.seed,  # noqa: F821
                     n_resamples=p.bootstrap["n_resamples"], alpha=p.bootstrap["alpha"])
