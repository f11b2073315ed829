"""One method over training seeds x candidate sets: the ``aggregate`` block of metrics.json.

For each split and mode, each (seed, candidate set) evaluation is one column of ``[rows, seeds x
sets]`` outcome matrices; the rows must be paired (the same users, targets and candidate lists for
every seed). Per metric:

* ``mean``: the metric averaged over seeds x sets (each cell a ratio of sums, as per set: the
  paper's HR@1 is correct / valid within a cell), with ``<metric>_ci``, a percentile row bootstrap:
  rows are drawn with replacement and keep all their seeds and sets together, i.e. a bootstrap over
  rows of the per-row mean across seeds and sets. It covers the sampling of test users given these
  seeds and sets; ``sd`` shows how much a single seed moves;
* ``sd``: standard deviation over seeds (ddof 1) of each seed's mean over sets; null with one run;
* ``min`` / ``max``: the lowest and highest single (seed, set) evaluation;
* ``per_seed``: each seed's mean over sets (``seed`` null for an untrained method).

With one run the ``mean`` and its interval equal the file's ``splits.{split}.{mode}.mean`` (same
draws for the same bootstrap seed). :func:`write_seed_aggregate` writes a sweep's method-level
metrics.json from the per-seed files (layout: docs/metrics.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llara.cli_errors import stage_main
from llara.evaluate.compare import check_paired, common_sets, metric_arrays, outcome_matrix
from llara.evaluate.predictions import read_predictions
from llara.io import check_replaceable, write_json
from llara.metrics.bootstrap import ALPHA, N_RESAMPLES, bootstrap_ratio, ratio_stat
from llara.provenance import provenance

AGG_METRICS = {"generate": ("valid_ratio", "hr@1", "strict_hr@1"), "rank": ("valid_ratio", "hr@1", "hr@5", "ndcg@5")}
# metrics.json keys every run of one method must share (what makes them runs of the same method)
SHARED_KEYS = ("method", "dataset", "seqrec", "variant", "base_model", "representation", "metric_rule",
               "candidate_sets", "modes")


def _cell(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Per column: sum(num) / sum(den), 0 where no denominator (as the official code)."""
    s_num, s_den = num.sum(axis=0), den.sum(axis=0)
    return np.divide(s_num, s_den, out=np.zeros_like(s_num), where=s_den > 0)


def aggregate_outcomes(runs: Mapping[int | None, dict], mode: str, split: str = "test", seed: int = 0,
                       n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> dict[str, Any]:
    """The aggregate block of one split and mode from ``{training seed: outcome matrix}`` (see module doc)."""
    if not runs:
        raise ValueError("no runs to aggregate")
    seeds = list(runs)
    mats = [runs[s] for s in seeds]
    for s, m in zip(seeds[1:], mats[1:]):
        check_paired(mats[0], m, split, f"the runs of seeds {seeds[0]} and {s}")
    sets = [int(x) for x in mats[0]["sets"]]
    out: dict[str, Any] = {"n": int(mats[0]["valid"].shape[0]), "seeds": seeds, "sets": sets,
                           "n_seeds": len(seeds), "n_sets": len(sets), "n_candidates": int(mats[0]["n_candidates"]),
                           "mean": {}, "sd": {}, "min": {}, "max": {},
                           "per_seed": [{"seed": s} for s in seeds]}
    for metric in AGG_METRICS[mode]:
        arrs = [metric_arrays(m, metric) for m in mats]
        num = np.concatenate([a[0] for a in arrs], axis=1)
        den = np.concatenate([a[1] for a in arrs], axis=1)
        b = bootstrap_ratio(num, den, n_resamples=n_resamples, seed=seed, alpha=alpha)
        per_seed = [ratio_stat(n, d) for n, d in arrs]
        cells = _cell(num, den)
        out["mean"][metric], out["mean"][f"{metric}_ci"] = b["value"], b["ci"]
        out["sd"][metric] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
        out["min"][metric], out["max"][metric] = float(cells.min()), float(cells.max())
        for entry, v in zip(out["per_seed"], per_seed):
            entry[metric] = v
    return out


def aggregate_tables(tables: Mapping[int | None, pa.Table], splits: Sequence[str], modes: Sequence[str],
                     sets: Sequence[int] | None = None, seed: int = 0, n_resamples: int = N_RESAMPLES,
                     alpha: float = ALPHA) -> dict[str, dict[str, dict]]:
    """``{split: {mode: aggregate block}}`` from ``{training seed: predictions table}``.

    ``sets`` None: the candidate sets every run was evaluated on (per split and mode).
    """
    out: dict[str, dict[str, dict]] = {}
    for split in splits:
        out[split] = {}
        for mode in modes:
            use = sets if sets is not None else common_sets([(t, mode) for t in tables.values()], split)
            if not use:
                raise ValueError(f"split {split!r}, mode {mode!r}: no candidate set evaluated by every run "
                                 f"(seeds {list(tables)})")
            mats = {s: outcome_matrix(t, split, mode, use) for s, t in tables.items()}
            out[split][mode] = aggregate_outcomes(mats, mode, split, seed, n_resamples, alpha)
    return out


def load_metrics(path: str | Path) -> dict:
    """A metrics.json; a missing or broken file raises an error naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"metrics file {path} does not exist (its evaluation rule has not run)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def write_seed_aggregate(runs: Sequence[Mapping[str, Any]], out_path: str | Path, *, seed: int = 0,
                         n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> dict:
    """Write a sweep's method-level metrics.json from its per-seed runs; returns it.

    ``runs``: one mapping per training seed with ``seed``, ``predictions`` and ``metrics`` (the
    per-seed evaluation's files). The runs must be the same method with the same settings (keys
    :data:`SHARED_KEYS`) on the same rows and candidates; otherwise ValueError names the files.
    """
    t0 = time.perf_counter()
    check_replaceable(out_path)  # before any work: never replace what llara did not write
    if not runs:
        raise ValueError("no per-seed runs to aggregate (config seeds is empty?)")
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a training seed is listed twice among the runs: {seeds}")
    metas = [load_metrics(r["metrics"]) for r in runs]
    first = metas[0]
    for r, m in zip(runs, metas):
        for key in SHARED_KEYS:
            if m.get(key) != first.get(key):
                raise ValueError(f"{r['metrics']}: {key} = {m.get(key)!r}, but {runs[0]['metrics']} has "
                                 f"{first.get(key)!r}: not runs of one method with one setting")
        if m.get("train_seed") is not None and m["train_seed"] != r["seed"]:
            raise ValueError(f"{r['metrics']}: trained with seed {m['train_seed']}, listed as seed {r['seed']}")
    splits = list(first["splits"])
    modes = [mode for mode in first.get("modes", []) if all(mode in first["splits"][s] for s in splits)]
    if not modes:
        modes = [k for k in first["splits"][splits[0]] if k in AGG_METRICS]
    tables = {r["seed"]: read_predictions(r["predictions"]) for r in runs}
    agg = aggregate_tables(tables, splits, modes, seed=seed, n_resamples=n_resamples, alpha=alpha)
    inputs: dict[str, str | Path] = {}
    for r in runs:
        inputs[f"seed{r['seed']}/metrics"] = r["metrics"]
        inputs[f"seed{r['seed']}/predictions"] = r["predictions"]
    out = {
        **{k: first[k] for k in SHARED_KEYS if k in first},
        "seeds": seeds,
        "runs": [{"seed": r["seed"], "metrics": str(r["metrics"]), "predictions": str(r["predictions"])} for r in runs],
        "aggregate": agg,
        "provenance": provenance({"seeds": seeds, "bootstrap": {"n_resamples": n_resamples, "alpha": alpha}},
                                 inputs, seed, wall_time_s=time.perf_counter() - t0),
    }
    write_json(out, out_path)
    return out


@stage_main("aggregate")
def main(argv: list[str]) -> None:
    """``python -m llara.evaluate.aggregate OUT.json --run SEED PREDICTIONS METRICS [--run ...]``."""
    import argparse

    from llara.cli_errors import add_debug_argument, input_errors
    from llara.runlog import setup_logging

    p = argparse.ArgumentParser(prog="python -m llara.evaluate.aggregate",
                                description="aggregate one method's per-seed evaluations over seeds x candidate sets")
    p.add_argument("out", type=Path, help="the method-level metrics.json to write")
    p.add_argument("--run", nargs=3, action="append", required=True, metavar=("SEED", "PREDICTIONS", "METRICS"),
                   help="one training seed's predictions.parquet and metrics.json (repeat per seed)")
    p.add_argument("--seed", type=int, default=42, help="bootstrap seed")
    p.add_argument("--n-resamples", type=int, default=N_RESAMPLES)
    p.add_argument("--alpha", type=float, default=ALPHA)
    p.add_argument("--log", type=Path, default=None)
    add_debug_argument(p)
    a = p.parse_args(argv)
    setup_logging(a.log)
    runs = []
    for seed, pred, met in a.run:
        if not seed.isdigit():
            p.error(f"--run expects SEED PREDICTIONS METRICS with a non-negative integer SEED, got {seed!r}")
        runs.append({"seed": int(seed), "predictions": pred, "metrics": met})
    with input_errors():  # its checks of the runs' files raise ValueError naming the file
        write_seed_aggregate(runs, a.out, seed=a.seed, n_resamples=a.n_resamples, alpha=a.alpha)


if __name__ == "__main__":
    main()
