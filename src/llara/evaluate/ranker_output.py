"""Any no-LLM ranker's scores on the stored candidate sets -> rank-mode predictions + metrics.json.

Shared by the seqrec backbone as ranker (``seqrec_ranker``) and the reference scorers
(``reference``): given ``scores [rows, K, C]`` for the candidates of every stored set, this builds the
rank-mode rows of ``llara.evaluate.predictions.PREDICTIONS``, the ``rank`` block per split, the one-run
``aggregate`` block and the metrics.json (evaluation layout, docs/metrics.md), and writes both atomically.
Ties count against the target (``llara.metrics.ranking.target_ranks``); the ``predicted`` candidate
breaks ties the same way (a tied negative is named before the target).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llara.evaluate.aggregate import aggregate_tables
from llara.evaluate.blocks import rank_block
from llara.evaluate.predictions import PREDICTIONS
from llara.io import check_replaceable, write_json, write_parquet
from llara.metrics.ranking import target_ranks
from llara.provenance import provenance


@dataclass
class SplitScores:
    """One split's scores: ``scores`` and ``candidates`` ``[rows, K, C]``, ``targets`` and ``user_ids`` ``[rows]``;
    ``source`` (the split's file) names it in errors."""

    scores: np.ndarray
    candidates: np.ndarray
    targets: np.ndarray
    user_ids: np.ndarray
    source: str = ""


def _ranks(split: str, s: SplitScores) -> np.ndarray:
    """``[rows, K]`` 0-based target ranks; a set without exactly one target raises naming the file."""
    k = s.scores.shape[1]
    out = []
    for j in range(k):  # one vectorised call per candidate set
        try:
            out.append(target_ranks(s.scores[:, j], s.candidates[:, j], s.targets))
        except ValueError as e:
            raise ValueError(f"{s.source or split}: split {split!r}, candidate set {j}: {e}") from None
    return np.stack(out, axis=1)


def rank_predictions(split: str, s: SplitScores) -> tuple[pa.Table, np.ndarray]:
    """The split's rank-mode rows of :data:`PREDICTIONS` (one per row and candidate set, set-major) and the
    ``[rows, K]`` target ranks."""
    scores = np.asarray(s.scores, dtype=np.float64)
    cands = np.asarray(s.candidates, dtype=np.int64)
    targets = np.asarray(s.targets, dtype=np.int64)
    if scores.ndim != 3 or scores.shape != cands.shape or targets.shape != scores.shape[:1] \
            or np.shape(s.user_ids) != targets.shape:
        raise ValueError(f"{s.source or split}: expected scores and candidates [rows, K, C] and targets / user ids "
                         f"[rows]; got {scores.shape}, {cands.shape}, {targets.shape}, {np.shape(s.user_ids)}")
    ranks = _ranks(split, SplitScores(scores, cands, targets, s.user_ids, s.source))
    n, k, c = scores.shape
    # the named candidate: the first top-scored one, a tied negative before the target (as the ranks count ties)
    top = scores == scores.max(axis=2, keepdims=True)
    prefer = top & (cands != targets[:, None, None])
    pick = np.where(prefer.any(axis=2), prefer.argmax(axis=2), top.argmax(axis=2))  # [rows, K]
    predicted = np.take_along_axis(cands, pick[:, :, None], axis=2)[:, :, 0]
    correct = ranks == 0
    # set-major order: all rows of set 0, then set 1, ...
    set_major = lambda a: np.swapaxes(a, 0, 1).reshape(n * k, *a.shape[2:])  # noqa: E731
    as_lists = lambda a, typ: pa.FixedSizeListArray.from_arrays(  # noqa: E731
        pa.array(set_major(a).reshape(-1)), c).cast(pa.list_(typ))
    flat_cands, flat_scores = as_lists(cands, pa.int64()), as_lists(scores, pa.float64())
    corr = set_major(correct)
    ones = np.ones(n * k, bool)
    table = pa.table({
        "split": pa.array([split] * (n * k), pa.string()), "mode": pa.array(["rank"] * (n * k), pa.string()),
        "candidate_set": np.repeat(np.arange(k, dtype=np.int32), n), "row": np.tile(np.arange(n, dtype=np.int64), k),
        "user_id": np.tile(np.asarray(s.user_ids, dtype=np.int64), k), "target": np.tile(targets, k),
        "candidates": flat_cands, "output": pa.nulls(n * k, pa.string()), "predicted": set_major(predicted),
        "valid": ones, "correct": corr, "valid_literal": ones, "correct_literal": corr,
        "n_named": pa.nulls(n * k, pa.int32()), "target_rank": set_major(ranks).astype(np.int32),
        "scores": flat_scores,
    }, schema=PREDICTIONS)
    return table, ranks


def write_ranker_outputs(splits: Mapping[str, SplitScores], predictions_path: str | Path,
                         metrics_path: str | Path | None = None, *, seed: int = 0, n_resamples: int = 1000,
                         alpha: float = 0.05, meta: dict[str, Any] | None = None, train_seed: int | None = None,
                         inputs: Mapping[str, str | Path] | None = None, config: dict[str, Any] | None = None,
                         t0: float | None = None, extra: dict[str, Any] | None = None) -> dict:
    """Write the predictions of every split (+ metrics.json when ``metrics_path``); returns the metrics dict.

    ``seed`` seeds the bootstraps; ``train_seed`` (None: an untrained scorer) is recorded with the one-run
    ``aggregate`` block; ``meta`` leads the metrics.json, ``extra`` follows its standard keys; ``inputs``
    and ``config`` go to the provenance block; ``t0`` (``time.perf_counter()``) starts its wall time.
    """
    if not splits:
        raise ValueError("no split to write: the evaluated splits (config evaluate.splits) are empty")
    t0 = time.perf_counter() if t0 is None else t0
    pieces, blocks, ks = [], {}, set()
    for split, s in splits.items():
        table, ranks = rank_predictions(split, s)
        pieces.append(table)
        n, k = ranks.shape
        ks.add(k)
        blocks[split] = {"n": n, "rank": rank_block(ranks, list(range(k)), seed=seed, n_resamples=n_resamples,
                                                    alpha=alpha)}
    if len(ks) != 1:
        raise ValueError(f"the splits hold different numbers of candidate sets {sorted(ks)}: "
                         + ", ".join(f"{s.source or name}" for name, s in splits.items()))
    table = pa.concat_tables(pieces)
    write_parquet(table, predictions_path, PREDICTIONS)
    agg = aggregate_tables({train_seed: table}, list(blocks), ["rank"], seed=seed, n_resamples=n_resamples, alpha=alpha)
    metrics = {**(meta or {}), "candidate_sets": int(ks.pop()), "modes": ["rank"], "splits": blocks,
               "train_seed": train_seed, "seeds": [train_seed], "aggregate": agg, **(extra or {}),
               "provenance": provenance(config or {}, dict(inputs or {}), seed, wall_time_s=time.perf_counter() - t0)}
    if metrics_path is not None:
        write_json(metrics, metrics_path)
    return metrics


def check_outputs(*paths: str | Path | None) -> None:
    """Refuse, before any work, to replace a file llara did not write (``llara.io.check_replaceable``)."""
    for p in paths:
        if p is not None:
            check_replaceable(p)
