"""Command line: ``python -m llara.report OUT_DIR ENTRIES.json [--split test] [--llm-mode generate]``.

ENTRIES.json is a list of objects with keys dataset, kind (seqrec | llara | zeroshot | ablation | reference),
label, metrics, and optionally predictions, seqrec, variant, train_log, and runs (one object per
training seed: seed, predictions, metrics, train_log) (llara.report.collect.Entry).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llara.cli_errors import add_debug_argument, input_errors, stage_main
from llara.runlog import setup_logging


@stage_main("report")
def main(argv: list[str]) -> None:
    """Build the report (see the module docstring); an expected error ends in one line, exit status 2."""
    p = argparse.ArgumentParser(prog="python -m llara.report", description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("entries", type=Path, help="JSON list of the methods to report")
    p.add_argument("--split", default="test", choices=["test", "valid"])
    p.add_argument("--llm-mode", default="generate", choices=["generate", "rank"])
    p.add_argument("--no-paper-rows", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--log", type=Path, default=None)
    add_debug_argument(p)
    a = p.parse_args(argv)
    setup_logging(a.log)
    from llara.report.build import build_report
    from llara.report.collect import read_entries

    entries = read_entries(a.entries)
    with input_errors():  # the results it reads (metrics.json, predictions.parquet): ValueError naming the file
        build_report(entries, a.out_dir, split=a.split, llm_mode=a.llm_mode, paper_rows=not a.no_paper_rows,
                     seed=a.seed, n_resamples=a.n_resamples)


if __name__ == "__main__":
    main()
