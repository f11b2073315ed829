"""Load the data stage's Parquet splits into padded tensors, once, with checks that name the file."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from llara.data.schema import ITEMS, SPLIT_SCHEMAS, read_table


@dataclass
class Split:
    """One split as tensors: left-padded histories, targets and (eval splits) the stored candidate sets."""

    path: str
    histories: torch.Tensor  # [rows, width] int64, left-padded with the padding id n_items
    targets: torch.Tensor  # [rows] int64
    candidate_sets: torch.Tensor | None = None  # [rows, K, n_candidates] int64; set 0 == `candidates`

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def load_n_items(path: str | os.PathLike) -> int:
    """The number of items in items.parquet; ids must be exactly 0..n-1."""
    ids = read_table(path, ITEMS).column("item_id").to_numpy()
    if not np.array_equal(np.sort(ids), np.arange(ids.size)):
        raise ValueError(f"{path}: column 'item_id' must hold each of 0..{ids.size - 1} exactly once")
    return int(ids.size)


def list_parts(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list column -> (flat values, per-row lengths) as numpy."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return arr.flatten().to_numpy(zero_copy_only=False), pc.list_value_length(arr).to_numpy(zero_copy_only=False)


def pad_histories(values: np.ndarray, lengths: np.ndarray, width: int, pad_id: int) -> np.ndarray:
    """Flat values + row lengths -> ``[rows, width]`` left-padded array (longer rows keep their last ``width`` items)."""
    rows = lengths.size
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    keep = np.minimum(lengths, width).astype(np.int64)
    out = np.full((rows, width), pad_id, dtype=np.int64)
    total = int(keep.sum())
    row = np.repeat(np.arange(rows), keep)
    within = np.arange(total) - np.repeat(np.cumsum(keep) - keep, keep)
    out[row, width - np.repeat(keep, keep) + within] = values[np.repeat(starts + lengths - keep, keep) + within]
    return out


def _check_ids(ids: np.ndarray, n_items: int, path: str, column: str, rows_of: np.ndarray | None = None) -> None:
    bad = np.flatnonzero((ids < 0) | (ids >= n_items))
    if bad.size:
        i = int(bad[0])
        row = int(rows_of[i]) if rows_of is not None else i
        raise ValueError(f"{path}: column {column!r} row {row} holds item id {int(ids[i])}, outside the item table "
                         f"(items.parquet has ids 0..{n_items - 1}); {bad.size} such value(s)")


def load_split(path: str | os.PathLike, split: str, n_items: int, width: int) -> Split:
    """Read ``split`` (train | valid | test) from ``path`` and convert it to tensors, checking every id."""
    path = str(path)
    table = read_table(path, SPLIT_SCHEMAS[split])  # fails on missing columns, wrong types, zero rows
    values, lengths = list_parts(table.column("history"))
    if (lengths == 0).any():
        raise ValueError(f"{path}: column 'history' row {int(np.flatnonzero(lengths == 0)[0])} is empty; "
                         "every row needs at least one history item")
    _check_ids(values, n_items, path, "history", np.repeat(np.arange(lengths.size), lengths))
    targets = table.column("target").to_numpy()
    _check_ids(targets, n_items, path, "target")
    out = Split(path, torch.from_numpy(pad_histories(values, lengths, width, n_items)), torch.from_numpy(targets.copy()))
    if split == "train":
        return out

    sets_col = table.column("candidate_sets").combine_chunks()
    set_counts = pc.list_value_length(sets_col).to_numpy(zero_copy_only=False)
    cand_values, cand_lengths = list_parts(sets_col.flatten())
    if set_counts.min() != set_counts.max() or cand_lengths.min() != cand_lengths.max() or cand_lengths.min() == 0:
        raise ValueError(f"{path}: column 'candidate_sets' must hold the same number of non-empty sets of the same "
                         f"size in every row; found {sorted(set(set_counts.tolist()))} sets of sizes "
                         f"{sorted(set(cand_lengths.tolist()))}")
    k, c = int(set_counts[0]), int(cand_lengths[0])
    _check_ids(cand_values, n_items, path, "candidate_sets", np.repeat(np.arange(len(out)), k * c))
    cands = cand_values.reshape(len(out), k, c)
    first, first_len = list_parts(table.column("candidates"))
    if first_len.min() != c or first_len.max() != c or not np.array_equal(first.reshape(-1, c), cands[:, 0]):
        raise ValueError(f"{path}: column 'candidates' must equal candidate_sets[0] in every row")
    hits = (cands == targets[:, None, None]).sum(axis=2)
    bad = np.argwhere(hits != 1)
    if bad.size:
        r, s = (int(x) for x in bad[0])
        raise ValueError(f"{path}: row {r} candidate set {s} holds the target {int(targets[r])} {int(hits[r, s])} "
                         "times; expected exactly once")
    out.candidate_sets = torch.from_numpy(np.array(cands, dtype=np.int64))
    return out
