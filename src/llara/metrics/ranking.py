"""Ranking metrics over stored candidate lists: target ranks, HR@k, NDCG@k."""

from __future__ import annotations

import numpy as np


def target_ranks(scores: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of the target among each row's candidates (ties count against the target).

    ``scores`` and ``candidates`` are ``[rows, n_candidates]``; ``targets`` is ``[rows]``.
    Raises ValueError naming the first row whose candidates lack the target or hold it twice.
    """
    scores = np.asarray(scores, dtype=np.float64)
    candidates = np.asarray(candidates)
    hit = candidates == np.asarray(targets)[:, None]
    counts = hit.sum(axis=1)
    bad = np.flatnonzero(counts != 1)
    if bad.size:
        r = int(bad[0])
        raise ValueError(f"row {r}: target {int(targets[r])} occurs {int(counts[r])} times among its candidates, expected exactly once")
    target_score = scores[hit]
    # pessimistic tie-breaking: a tie with a negative ranks the target below it
    return (scores > target_score[:, None]).sum(axis=1) + ((scores == target_score[:, None]) & ~hit).sum(axis=1)


def hit_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-row 1.0/0.0: the target is within the top ``k``."""
    return (np.asarray(ranks) < k).astype(np.float64)


def ndcg_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-row NDCG@k with a single relevant item: 1/log2(rank+2) inside the top k, else 0."""
    ranks = np.asarray(ranks)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def rank_metrics(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """HR@k and NDCG@k (k > 1) averaged over rows."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = float(hit_at_k(ranks, k).mean())
        if k > 1:
            out[f"ndcg@{k}"] = float(ndcg_at_k(ranks, k).mean())
    return out
