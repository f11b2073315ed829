"""Seeded bootstrap intervals: means, ratio metrics over candidate sets (or seeds x sets), paired differences.

Every statistic here is a *ratio of sums averaged over candidate sets*:

    stat = mean over sets s of ( sum_r num[r, s] / sum_r den[r, s] )

which covers strict HR@1 and rank metrics (``den`` = 1: a plain mean), ValidRatio (num = valid,
den = 1) and the paper's HR@1 (num = correct, den = valid). Rows are the resampling unit: a
resample draws rows with replacement and keeps each drawn row's outcomes on *all* sets together,
so the interval accounts for the correlation between sets of the same row. Paired differences
resample the same rows for both methods.

With one set and ``den`` = 1 the resamples are exactly those of
:func:`bootstrap_ci` for the same seed, so both give the same interval.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

N_RESAMPLES = 1000
ALPHA = 0.05


def bootstrap_ci(values: np.ndarray, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-row ``values`` (deterministic for a seed)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _as_2d(a: np.ndarray | list, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected [rows] or [rows, sets], got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name}: bootstrap of an empty sample (0 rows)")
    return a


def _resample_counts(n: int, n_resamples: int, seed: int, chunk: int = 0) -> Iterator[np.ndarray]:
    """Yield ``[b, n]`` arrays: how often each row is drawn in each resample (chunks of resamples).

    The draws are ``default_rng(seed).integers(0, n, size=(n_resamples, n))`` consumed row by row,
    the same stream :func:`bootstrap_ci` uses.
    """
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, min(n_resamples, 4_000_000 // max(n, 1)))
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def ratio_stat(num: np.ndarray, den: np.ndarray) -> float:
    """mean over sets of sum(num)/sum(den); a set with sum(den) == 0 counts 0 (as the official code)."""
    num, den = _as_2d(num, "num"), _as_2d(den, "den")
    s_num, s_den = num.sum(axis=0), den.sum(axis=0)
    return float(np.mean(np.divide(s_num, s_den, out=np.zeros_like(s_num), where=s_den > 0)))


def _resampled_stats(num: np.ndarray, den: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    out = []
    for w in _resample_counts(num.shape[0], n_resamples, seed):
        s_num, s_den = w @ num, w @ den  # [b, sets]
        out.append(np.mean(np.divide(s_num, s_den, out=np.zeros_like(s_num), where=s_den > 0), axis=1))
    return np.concatenate(out)


def bootstrap_ratio(num: np.ndarray, den: np.ndarray | None = None, n_resamples: int = N_RESAMPLES,
                    seed: int = 0, alpha: float = ALPHA) -> dict[str, float | list[float]]:
    """Point value and percentile bootstrap interval of :func:`ratio_stat` (``den`` None: plain mean).

    ``num``/``den`` are ``[rows]`` or ``[rows, sets]``. Returns ``{"value", "ci": [lo, hi]}``.
    """
    num = _as_2d(num, "num")
    den = np.ones_like(num) if den is None else _as_2d(den, "den")
    if den.shape != num.shape:
        raise ValueError(f"num and den differ in shape: {num.shape} vs {den.shape}")
    stats = _resampled_stats(num, den, n_resamples, seed)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return {"value": ratio_stat(num, den), "ci": [float(lo), float(hi)]}


def paired_bootstrap(num_a: np.ndarray, num_b: np.ndarray, den_a: np.ndarray | None = None,
                     den_b: np.ndarray | None = None, n_resamples: int = N_RESAMPLES, seed: int = 0,
                     alpha: float = ALPHA) -> dict[str, float | list[float]]:
    """Difference A - B of :func:`ratio_stat` on the same rows and sets, with a paired bootstrap.

    Row r of A and row r of B must be the same user with the same candidate set(s). Returns
    ``{"a", "b", "diff", "ci": [lo, hi], "p_value"}`` where ``p_value`` is the two-sided bootstrap
    share of resampled differences on the other side of zero (0 when none are).
    """
    num_a, num_b = _as_2d(num_a, "num_a"), _as_2d(num_b, "num_b")
    if num_a.shape != num_b.shape:
        raise ValueError(f"paired samples differ in shape: {num_a.shape} vs {num_b.shape}; pair the same rows and sets")
    den_a = np.ones_like(num_a) if den_a is None else _as_2d(den_a, "den_a")
    den_b = np.ones_like(num_b) if den_b is None else _as_2d(den_b, "den_b")
    da = _resampled_stats(num_a, den_a, n_resamples, seed)
    db = _resampled_stats(num_b, den_b, n_resamples, seed)  # same seed: the same row draws
    d = da - db
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    a, b = ratio_stat(num_a, den_a), ratio_stat(num_b, den_b)
    p = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
    return {"a": a, "b": b, "diff": a - b, "ci": [float(lo), float(hi)], "p_value": p}


def aggregate_sets(values: list[float] | np.ndarray) -> dict[str, float]:
    """Mean, min and max of a metric over candidate sets."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no candidate sets to aggregate")
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
