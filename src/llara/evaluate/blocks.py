"""The metrics.json blocks: per split and mode, per candidate set and averaged over sets.

Layout of one mode block (``generate`` or ``rank``; see docs/metrics.md for the whole file)::

    {"n": rows, "k": sets, "sets": [0, 1, ...],
     "per_set": [{"set": 0, "n": .., "valid_ratio": .., "hr@1": .., "hr@1_ci": [lo, hi], "strict_hr@1": .., ...}, ...],
     "mean": {metric: value, metric + "_ci": [lo, hi], ...},   # mean over sets, row-bootstrap CI
     "min": {metric: value, ...}, "max": {metric: value, ...}}

``rank_block`` is meant for every ranker on the stored candidates (the seqrec backbones too), so
that all metrics.json files share one layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llara.metrics.bootstrap import ALPHA, N_RESAMPLES, aggregate_sets, bootstrap_ratio
from llara.metrics.ranking import hit_at_k, ndcg_at_k

GENERATE_METRICS = ("valid_ratio", "hr@1", "strict_hr@1", "valid_ratio_literal", "hr@1_literal")
RANK_METRICS = ("valid_ratio", "hr@1", "strict_hr@1", "hr@5", "ndcg@5")


def _check(arrs: dict[str, np.ndarray], sets: Sequence[int]) -> tuple[int, int]:
    shapes = {k: np.shape(v) for k, v in arrs.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(s != first for s in shapes.values()):
        raise ValueError(f"expected equal [rows, sets] arrays, got shapes {shapes}")
    if first[0] == 0:
        raise ValueError("no rows to evaluate: the split is empty")
    if first[1] != len(sets):
        raise ValueError(f"{first[1]} columns of outcomes but {len(sets)} candidate-set ids {list(sets)}")
    return first


def _specs_generate(valid, correct, valid_lit, correct_lit):
    ones = np.ones_like(valid)
    return {
        "valid_ratio": (valid, ones),
        "hr@1": (correct, valid),             # the paper's HR@1 = correct / valid
        "strict_hr@1": (correct, ones),       # correct / rows
        "valid_ratio_literal": (valid_lit, ones),
        "hr@1_literal": (correct_lit, valid_lit),
    }


def _block(specs: dict[str, tuple[np.ndarray, np.ndarray]], sets: Sequence[int], ci_metrics: Sequence[str],
           seed: int, n_resamples: int, alpha: float, extra_per_set: dict[str, np.ndarray] | None = None) -> dict:
    n, k = next(iter(specs.values()))[0].shape
    per_set = []
    for j, s in enumerate(sets):
        entry: dict = {"set": int(s), "n": int(n)}
        for name, (num, den) in specs.items():
            if name in ci_metrics:
                b = bootstrap_ratio(num[:, j], den[:, j], n_resamples=n_resamples, seed=seed, alpha=alpha)
                entry[name], entry[f"{name}_ci"] = b["value"], b["ci"]
            else:
                d = den[:, j].sum()
                entry[name] = float(num[:, j].sum() / d) if d > 0 else 0.0
        for name, arr in (extra_per_set or {}).items():
            entry[name] = int(arr[:, j].sum())
        per_set.append(entry)
    mean: dict = {}
    for name, (num, den) in specs.items():
        if name in ci_metrics:
            b = bootstrap_ratio(num, den, n_resamples=n_resamples, seed=seed, alpha=alpha)
            mean[name], mean[f"{name}_ci"] = b["value"], b["ci"]
        else:
            mean[name] = aggregate_sets([e[name] for e in per_set])["mean"]
    agg = {name: aggregate_sets([e[name] for e in per_set]) for name in specs}
    return {
        "n": int(n), "k": int(k), "sets": [int(s) for s in sets], "per_set": per_set, "mean": mean,
        "min": {name: a["min"] for name, a in agg.items()}, "max": {name: a["max"] for name, a in agg.items()},
    }


def generate_block(valid: np.ndarray, correct: np.ndarray, sets: Sequence[int], valid_literal: np.ndarray | None = None,
                   correct_literal: np.ndarray | None = None, n_named: np.ndarray | None = None, seed: int = 0,
                   n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> dict:
    """Generate-mode block from ``[rows, sets]`` boolean outcomes of the validity rule.

    Per set: ``n``, ``n_valid``, ``n_correct``, ``n_multiple`` (outputs naming several candidates),
    ``valid_ratio`` (+CI), ``hr@1`` = correct/valid (+CI), ``strict_hr@1`` = correct/rows (+CI), and the
    authors' literal rule as ``valid_ratio_literal`` / ``hr@1_literal``. ``mean`` averages over sets.
    """
    valid = np.asarray(valid, bool)
    correct = np.asarray(correct, bool)
    valid_literal = valid if valid_literal is None else np.asarray(valid_literal, bool)
    correct_literal = correct if correct_literal is None else np.asarray(correct_literal, bool)
    _check({"valid": valid, "correct": correct, "valid_literal": valid_literal, "correct_literal": correct_literal}, sets)
    if np.any(correct & ~valid):
        raise ValueError("an output counted correct but not valid: correct must imply valid")
    f = lambda a: a.astype(np.float64)  # noqa: E731
    specs = _specs_generate(f(valid), f(correct), f(valid_literal), f(correct_literal))
    extra = {"n_valid": valid, "n_correct": correct}
    if n_named is not None:
        extra["n_multiple"] = np.asarray(n_named) > 1
    return _block(specs, sets, ("valid_ratio", "hr@1", "strict_hr@1"), seed, n_resamples, alpha, extra)


def rank_block(ranks: np.ndarray, sets: Sequence[int], seed: int = 0, n_resamples: int = N_RESAMPLES,
               alpha: float = ALPHA, ks: tuple[int, ...] = (1, 5)) -> dict:
    """Rank-mode block from ``[rows, sets]`` 0-based target ranks (ValidRatio 1 by construction).

    Per set and averaged: ``valid_ratio`` (1.0), ``hr@1`` (= ``strict_hr@1``), ``hr@k`` and ``ndcg@k``
    for k > 1, each with a row-bootstrap CI.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    _check({"ranks": ranks}, sets)
    ones = np.ones(ranks.shape, np.float64)
    specs = {"valid_ratio": (ones, ones)}
    for k in ks:
        specs[f"hr@{k}"] = (hit_at_k(ranks, k), ones)
        if k == 1:
            specs["strict_hr@1"] = specs["hr@1"]
        else:
            specs[f"ndcg@{k}"] = (ndcg_at_k(ranks, k), ones)
    ci = [m for m in specs if m != "valid_ratio"]
    return _block(specs, sets, ci, seed, n_resamples, alpha)
