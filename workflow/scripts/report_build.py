"""Adapter of rule report: one call to llara.report.build.build_report."""

from llara.runlog import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from llara.report.build import build_report  # noqa: E402

p = snakemake.params  # noqa: F821
build_report(p.entries, p.out_dir, split=p.report["split"], llm_mode=p.report["llm_mode"],
             paper_rows=p.report["paper_rows"], seed=p.seed, n_resamples=p.bootstrap["n_resamples"],
             alpha=p.bootstrap["alpha"], config=p.report)
