"""A synthetic dataset whose answer only the behavioural signal carries (the learnability benchmark).

Items have random, meaningless titles (pseudo-words drawn from syllables, unique, none inside
another) and belong to hidden genres of equal size. A row is a session inside one genre: a few items
of the genre in random order, and the next item is another item of the same genre. Nothing in the
titles tells the genre, so a model that reads only titles must memorise ``n_items`` title-to-genre
facts from the rows it sees; a sequential recommender trained on every training row learns the
genres (items of a genre follow each other), and its item embeddings carry them to the LLM.

The splits have the data stage's layout and schemas (``items/train/valid/test.parquet``), so every
later stage runs on them unchanged. The stored candidate sets are drawn by the data stage's sampler
with the row's whole genre banned from the negatives (the real sampler bans the row's history), so
exactly one candidate belongs to the session's genre: a model that knows the genres scores HR@1 1,
one that does not scores chance, 1 / ``n_candidates``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from llara.data.candidates import sample_candidate_sets
from llara.data.schema import EVAL, ITEMS, TRAIN
from llara.io import output_set, write_parquet

_ONSETS = list("bdfgklmnprstvz") + ["br", "dr", "kl", "st", "tr"]
_VOWELS = list("aeiou")


def pseudo_titles(n: int, rng: np.random.Generator, syllables: int = 2) -> list[str]:
    """``n`` distinct capitalised pseudo-words of ``syllables`` syllables, none contained in another
    (the evaluation's answer matching would be ambiguous)."""
    space = (len(_ONSETS) * len(_VOWELS)) ** syllables
    if n > space // 4:
        raise ValueError(f"pseudo_titles: {n} titles from {syllables} syllables would repeat; use more syllables")
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        word = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                       for _ in range(syllables))
        if word in seen or any(word in w or w in word for w in seen):
            continue
        seen.add(word)
        out.append(word.capitalize())
    return out


def genre_rows(genres: np.ndarray, n_rows: int, history: int,
               rng: np.random.Generator) -> tuple[list[list[int]], list[int], list[int]]:
    """``n_rows`` sessions: ``history`` distinct items of a random genre, then one more of it as the target.
    Returns (histories, targets, genre of each row)."""
    members = [np.flatnonzero(genres == g) for g in range(int(genres.max()) + 1)]
    hists, targets, row_genres = [], [], []
    for _ in range(n_rows):
        g = int(rng.integers(len(members)))
        pick = rng.choice(members[g], size=history + 1, replace=False)
        hists.append([int(x) for x in pick[:-1]])
        targets.append(int(pick[-1]))
        row_genres.append(g)
    return hists, targets, row_genres


def write_genre_dataset(out_dir: str | os.PathLike, n_items: int = 400, n_genres: int = 40, n_train: int = 20000,
                        n_eval: int = 200, history: int = 3, n_candidates: int = 20, candidate_sets: int = 5,
                        seed: int = 0) -> Path:
    """Write ``items/train/valid/test.parquet`` of the genre-session task to ``out_dir``; returns it."""
    per = n_items // n_genres
    if n_items % n_genres or per < history + 1:
        raise ValueError(f"n_items={n_items} must split into {n_genres} genres of at least {history + 1} items")
    if n_items - per < n_candidates - 1:
        raise ValueError(f"n_items={n_items}: too few items outside a genre for {n_candidates} candidates")
    rng = np.random.default_rng(seed)
    titles = pseudo_titles(n_items, rng)
    genres = rng.permutation(np.repeat(np.arange(n_genres), per))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = pa.table({"item_id": np.arange(n_items, dtype=np.int64), "title": titles,
                      "source_id": [f"genre{g}" for g in genres]}, schema=ITEMS)
    tables = {"items": items}
    user = 0
    for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        hists, targets, row_genres = genre_rows(genres, n, history, rng)
        cols = {"user_id": list(range(user, user + n)), "history": hists, "target": targets}
        user += n
        if split == "train":
            tables[split] = pa.table(cols, schema=TRAIN)
            continue
        # ban the whole genre from the negatives: the history argument of the sampler is its ban list
        banned = [[int(i) for i in np.flatnonzero(genres == g) if i != t] for g, t in zip(row_genres, targets)]
        sets = sample_candidate_sets(banned, targets, n_items, n_candidates, candidate_sets,
                                     int(rng.integers(2 ** 31)))
        tables[split] = pa.table(cols | {"candidates": [s[0] for s in sets], "candidate_sets": sets}, schema=EVAL)
    # one output set: a reader never sees files of two runs (llara.io.output_set)
    with output_set([out / f"{name}.parquet" for name in tables], "synthetic"):
        for name, table in tables.items():
            write_parquet(table, out / f"{name}.parquet", table.schema)
    return out
