"""A synthetic dataset whose answer only the behavioural signal carries (the learnability benchmark).

Every item has a random, meaningless title (pseudo-words drawn from syllables, unique) and one fixed
successor (a random permutation of the items). A row's history is a few items drawn uniformly at
random; its target is the successor of the history's most recent item. Nothing in the titles hints at
the successor, so a model that reads only titles must memorise ``n_items`` title pairs, each seen
about ``samples / n_items`` times; a sequential recommender trained on every training row learns the
successor relation, and its item embeddings carry it to the LLM. The splits have the data stage's
layout and schemas (``items/train/valid/test.parquet``, stored candidate sets drawn by the same
sampler as the real datasets), so every later stage runs on them unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from llara.data.candidates import sample_candidate_sets
from llara.data.schema import EVAL, ITEMS, TRAIN
from llara.io import write_parquet

_ONSETS = list("bdfgklmnprstvz") + ["br", "dr", "kl", "st", "tr"]
_VOWELS = list("aeiou")


def pseudo_titles(n: int, rng: np.random.Generator, syllables: int = 3) -> list[str]:
    """``n`` distinct capitalised pseudo-words of ``syllables`` syllables each (no real words intended)."""
    space = (len(_ONSETS) * len(_VOWELS)) ** syllables
    if n > space // 4:
        raise ValueError(f"pseudo_titles: {n} titles from {syllables} syllables would repeat; use more syllables")
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        word = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                       for _ in range(syllables))
        if word not in seen:
            seen.add(word)
            out.append(word.capitalize())
    # no title may contain another (the evaluation's answer matching would be ambiguous)
    ordered = sorted(out, key=len)
    lowered = [t.lower() for t in ordered]
    for i, t in enumerate(lowered):
        if any(t in u for u in lowered[i + 1:]):
            return pseudo_titles(n, rng, syllables)
    return out


def successor_rows(successor: np.ndarray, n_rows: int, history: tuple[int, int],
                   rng: np.random.Generator) -> tuple[list[list[int]], list[int]]:
    """``n_rows`` (history, target) pairs: distinct random items, target = successor of the last one."""
    n_items = successor.size
    lo, hi = history
    hists, targets = [], []
    for _ in range(n_rows):
        length = int(rng.integers(lo, hi + 1))
        while True:
            h = rng.choice(n_items, size=length, replace=False)
            t = int(successor[h[-1]])
            if t not in h:
                break
        hists.append([int(x) for x in h])
        targets.append(t)
    return hists, targets


def write_successor_dataset(out_dir: str | os.PathLike, n_items: int = 400, n_train: int = 20000,
                            n_eval: int = 200, history: tuple[int, int] = (3, 5), n_candidates: int = 20,
                            candidate_sets: int = 5, seed: int = 0) -> Path:
    """Write ``items/train/valid/test.parquet`` of the successor task to ``out_dir``; returns it."""
    if n_items < n_candidates + history[1] + 1:
        raise ValueError(f"n_items={n_items} is too small for {n_candidates} candidates and histories of "
                         f"{history[1]} items")
    if not 1 <= history[0] <= history[1]:
        raise ValueError(f"history: expected 1 <= min <= max, found {history}")
    rng = np.random.default_rng(seed)
    titles = pseudo_titles(n_items, rng)
    successor = rng.permutation(n_items)
    while np.any(successor == np.arange(n_items)):  # no item is its own successor
        successor = rng.permutation(n_items)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = pa.table({"item_id": np.arange(n_items, dtype=np.int64), "title": titles,
                      "source_id": [f"syn{i}" for i in range(n_items)]}, schema=ITEMS)
    write_parquet(items, out / "items.parquet", ITEMS)
    user = 0
    for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        hists, targets = successor_rows(successor, n, history, rng)
        cols = {"user_id": list(range(user, user + n)), "history": hists, "target": targets}
        user += n
        if split == "train":
            write_parquet(pa.table(cols, schema=TRAIN), out / "train.parquet", TRAIN)
            continue
        sets = sample_candidate_sets(hists, targets, n_items, n_candidates, candidate_sets,
                                     int(rng.integers(2 ** 31)))
        table = pa.table(cols | {"candidates": [s[0] for s in sets], "candidate_sets": sets}, schema=EVAL)
        write_parquet(table, out / f"{split}.parquet", EVAL)
    return out
