"""Paired comparison of two methods on the same rows and the same candidate sets.

Both methods' ``predictions.parquet`` (schema ``llara.evaluate.run.PREDICTIONS``) are reduced to
``[rows, sets]`` outcome matrices; rows are matched by (row, user_id, target) and every candidate
list must be identical, otherwise the comparison is refused (it would not be paired).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llara.evaluate.stats import ALPHA, N_RESAMPLES, paired_bootstrap

PAIRED_METRICS = ("hr@1", "strict_hr@1", "valid_ratio")


def outcome_matrix(pred: pa.Table, split: str, mode: str, sets: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """``valid``/``correct`` ``[rows, sets]`` plus the keys (``row``, ``user_id``, ``target``, ``candidates``).

    ``sets`` None: every candidate set present for that split and mode. Raises ValueError when a
    set is missing or the sets do not cover the same rows.
    """
    t = pred.filter(pc.and_(pc.equal(pred["split"], split), pc.equal(pred["mode"], mode)))
    if t.num_rows == 0:
        raise ValueError(f"no predictions for split {split!r} and mode {mode!r}")
    present = sorted(set(t.column("candidate_set").to_pylist()))
    sets = present if sets is None else list(sets)
    missing = [s for s in sets if s not in present]
    if missing:
        raise ValueError(f"split {split!r}, mode {mode!r}: candidate set(s) {missing} not evaluated (have {present})")
    out: dict[str, list] = {"valid": [], "correct": [], "candidates": []}
    keys = None
    for s in sets:
        ts = t.filter(pc.equal(t["candidate_set"], s)).sort_by("row")
        k = (ts.column("row").to_numpy(), ts.column("user_id").to_numpy(), ts.column("target").to_numpy())
        if keys is None:
            keys = k
        elif not all(np.array_equal(a, b) for a, b in zip(keys, k)):
            raise ValueError(f"split {split!r}, mode {mode!r}: candidate set {s} covers other rows than set {sets[0]}")
        out["valid"].append(ts.column("valid").to_numpy(zero_copy_only=False))
        out["correct"].append(ts.column("correct").to_numpy(zero_copy_only=False))
        out["candidates"].append(ts.column("candidates").to_pylist())
    return {"row": keys[0], "user_id": keys[1], "target": keys[2], "sets": np.asarray(sets),
            "valid": np.stack(out["valid"], axis=1), "correct": np.stack(out["correct"], axis=1),
            "candidates": out["candidates"]}


def _num_den(m: dict[str, np.ndarray], metric: str) -> tuple[np.ndarray, np.ndarray]:
    v, c = m["valid"].astype(np.float64), m["correct"].astype(np.float64)
    if metric == "hr@1":
        return c, v
    if metric == "strict_hr@1":
        return c, np.ones_like(c)
    if metric == "valid_ratio":
        return v, np.ones_like(v)
    raise ValueError(f"unknown paired metric {metric!r}; expected one of {PAIRED_METRICS}")


def paired_difference(pred_a: pa.Table, pred_b: pa.Table, split: str = "test", mode_a: str = "generate",
                      mode_b: str = "generate", metric: str = "hr@1", sets: Sequence[int] | None = None,
                      seed: int = 0, n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> dict:
    """A minus B on ``metric`` over the same rows and candidate sets, with a paired bootstrap interval.

    ``sets`` None: the candidate sets both methods were evaluated on. Returns the
    :func:`~llara.evaluate.stats.paired_bootstrap` dict plus ``metric``, ``n`` and ``sets``.
    """
    if sets is None:
        def have(p, mode):
            t = p.filter(pc.and_(pc.equal(p["split"], split), pc.equal(p["mode"], mode)))
            return set(t.column("candidate_set").to_pylist())
        sets = sorted(have(pred_a, mode_a) & have(pred_b, mode_b))
        if not sets:
            raise ValueError(f"the two methods share no evaluated candidate set on split {split!r}")
    a = outcome_matrix(pred_a, split, mode_a, sets)
    b = outcome_matrix(pred_b, split, mode_b, sets)
    for key in ("row", "user_id", "target"):
        if not np.array_equal(a[key], b[key]):
            raise ValueError(f"not paired: the two prediction files differ in {key!r} on split {split!r}")
    for j, s in enumerate(sets):
        if a["candidates"][j] != b["candidates"][j]:
            raise ValueError(f"not paired: candidate set {s} of split {split!r} differs between the two methods")
    na, da = _num_den(a, metric)
    nb, db = _num_den(b, metric)
    res = paired_bootstrap(na, nb, da, db, n_resamples=n_resamples, seed=seed, alpha=alpha)
    return {"metric": metric, "split": split, "n": int(na.shape[0]), "sets": [int(s) for s in sets], **res}
