"""Adapter of rules aggregate_seeds*: one method's per-seed evaluations -> its metrics.json (llara.evaluate.aggregate)
(+ summary.md, printed, where the rule declares it: llara.evaluate.summary)."""

from llara.runlog import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from llara.evaluate.aggregate import write_seed_aggregate  # noqa: E402
from llara.evaluate.summary import write_summary  # noqa: E402
from llara.io import check_replaceable  # noqa: E402

i, p, out = snakemake.input, snakemake.params, snakemake.output  # noqa: F821
if out.get("summary"):
    check_replaceable(out.summary)  # before any work, as every output
write_seed_aggregate(p.runs, out.metrics, seed=p.seed, n_resamples=p.bootstrap["n_resamples"], alpha=p.bootstrap["alpha"])
if out.get("summary"):
    backbone = [path for name, path in i.items() if name.startswith("backbone_seed")]  # in seed order
    print(write_summary(out.metrics, out.summary, backbone), f"(also in {out.summary})", sep="\n", flush=True)
