"""Build ``items/train/valid/test.parquet`` for a dataset from its verified raw files.

Every pinned raw file is verified again here, whoever made the raw folder; titles are cleaned once for
every later stage (``llara.data.titles``); the four files are written as one output set
(``llara.io.output_set``), which readers accept only once all four are in place.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from llara.data import parse
from llara.data.candidates import sample_candidate_sets
from llara.data.datasets import USER_SOURCE, check_dataset, user_files
from llara.data.download import ChecksumError, verify
from llara.data.interactions import read_interactions, read_items
from llara.data.safe_pickle import load_llara_split
from llara.data.schema import EVAL, ITEMS, TRAIN
from llara.data.sources import LLARA_PADDING_ID, files_for
from llara.data.titles import clean_item_titles, title_overlaps
from llara.io import check_replaceable, output_set, write_parquet
from llara.settings import check_settings
from llara.text import short_repr

log = logging.getLogger("llara.data.preprocess")

SPLITS = ("train", "valid", "test")
STAGE = "preprocess"  # the owner recorded for the Parquet files


@dataclass(frozen=True)
class DataConfig:
    """The ``data:`` section of the config."""

    max_history: int = 10
    min_history: int = 3
    n_candidates: int = 20
    candidate_sets: int = 5
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    unknown_ids: str = "error"

    def __post_init__(self) -> None:
        # the same schema and cross-key rules as the Snakefile's (llara.settings); whole-number floats
        # (max_history=10.0) come back as the integers the checked settings hold
        checked = check_settings({"data": {**asdict(self), "split": list(self.split)}})["data"]
        for k, v in checked.items():
            if type(v) is int and type(getattr(self, k, None)) is float:
                object.__setattr__(self, k, v)

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        """The ``data:`` section with the schema's defaults; a bad key or value fails naming it."""
        d = check_settings({"data": copy.deepcopy(dict(d))})["data"]
        return cls(**{**d, "split": tuple(d["split"])})


Rows = tuple[list[int], list[list[int]], list[int]]  # user ids, histories, targets


def leave_users_out(inter: pl.DataFrame, cfg: DataConfig, seed: int, name: str = "interactions") -> dict[str, Rows]:
    """LLaRA's recipe: per-user sequences sorted by (time, item); users split by a seeded shuffle.

    Train = every prefix of the train users' sequences (history = last ``max_history`` items, at
    least ``min_history``); valid/test = the last item of each held-out user with its preceding items.
    Raises MalformedInputError naming ``name`` when a split would be empty (a log too small for the split).
    """
    seqs = (inter.unique(["user", "item"], keep="first", maintain_order=True)
            .sort("user", "time", "item").group_by("user", maintain_order=True).agg("item"))
    users = seqs["user"].to_numpy()
    order = np.random.default_rng(seed).permutation(len(users))
    fr = np.asarray(cfg.split, dtype=float) / sum(cfg.split)
    n_train, n_valid = int(len(users) * fr[0]), int(len(users) * fr[1])
    parts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    items = seqs["item"].to_list()
    out: dict[str, Rows] = {}
    for split, idx in parts.items():
        uids, hists, tgts = [], [], []
        for i in sorted(idx):
            seq = items[i]
            ends = range(cfg.min_history, len(seq)) if split == "train" else [len(seq) - 1]
            for t in ends:
                if t < cfg.min_history:
                    continue
                uids.append(int(users[i]))
                hists.append(seq[max(0, t - cfg.max_history):t])
                tgts.append(seq[t])
        out[split] = (uids, hists, tgts)
    empty = [split for split in parts if not out[split][0]]
    if empty:
        long_enough = sum(len(s) > cfg.min_history for s in items)
        per_split = ", ".join(f"{s} {len(parts[s])}" for s in parts)
        raise parse.MalformedInputError(
            f"{name}: the log is too small for the split: {len(users)} users, {long_enough} of them with more than "
            f"data.min_history={cfg.min_history} distinct items; data.split {list(cfg.split)} gives {per_split} users, "
            f"so the {' and '.join(empty)} split(s) would have no row (each held-out user gives one row when they have "
            f"more than min_history items); add users or lower data.min_history")
    return out


def llara_rows(path: Path, sha256: str, padding_id: int, n_items: int, cfg: DataConfig) -> Rows:
    """Rows of one of LLaRA's pickled splits: padding removed, ``(item, rating)`` tuples unwrapped."""
    split = load_llara_split(path, sha256)  # checked: columns, integer ids, 0 <= len_seq <= len(seq)
    uids, hists, tgts, unknown = [], [], [], 0
    for r, (seq, n, tgt) in enumerate(zip(split.seq, split.len_seq, split.next)):
        # len_seq is at least 1 even for an all-padding history, so padding ids are filtered, not trusted away
        hist = [i for i in seq[:n] if i != padding_id][-cfg.max_history:]
        if any(not 0 <= i < n_items for i in (*hist, tgt)):
            if cfg.unknown_ids != "drop":
                raise parse.MalformedInputError(
                    f"{path}, row {r}: item id outside the item table 0..{n_items - 1}: "
                    f"{short_repr([i for i in (*hist, tgt) if not 0 <= i < n_items])}; "
                    f"set data.unknown_ids: drop to drop such rows")
            unknown += 1
            continue
        if len(hist) < cfg.min_history:
            continue
        uids.append(r)
        hists.append(hist)
        tgts.append(tgt)
    if unknown:
        log.warning("%s: dropped %d rows with unknown item ids", path, unknown)
    return uids, hists, tgts


def _split_seed(seed: int, split: str) -> int:
    return int(np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0])


def _table(split: str, rows: Rows, n_items: int, cfg: DataConfig, seed: int, name: str) -> pa.Table:
    uids, hists, tgts = rows
    if not uids:
        raise ValueError(f"{name}: the {split} split is empty after preprocessing (min_history={cfg.min_history})")
    cols = {"user_id": uids, "history": hists, "target": tgts}
    if split == "train":
        return pa.table(cols, schema=TRAIN)
    try:
        sets = sample_candidate_sets(hists, tgts, n_items, cfg.n_candidates, cfg.candidate_sets, _split_seed(seed, split))
    except ValueError as e:
        raise ValueError(f"{name}, {split} split: {e}; the item table has {n_items} items, too few for "
                         f"data.n_candidates={cfg.n_candidates} with histories of up to {cfg.max_history} items: "
                         f"lower data.n_candidates or add items") from None
    return pa.table(cols | {"candidates": [s[0] for s in sets], "candidate_sets": sets}, schema=EVAL)


def build_items_and_rows(dataset: str, source: str | Mapping[str, Any], raw_dir: Path | None, cfg: DataConfig,
                         seed: int, extra_sha256: dict[str, str] | None = None) -> tuple[pl.DataFrame, dict[str, Rows]]:
    """Parse a dataset's files into the item table (titles cleaned) and per-split rows.

    ``source``: ``llara`` or ``raw`` for a built-in dataset (files under ``raw_dir``, each pinned one verified
    again), or the dataset's whole config entry ``datasets.<name>`` (required for ``source: interactions``,
    whose files are read where the entry says; ``raw_dir`` is then unused).
    """
    items, rows, _ = _build(dataset, source, raw_dir, cfg, seed, extra_sha256)
    return items, rows


def _build(dataset: str, source: str | Mapping[str, Any], raw_dir: Path | None, cfg: DataConfig, seed: int,
           extra_sha256: dict[str, str] | None) -> tuple[pl.DataFrame, dict[str, Rows], dict[str, int]]:
    """:func:`build_items_and_rows` plus what preprocessing changed (``titles_changed``)."""
    entry = source if isinstance(source, Mapping) else {"source": source}
    source = check_dataset(dataset, entry, need_domain=False)
    if source == "llara":
        items, name, rows = _llara_split(dataset, Path(raw_dir), cfg, extra_sha256 or {})
        items, changed = _titles(items, name)
    elif source == USER_SOURCE:
        files = user_files(dataset, entry)
        items, changed = _titles(read_items(files), str(files.items))
        inter = read_interactions(files, items, cfg.unknown_ids)
        rows = leave_users_out(inter, cfg, seed, str(files.interactions))
    else:
        verify_raw(dataset, source, Path(raw_dir), extra_sha256 or {})
        items, items_name, inter, name = _RAW_READERS[dataset](Path(raw_dir))
        items, changed = _titles(items, items_name)
        inter = parse.check_known(inter, name, cfg.unknown_ids)
        rows = leave_users_out(inter, cfg, seed, name)
    return items, rows, {"titles_changed": changed}


def _titles(items: pl.DataFrame, name: str) -> tuple[pl.DataFrame, int]:
    """Titles cleaned once for every later stage (refusing empty and over-long ones), overlaps warned about."""
    items, changed = clean_item_titles(items, name)
    title_overlaps(items["title"].to_list(), name)
    return items, changed


def verify_raw(dataset: str, source: str, raw_dir: Path, extra_sha256: Mapping[str, str]) -> None:
    """Check every file of (dataset, source) under ``raw_dir`` against its pins again (``llara download``
    checked them, but the folder may have been made or edited by hand since): ChecksumError names the file."""
    for f in files_for(dataset, source):
        path = raw_dir / f.relpath
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; expected the folder `llara download {dataset} --source {source}` "
                                    f"writes, with {f.relpath}")
        if f.is_pickle:
            _pin(f, extra_sha256)  # an unpinned pickle: the same message as before it is read
        try:
            verify(path, f, extra_sha256, origin=str(path))
        except ChecksumError as e:
            raise ChecksumError(f"{e}; the raw folder must hold the files `llara download` verified (download "
                                f"again, or pin your own file with download.extra_sha256)") from None


def _llara_split(dataset: str, raw_dir: Path, cfg: DataConfig, extra_sha256: dict[str, str]) -> tuple[pl.DataFrame, str, dict[str, Rows]]:
    """LLaRA's released split: its item list and its three pickled splits (sha256-pinned, verified again)."""
    verify_raw(dataset, "llara", raw_dir, extra_sha256)
    files = {f.relpath: f for f in files_for(dataset, "llara")}
    if dataset == "movielens":
        name = f"{raw_dir / 'ml-100k.zip'}:ml-100k/u.item"
        items = parse.movielens_items(raw_dir / "ml-100k.zip")
    else:
        name = str(raw_dir / f"llara/{dataset}/id2name.txt")
        items = parse.llara_id2name(raw_dir / f"llara/{dataset}/id2name.txt")
    pad = LLARA_PADDING_ID[dataset]
    if items.height != pad:
        raise parse.MalformedInputError(f"{raw_dir}: {items.height} items, expected {pad} (LLaRA's padding id)")
    rows = {}
    for split, fname in zip(SPLITS, ("train_data.df", "Val_data.df", "Test_data.df")):
        rel = f"llara/{dataset}/{fname}"
        rows[split] = llara_rows(raw_dir / rel, _pin(files[rel], extra_sha256), pad, items.height, cfg)
    return items, name, rows


def _movielens_raw(raw_dir: Path) -> tuple[pl.DataFrame, str, pl.DataFrame, str]:
    zp = raw_dir / "ml-100k.zip"
    items = parse.movielens_items(zp)
    inter = parse.movielens_interactions(zp)
    known = set(items["item_id"].to_list())
    inter = inter.with_columns(pl.when(pl.col("item").is_in(known)).then(pl.col("item")).alias("item"),
                               (pl.col("item") + 1).alias("artist"))
    return items, f"{zp}:ml-100k/u.item", inter, f"{zp}:ml-100k/u.data"


def _lastfm_raw(raw_dir: Path) -> tuple[pl.DataFrame, str, pl.DataFrame, str]:
    zp = raw_dir / "hetrec2011-lastfm-2k.zip"
    items, inter = parse.hetrec_lastfm(zp)
    return items, f"{zp}:artists.dat", inter, f"{zp}:user_taggedartists-timestamps.dat"


def _steam_raw(raw_dir: Path) -> tuple[pl.DataFrame, str, pl.DataFrame, str]:
    items, inter = parse.steam_raw(raw_dir / "steam_reviews.json.gz", raw_dir / "steam_games.json.gz")
    return items, str(raw_dir / "steam_games.json.gz"), inter, str(raw_dir / "steam_reviews.json.gz")


# source raw of each built-in dataset: (items, its name, interactions, their name); then the shared recipe
_RAW_READERS = {"movielens": _movielens_raw, "lastfm": _lastfm_raw, "steam": _steam_raw}


def _pin(f, extra_sha256: dict[str, str]) -> str:
    """The pinned sha256 of a pickle (repository pin, or the user's download.extra_sha256)."""
    pin = extra_sha256.get(f.relpath, f.sha256)
    if pin is None:
        raise ChecksumError(f"{f.relpath}: no sha256 pinned; pin it with config download.extra_sha256 before it is unpickled")
    return pin


def _test_kill_point(n_written: int) -> None:
    """Fault injection for the interruption tests: ``LLARA_TEST_KILL_AFTER_FILES=N`` SIGKILLs the process once
    ``N`` of the output files are in place (0: the set is recorded as being written, no file replaced yet)."""
    at = os.environ.get("LLARA_TEST_KILL_AFTER_FILES")
    if at is not None and at.strip() == str(n_written):
        log.warning("LLARA_TEST_KILL_AFTER_FILES=%s: killing this process", at)
        os.kill(os.getpid(), signal.SIGKILL)


def preprocess(dataset: str, source: str | Mapping[str, Any], raw_dir: str | Path | None, out: dict[str, str | Path],
               cfg: DataConfig | dict, seed: int = 42, extra_sha256: dict[str, str] | None = None) -> dict[str, int]:
    """Write items/train/valid/test Parquet files (paths in ``out``) as one output set; return their row counts
    and ``titles_changed`` (titles the cleaning changed: special-token strings removed, whitespace collapsed).

    ``source``: ``llara`` / ``raw`` (built-in datasets, files in ``raw_dir``) or the dataset's config entry
    ``datasets.<name>`` (any source; required for ``source: interactions``).
    """
    cfg = cfg if isinstance(cfg, DataConfig) else DataConfig.from_dict(cfg)
    for path in out.values():  # refuse before any work: never replace a file this stage did not write
        check_replaceable(path, STAGE)
    items, rows, stats = _build(dataset, source, None if raw_dir is None else Path(raw_dir), cfg, seed, extra_sha256)
    label = f"{dataset}/{source['source'] if isinstance(source, Mapping) else source}"
    n_items = items.height
    tables = {split: _table(split, rows[split], n_items, cfg, seed, label) for split in SPLITS}
    # the four files appear together or not at all: readers refuse a set whose writing did not finish
    with output_set([out["items"], *(out[s] for s in SPLITS)], STAGE):
        _test_kill_point(0)
        write_parquet(items.select(ITEMS.names).to_arrow(), out["items"], ITEMS, stage=STAGE)
        _test_kill_point(1)
        for i, (split, table) in enumerate(tables.items(), 2):
            write_parquet(table, out[split], table.schema, stage=STAGE)
            _test_kill_point(i)
    counts = {"items": n_items} | {s: t.num_rows for s, t in tables.items()} | stats
    log.info("%s: %s", label, counts)
    return counts
