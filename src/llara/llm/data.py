"""Inputs of the LLM stage: item titles, the frozen seqrec item-embedding table, training rows, and the
seeded training schedule (sample order, candidate draws, template draws, curriculum draws).

Everything a training step uses is a pure function of (seed, step), so a resumed run and an
uninterrupted run see identical batches, on any number of processes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llara.data.schema import ITEMS, TRAIN, read_table
from llara.llm.prompts import clean_title

CURRICULA = ("linear", "epoch_reset", "none", "hybrid_only")


def load_titles(items_path: str | os.PathLike) -> list[str]:
    """Titles indexed by item id; item ids must be 0..n-1."""
    t = read_table(items_path, ITEMS)
    ids = t.column("item_id").to_numpy()
    order = np.argsort(ids)
    if not np.array_equal(ids[order], np.arange(len(ids))):
        raise ValueError(f"{items_path}: item_id must be 0..{len(ids) - 1} (contiguous); found ids "
                         f"{ids.min()}..{ids.max()} over {len(ids)} rows")
    titles = t.column("title").to_pylist()
    return [clean_title(titles[i]) for i in order]


def load_item_embeddings(path: str | os.PathLike, n_items: int) -> np.ndarray:
    """The seqrec embedding table as float32 [n_items, d], checked against items.parquet's row count."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"item embeddings {path} do not exist (expected the seqrec stage's "
                                f"item_embeddings.parquet)")
    t = pq.read_table(path)
    for col in ("item_id", "embedding"):
        if col not in t.schema.names:
            raise ValueError(f"{path}: missing column {col!r}; expected columns item_id (int64), "
                             f"embedding (fixed_size_list<float32>[d])")
    typ = t.schema.field("embedding").type
    if not (pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ)):
        raise ValueError(f"{path}: column 'embedding' has type {typ}, expected fixed_size_list<float32>[d]")
    if t.num_rows != n_items:
        raise ValueError(f"{path}: {t.num_rows} embedding rows but items.parquet has {n_items} items "
                         f"(expected one row per item, no padding row)")
    ids = t.column("item_id").to_numpy()
    if not np.array_equal(np.sort(ids), np.arange(n_items)):
        raise ValueError(f"{path}: item_id must cover 0..{n_items - 1} exactly once")
    col = t.column("embedding").combine_chunks()
    dims = set(np.diff(col.offsets.to_numpy()).tolist()) if not pa.types.is_fixed_size_list(typ) else {typ.list_size}
    if len(dims) != 1:
        raise ValueError(f"{path}: embeddings have differing dimensions {sorted(dims)[:5]}")
    d = dims.pop()
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    emb = np.empty((n_items, d), dtype=np.float32)
    emb[ids] = flat.reshape(n_items, d)
    if not np.isfinite(emb).all():
        raise ValueError(f"{path}: embeddings contain NaN or inf")
    return emb


def write_random_embeddings(path: str | os.PathLike, n_items: int, dim: int = 64, seed: int = 0) -> None:
    """A random table in the seqrec schema (for tests and development)."""
    from llara.io import write_parquet

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n_items, dim)).astype(np.float32)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim)
    write_parquet(pa.table({"item_id": pa.array(np.arange(n_items), pa.int64()), "embedding": arr}), path)


@dataclass
class TrainRows:
    histories: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.targets)


def load_train_rows(path: str | os.PathLike, n_items: int, max_samples: int | None = None, seed: int = 0) -> TrainRows:
    """Training rows (optionally a seeded subsample of ``max_samples``), item ids checked."""
    t = read_table(path, TRAIN)
    hist = t.column("history").to_pylist()
    tgt = t.column("target").to_pylist()
    if max_samples is not None and max_samples < len(tgt):
        keep = np.sort(np.random.default_rng([seed, 7]).choice(len(tgt), max_samples, replace=False))
        hist = [hist[i] for i in keep]
        tgt = [tgt[i] for i in keep]
    hi = max(max(tgt), max((max(h) for h in hist if h), default=0))
    lo = min(min(tgt), min((min(h) for h in hist if h), default=0))
    if hi >= n_items or lo < 0:
        raise ValueError(f"{path}: item ids span {lo}..{hi}, outside items.parquet's 0..{n_items - 1}")
    return TrainRows(hist, tgt)


def sample_candidates(rng: np.random.Generator, history: list[int], target: int, n_items: int, n: int) -> list[int]:
    """``n`` candidates: the target once, ``n-1`` distinct negatives not in the history, shuffled."""
    excluded = set(history) | {target}
    if n_items - len(excluded) < n - 1:
        raise ValueError(f"tune.n_candidates={n}: only {n_items - len(excluded)} items are left after "
                         f"excluding the history and target")
    negs: list[int] = []
    seen = set(excluded)
    while len(negs) < n - 1:
        for x in rng.integers(0, n_items, size=2 * (n - 1 - len(negs)) + 4).tolist():
            if x not in seen:
                seen.add(x)
                negs.append(x)
                if len(negs) == n - 1:
                    break
    negs.insert(int(rng.integers(n)), target)
    return negs


def hybrid_probability(curriculum: str, step: int, total_steps: int, steps_per_epoch: int | None = None) -> float:
    """p(tau) of drawing the target (non-text) representation at step ``step`` (1-based) of ``total_steps``.

    ``linear``: tau/T over the whole run (the paper). ``epoch_reset``: what the authors' released code does,
    whose step counter lives in each epoch's DataLoader workers: (step within the epoch)/T, so p ramps from 0
    to 1/epochs inside every epoch and resets (~10% hybrid samples over 5 epochs). ``hybrid_only``: 1;
    ``none``: 0 (text only)."""
    if curriculum == "linear":
        return min(1.0, step / max(total_steps, 1))
    if curriculum == "epoch_reset":
        per = steps_per_epoch or total_steps
        return min(1.0, ((step - 1) % max(per, 1) + 1) / max(total_steps, 1))
    if curriculum == "hybrid_only":
        return 1.0
    if curriculum == "none":
        return 0.0
    raise ValueError(f"tune.curriculum: expected one of {CURRICULA}, found {curriculum!r}")


@dataclass
class Schedule:
    """Which samples, candidates, templates and representations every optimizer step uses."""

    rows: TrainRows
    n_items: int
    seed: int
    epochs: int
    effective_batch: int
    n_candidates: int
    n_templates: int
    curriculum: str
    representation: str
    max_steps: int | None = None

    def __post_init__(self):
        if self.effective_batch > len(self.rows):
            raise ValueError(f"tune.effective_batch_size={self.effective_batch} exceeds the {len(self.rows)} "
                             f"training samples")
        per_epoch = len(self.rows) // self.effective_batch
        total = per_epoch * self.epochs
        self.total_steps = min(total, self.max_steps) if self.max_steps else total
        if self.total_steps < 1:
            raise ValueError("tune: the schedule has no step (check epochs, max_steps, effective_batch_size)")
        self.steps_per_epoch = per_epoch

    def step_samples(self, step: int) -> list[dict]:
        """The ``effective_batch`` samples of optimizer step ``step`` (1-based), fully drawn."""
        epoch, k = divmod(step - 1, self.steps_per_epoch)
        perm = np.random.default_rng([self.seed, 11, epoch]).permutation(len(self.rows))
        idx = perm[k * self.effective_batch:(k + 1) * self.effective_batch]
        p = hybrid_probability(self.curriculum, step, self.total_steps, self.steps_per_epoch)
        out = []
        for i in idx.tolist():
            rng = np.random.default_rng([self.seed, 13, epoch, i])
            hist, tgt = self.rows.histories[i], self.rows.targets[i]
            cands = sample_candidates(rng, hist, tgt, self.n_items, self.n_candidates)
            template = int(rng.integers(self.n_templates))
            hybrid = bool(rng.random() < p)
            out.append({"row": i, "history": hist, "target": tgt, "candidates": cands, "template": template,
                        "hybrid": hybrid, "representation": self.representation if hybrid else "text"})
        return out


def lr_at(step0: int, total_steps: int, lr: float, min_lr: float, warmup_start_lr: float,
          warmup_steps: int) -> float:
    """LLaRA's LinearWarmupCosineLRScheduler at 0-based optimizer step ``step0``."""
    if step0 < warmup_steps:
        return min(lr, warmup_start_lr + (lr - warmup_start_lr) * step0 / max(warmup_steps, 1))
    return (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * step0 / max(total_steps, 1))) + min_lr
