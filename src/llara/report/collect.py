"""Read every method's results into one normalised summary per (method, dataset).

Sources, in order of preference:

1. ``predictions.parquet`` (evaluation layout): metrics are recomputed on exactly the candidate
   sets requested (the sets every compared method shares), with the seeded row bootstrap.
2. ``metrics.json`` in the evaluation layout (``splits.{split}.{mode}.mean/per_set``).
3. ``metrics.json`` of the seqrec stage (``{split}: {per_set, mean, min, max, hr@1_ci95_set0,
   hr@1_ci95_mean}``), normalised here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llara.evaluate.metrics import rank_block
from llara.evaluate.stats import ALPHA, N_RESAMPLES, aggregate_sets, bootstrap_ratio

KINDS = ("seqrec", "llara", "zeroshot", "ablation")


@dataclass
class Entry:
    """One method on one dataset, as the report rule lists it."""

    dataset: str
    kind: str                       # seqrec | llara | zeroshot | ablation
    label: str                      # the table's row label
    metrics: str                    # metrics.json path
    predictions: str | None = None  # predictions.parquet path (per-row outcomes; enables pairing)
    seqrec: str | None = None
    variant: str | None = None
    train_log: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"report entry {self.label!r}: unknown kind {self.kind!r}; expected one of {KINDS}")

    @property
    def mode_default(self) -> str:
        return "rank" if self.kind == "seqrec" else "generate"


@dataclass
class Summary:
    """Normalised numbers of one entry on one split (None where the source has no such number)."""

    entry: Entry
    mode: str
    n: int | None = None
    sets: list[int] = field(default_factory=list)
    valid_ratio: float | None = None
    hr1: float | None = None
    hr1_ci: list[float] | None = None
    strict_hr1: float | None = None
    strict_hr1_ci: list[float] | None = None
    hr1_min: float | None = None
    hr1_max: float | None = None
    rank: dict[str, Any] = field(default_factory=dict)  # rank-mode hr@1, hr@5, ndcg@5 (means) when available
    source: str = ""


def load_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"metrics file {path} does not exist (its evaluation rule has not run)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def evaluated_sets(entry: Entry, split: str, mode: str | None = None) -> list[int]:
    """The candidate-set ids an entry was evaluated on for ``split``."""
    m = load_json(entry.metrics)
    mode = mode or entry.mode_default
    if "splits" in m:
        blk = m["splits"].get(split, {}).get(mode)
        if blk is None:
            raise ValueError(f"{entry.metrics}: no {split!r}/{mode!r} results")
        return list(blk.get("sets", range(blk.get("k", 1))))
    blk = m.get(split)
    if blk is None:
        raise ValueError(f"{entry.metrics}: no {split!r} results")
    return list(range(int(blk.get("n_candidate_sets", len(blk.get("per_set", [0]))))))


def _from_predictions(entry: Entry, split: str, mode: str, sets: list[int], seed: int, n_resamples: int,
                      alpha: float) -> Summary:
    t = pq.read_table(entry.predictions)
    t = t.filter(pc.and_(pc.equal(t["split"], split), pc.equal(t["mode"], mode)))
    if t.num_rows == 0:
        raise ValueError(f"{entry.predictions}: no predictions for split {split!r}, mode {mode!r}")
    have = set(t.column("candidate_set").to_pylist())
    missing = [s for s in sets if s not in have]
    if missing:
        raise ValueError(f"{entry.predictions}: candidate set(s) {missing} were not evaluated (have {sorted(have)})")
    cols = {"valid": [], "correct": [], "rank": []}
    for s in sets:
        ts = t.filter(pc.equal(t["candidate_set"], s)).sort_by("row")
        cols["valid"].append(ts.column("valid").to_numpy(zero_copy_only=False))
        cols["correct"].append(ts.column("correct").to_numpy(zero_copy_only=False))
        if mode == "rank":
            cols["rank"].append(ts.column("target_rank").to_numpy(zero_copy_only=False))
    valid = np.stack(cols["valid"], axis=1).astype(float)
    correct = np.stack(cols["correct"], axis=1).astype(float)
    kw = dict(n_resamples=n_resamples, seed=seed, alpha=alpha)
    hr = bootstrap_ratio(correct, valid, **kw)
    strict = bootstrap_ratio(correct, None, **kw)
    per_set = [float(correct[:, j].sum() / valid[:, j].sum()) if valid[:, j].sum() else 0.0 for j in range(len(sets))]
    agg = aggregate_sets(per_set)
    out = Summary(entry, mode, n=int(valid.shape[0]), sets=list(sets), valid_ratio=float(valid.mean()),
                  hr1=hr["value"], hr1_ci=hr["ci"], strict_hr1=strict["value"], strict_hr1_ci=strict["ci"],
                  hr1_min=agg["min"], hr1_max=agg["max"], source=str(entry.predictions))
    if mode == "rank":
        ranks = np.stack(cols["rank"], axis=1)
    else:  # the same model's rank-mode rows, when it was also run in rank mode on these sets
        tr = pq.read_table(entry.predictions)
        tr = tr.filter(pc.and_(pc.equal(tr["split"], split), pc.equal(tr["mode"], "rank")))
        got = [tr.filter(pc.equal(tr["candidate_set"], s)).sort_by("row") for s in sets]
        ok = all(g.num_rows == valid.shape[0] for g in got)
        ranks = np.stack([g.column("target_rank").to_numpy(zero_copy_only=False) for g in got], axis=1) if ok else None
    if ranks is not None:
        blk = rank_block(ranks, sets, **kw)
        out.rank = {k: blk["mean"][k] for k in ("hr@1", "hr@5", "ndcg@5")}
    return out


def _from_eval_metrics(entry: Entry, m: dict, split: str, mode: str) -> Summary:
    blk = m["splits"].get(split, {}).get(mode)
    if blk is None:
        raise ValueError(f"{entry.metrics}: no {split!r}/{mode!r} results (modes {list(m['splits'].get(split, {}))})")
    mean = blk["mean"]
    out = Summary(entry, mode, n=blk.get("n"), sets=list(blk.get("sets", [])), valid_ratio=mean.get("valid_ratio"),
                  hr1=mean.get("hr@1"), hr1_ci=mean.get("hr@1_ci"), strict_hr1=mean.get("strict_hr@1"),
                  strict_hr1_ci=mean.get("strict_hr@1_ci"), hr1_min=blk.get("min", {}).get("hr@1"),
                  hr1_max=blk.get("max", {}).get("hr@1"), source=str(entry.metrics))
    rank = m["splits"][split].get("rank")
    if rank is not None:
        out.rank = {k: rank["mean"].get(k) for k in ("hr@1", "hr@5", "ndcg@5")}
    return out


def _from_seqrec_metrics(entry: Entry, m: dict, split: str, sets: list[int] | None) -> Summary:
    blk = m.get(split)
    if not isinstance(blk, dict) or "per_set" not in blk:
        raise ValueError(f"{entry.metrics}: expected a {split!r} block with 'per_set' (seqrec layout) or a "
                         "'splits' block (evaluation layout)")
    per_set = blk["per_set"]
    k_all = len(per_set)
    sets = list(range(k_all)) if sets is None else [s for s in sets if s < k_all]
    if not sets:
        raise ValueError(f"{entry.metrics}: none of the requested candidate sets were evaluated ({k_all} stored)")
    hr = [per_set[s]["hr@1"] for s in sets]
    agg = aggregate_sets(hr)
    ci = None
    if sets == [0]:
        ci = blk.get("hr@1_ci95_set0")
    elif len(sets) == k_all:
        ci = blk.get("hr@1_ci95_mean")
    mean = lambda key: float(np.mean([per_set[s][key] for s in sets])) if key in per_set[0] else None  # noqa: E731
    return Summary(entry, "rank", n=blk.get("n"), sets=sets, valid_ratio=float(blk.get("valid_ratio", 1.0)),
                   hr1=agg["mean"], hr1_ci=ci, strict_hr1=agg["mean"], strict_hr1_ci=ci, hr1_min=agg["min"],
                   hr1_max=agg["max"], rank={k: mean(k) for k in ("hr@1", "hr@5", "ndcg@5")},
                   source=str(entry.metrics))


def summarize(entry: Entry, split: str = "test", mode: str | None = None, sets: list[int] | None = None,
              seed: int = 0, n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> Summary:
    """The entry's numbers on ``split`` in ``mode`` (default: rank for seqrec, generate otherwise).

    With ``sets`` and a predictions file, metrics are recomputed on exactly those candidate sets.
    """
    mode = mode or entry.mode_default
    if entry.predictions and Path(entry.predictions).exists():
        if sets is None:
            sets = evaluated_sets(entry, split, mode) if Path(entry.metrics).exists() else None
        if sets is not None:
            return _from_predictions(entry, split, mode, sets, seed, n_resamples, alpha)
    m = load_json(entry.metrics)
    if "splits" in m:
        s = _from_eval_metrics(entry, m, split, mode)
        if sets is not None and s.sets and s.sets != list(sets):
            s.source += f" (sets {s.sets}; pairing sets {list(sets)} needs predictions)"
        return s
    return _from_seqrec_metrics(entry, m, split, sets)
