"""Per-row outcomes of a method, and paired comparisons on the same rows, candidate sets and seeds.

A method's ``predictions.parquet`` (schema ``llara.evaluate.predictions.PREDICTIONS``) is reduced to
``[rows, sets]`` outcome matrices; rows are matched by (row, user_id, target) and every candidate
list must be identical, otherwise a comparison is refused (it would not be paired). A method
trained with several seeds has one predictions file per seed (a *run*); runs are paired seed by
seed (an untrained method such as the zero-shot LLM has one run, paired with every seed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llara.cli_errors import stage_main
from llara.evaluate.predictions import read_predictions
from llara.metrics.bootstrap import ALPHA, N_RESAMPLES, paired_bootstrap, ratio_stat
from llara.metrics.ranking import hit_at_k, ndcg_at_k

PAIRED_METRICS = ("hr@1", "strict_hr@1", "valid_ratio")
RANK_ONLY = ("hr@5", "ndcg@5")
KEYS = ("row", "user_id", "target")


def _filter(pred: pa.Table, split: str, mode: str) -> pa.Table:
    return pred.filter(pc.and_(pc.equal(pred["split"], split), pc.equal(pred["mode"], mode)))


def evaluated_sets(pred: pa.Table, split: str, mode: str) -> list[int]:
    """The candidate-set ids present in ``pred`` for ``split`` and ``mode`` (empty when none)."""
    return sorted(set(_filter(pred, split, mode).column("candidate_set").to_pylist()))


def common_sets(tables: Iterable[tuple[pa.Table, str]], split: str) -> list[int]:
    """The candidate sets every ``(predictions table, mode)`` was evaluated on for ``split`` (sorted)."""
    common = None
    for t, mode in tables:
        have = set(evaluated_sets(t, split, mode))
        common = have if common is None else common & have
    return sorted(common or ())


def outcome_matrix(pred: pa.Table, split: str, mode: str, sets: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """``valid``/``correct`` (and in rank mode ``target_rank``) ``[rows, sets]`` plus the keys
    (``row``, ``user_id``, ``target``, ``candidates`` per set) and ``n_candidates``.

    ``sets`` None: every candidate set present for that split and mode. Raises ValueError when a
    set is missing or the sets do not cover the same rows.
    """
    t = _filter(pred, split, mode)
    if t.num_rows == 0:
        raise ValueError(f"no predictions for split {split!r} and mode {mode!r}")
    present = sorted(set(t.column("candidate_set").to_pylist()))
    sets = present if sets is None else list(sets)
    missing = [s for s in sets if s not in present]
    if missing:
        raise ValueError(f"split {split!r}, mode {mode!r}: candidate set(s) {missing} not evaluated (have {present})")
    out: dict[str, list] = {"valid": [], "correct": [], "target_rank": [], "candidates": []}
    keys = None
    for s in sets:
        ts = t.filter(pc.equal(t["candidate_set"], s)).sort_by("row")
        k = tuple(ts.column(c).to_numpy() for c in KEYS)
        if keys is None:
            keys = k
        elif not all(np.array_equal(a, b) for a, b in zip(keys, k)):
            raise ValueError(f"split {split!r}, mode {mode!r}: candidate set {s} covers other rows than set {sets[0]}")
        out["valid"].append(ts.column("valid").to_numpy(zero_copy_only=False))
        out["correct"].append(ts.column("correct").to_numpy(zero_copy_only=False))
        if mode == "rank":
            out["target_rank"].append(ts.column("target_rank").to_numpy(zero_copy_only=False))
        out["candidates"].append(ts.column("candidates").to_pylist())
    m = {"row": keys[0], "user_id": keys[1], "target": keys[2], "sets": np.asarray(sets),
         "valid": np.stack(out["valid"], axis=1), "correct": np.stack(out["correct"], axis=1),
         "candidates": out["candidates"], "n_candidates": len(out["candidates"][0][0])}
    if mode == "rank":
        m["target_rank"] = np.stack(out["target_rank"], axis=1)
    return m


def metric_arrays(m: dict[str, np.ndarray], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(num, den)`` ``[rows, sets]`` of a metric, as ratio of sums (``llara.metrics.bootstrap``).

    ``hr@1`` = correct / valid (the paper's), ``strict_hr@1`` = correct / rows, ``valid_ratio``;
    ``hr@5`` / ``ndcg@5`` need rank-mode outcomes.
    """
    v, c = m["valid"].astype(np.float64), m["correct"].astype(np.float64)
    ones = np.ones_like(c)
    if metric == "hr@1":
        return c, v
    if metric == "strict_hr@1":
        return c, ones
    if metric == "valid_ratio":
        return v, ones
    if metric in RANK_ONLY:
        if "target_rank" not in m:
            raise ValueError(f"metric {metric!r} needs rank-mode outcomes")
        k = int(metric.split("@")[1])
        f = hit_at_k if metric.startswith("hr") else ndcg_at_k
        return f(m["target_rank"], k), ones
    raise ValueError(f"unknown metric {metric!r}; expected one of {PAIRED_METRICS + RANK_ONLY}")


def check_paired(a: dict, b: dict, split: str, what: str = "the two methods") -> None:
    """Raise ValueError unless two outcome matrices hold the same rows and the same candidate lists."""
    for key in KEYS:
        if not np.array_equal(a[key], b[key]):
            raise ValueError(f"not paired: {what} differ in {key!r} on split {split!r}")
    for j, s in enumerate(a["sets"]):
        if a["candidates"][j] != b["candidates"][j]:
            raise ValueError(f"not paired: candidate set {int(s)} of split {split!r} differs between {what}")


def pair_seeds(seeds_a: Sequence, seeds_b: Sequence) -> list[tuple]:
    """Which run of A meets which run of B: the same seed, or a one-run (untrained) side with every seed."""
    a, b = list(seeds_a), list(seeds_b)
    if len(b) == 1 and b[0] is None:
        return [(s, None) for s in a]
    if len(a) == 1 and a[0] is None:
        return [(None, s) for s in b]
    common = [s for s in a if s in b]
    if not common:
        raise ValueError(f"not paired: no training seed in common (A {a}, B {b})")
    return [(s, s) for s in common]


def paired_runs(runs_a: Mapping, runs_b: Mapping, split: str = "test", mode_a: str = "generate",
                mode_b: str = "generate", metric: str = "hr@1", sets: Sequence[int] | None = None,
                seed: int = 0, n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> dict:
    """A minus B on ``metric`` over the same rows, candidate sets and training seeds (paired bootstrap).

    ``runs_a`` / ``runs_b``: training seed (None: untrained) -> predictions table. Each seed's
    outcomes on each set form one column; the statistic is the mean over seeds x sets and the row
    bootstrap resamples whole rows (all seeds and sets together) for both methods. ``sets`` None:
    the sets every run of both methods was evaluated on. Returns the
    :func:`~llara.metrics.bootstrap.paired_bootstrap` dict plus ``metric``, ``split``, ``n``,
    ``sets``, ``seeds`` (the trained seeds behind the pairs) and ``per_seed`` (A - B per pair).
    """
    pairs = pair_seeds(list(runs_a), list(runs_b))
    if sets is None:
        sets = common_sets([(t, mode_a) for t in runs_a.values()] + [(t, mode_b) for t in runs_b.values()], split)
        if not sets:
            raise ValueError(f"the two methods share no evaluated candidate set on split {split!r}")
    cols: dict[str, list] = {"na": [], "da": [], "nb": [], "db": []}
    ref = None
    per_seed = []
    for sa, sb in pairs:
        a = outcome_matrix(runs_a[sa], split, mode_a, sets)
        b = outcome_matrix(runs_b[sb], split, mode_b, sets)
        check_paired(a, b, split)
        if ref is None:
            ref = a
        else:
            check_paired(ref, a, split, "the runs of different seeds")
        na, da = metric_arrays(a, metric)
        nb, db = metric_arrays(b, metric)
        cols["na"].append(na), cols["da"].append(da), cols["nb"].append(nb), cols["db"].append(db)
        per_seed.append({"seed": sa if sa is not None else sb, "diff": ratio_stat(na, da) - ratio_stat(nb, db)})
    cat = {k: np.concatenate(v, axis=1) for k, v in cols.items()}
    res = paired_bootstrap(cat["na"], cat["nb"], cat["da"], cat["db"], n_resamples=n_resamples, seed=seed, alpha=alpha)
    seeds = [p["seed"] for p in per_seed if p["seed"] is not None]
    return {"metric": metric, "split": split, "n": int(cat["na"].shape[0]), "sets": [int(s) for s in sets],
            "seeds": seeds, "per_seed": per_seed, **res}


def paired_difference(pred_a: pa.Table, pred_b: pa.Table, split: str = "test", mode_a: str = "generate",
                      mode_b: str = "generate", metric: str = "hr@1", sets: Sequence[int] | None = None,
                      seed: int = 0, n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> dict:
    """A minus B on ``metric`` for one run each (see :func:`paired_runs`)."""
    return paired_runs({None: pred_a}, {None: pred_b}, split, mode_a, mode_b, metric, sets, seed, n_resamples, alpha)


def compare_files(path_a: str | Path, path_b: str | Path, split: str = "test", mode_a: str = "generate",
                  mode_b: str | None = None, metrics: Sequence[str] = ("hr@1",), seed: int = 0,
                  n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> list[dict]:
    """A minus B, one :func:`paired_difference` per metric, for two ``predictions.parquet`` files (any two
    evaluations of the same rows and stored candidate sets: two tune seeds, two configs, LLaRA and its backbone).
    Each result is :func:`paired_difference`'s (``a`` and ``b`` are the two methods' values, ``diff`` A - B, ``ci``)
    plus the files and modes. A file that is missing, not Parquet or not a predictions table raises an error
    naming it."""
    tables = []
    for p in (path_a, path_b):
        try:
            tables.append(read_predictions(p))
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: no such predictions file") from None
        except pa.ArrowException as e:
            raise ValueError(f"{p}: not a predictions Parquet file ({e})") from None
    mode_b = mode_a if mode_b is None else mode_b
    return [{"file_a": str(path_a), "file_b": str(path_b), "mode_a": mode_a, "mode_b": mode_b,
             **paired_difference(tables[0], tables[1], split, mode_a, mode_b, m, seed=seed,
                                 n_resamples=n_resamples, alpha=alpha)}
            for m in metrics]


@stage_main("compare")
def main(argv: list[str]) -> None:
    """``llara compare A/predictions.parquet B/predictions.parquet``: A - B with a paired row-bootstrap CI."""
    import argparse

    from llara.cli_errors import add_debug_argument, input_errors
    from llara.io import write_json
    from llara.runlog import setup_logging

    p = argparse.ArgumentParser(prog="llara compare", description="A minus B on the same rows and stored candidate "
                                "sets, with a paired row-bootstrap confidence interval (mean over the common sets)")
    p.add_argument("a", type=Path, help="method A's predictions.parquet (written by llara evaluate)")
    p.add_argument("b", type=Path, help="method B's predictions.parquet")
    p.add_argument("--split", default="test")
    p.add_argument("--mode-a", choices=["generate", "rank"], default="generate")
    p.add_argument("--mode-b", choices=["generate", "rank"], default=None, help="default: --mode-a")
    p.add_argument("--metric", nargs="+", choices=PAIRED_METRICS + RANK_ONLY, default=["hr@1"],
                   help="hr@1: correct / valid answers (the paper's); strict_hr@1: correct / all rows; "
                        "hr@5 and ndcg@5 need rank mode on both sides")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--n-resamples", type=int, default=N_RESAMPLES)
    p.add_argument("--alpha", type=float, default=ALPHA)
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--log", type=Path, default=None, help="also log to this file (`llara --log F compare` passes it)")
    add_debug_argument(p)
    a = p.parse_args(argv)
    setup_logging(a.log)
    with input_errors():  # its checks of the two files raise ValueError naming the file
        rows = compare_files(a.a, a.b, a.split, a.mode_a, a.mode_b, a.metric, a.seed, a.n_resamples, a.alpha)
    if a.out is not None:
        write_json(rows, a.out)
    level = round(100 * (1 - a.alpha))
    print(f"A: {a.a} ({a.mode_a})\nB: {a.b} ({a.mode_b or a.mode_a})")
    print(f"| metric | rows x sets | A | B | A - B [{level}% CI] | p |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['metric']} | {r['n']} x {len(r['sets'])} | {r['a']:.3f} | {r['b']:.3f} "
              f"| {r['diff']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | "
              + (f"{r['p_value']:.3g} |" if r["p_value"] > 0 else f"< {1 / a.n_resamples:.1g} |"))


if __name__ == "__main__":
    main()
