"""The learnability benchmark's synthetic dataset: sessions inside hidden genres, exactly one candidate
of the session's genre, titles that carry nothing (unique, none inside another)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from llara.data.schema import EVAL, ITEMS, TRAIN, read_table
from llara.data.synthetic import pseudo_titles, write_genre_dataset


def test_genre_dataset_layout_and_invariants(tmp_path):
    d = write_genre_dataset(tmp_path, n_items=60, n_genres=6, n_train=300, n_eval=40, history=3, n_candidates=10,
                            candidate_sets=3, seed=5)
    items = read_table(d / "items.parquet", ITEMS)
    genre = np.array([int(s.removeprefix("genre")) for s in items.column("source_id").to_pylist()])
    assert np.bincount(genre).tolist() == [10] * 6
    train = read_table(d / "train.parquet", TRAIN).to_pylist()
    assert len(train) == 300
    for r in train:
        assert len(set(r["history"])) == 3 and r["target"] not in r["history"]
        assert len({genre[i] for i in r["history"] + [r["target"]]}) == 1  # one genre per session
    for split in ("valid", "test"):
        for r in read_table(d / f"{split}.parquet", EVAL).to_pylist():
            assert r["candidates"] == r["candidate_sets"][0] and len(r["candidate_sets"]) == 3
            for cands in r["candidate_sets"]:
                same = [c for c in cands if genre[c] == genre[r["target"]]]
                assert same == [r["target"]] and len(set(cands)) == 10
    # same seed, same files
    again = write_genre_dataset(tmp_path / "again", n_items=60, n_genres=6, n_train=300, n_eval=40, history=3,
                                n_candidates=10, candidate_sets=3, seed=5)
    assert pq.read_table(again / "test.parquet").equals(pq.read_table(d / "test.parquet"))


def test_titles_are_distinct_and_never_nested():
    titles = pseudo_titles(300, np.random.default_rng(0))
    low = [t.lower() for t in titles]
    assert len(set(low)) == 300
    assert not any(a != b and a in b for a in low for b in low)


def test_bad_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="genres"):
        write_genre_dataset(tmp_path, n_items=50, n_genres=6)
    with pytest.raises(ValueError, match="candidates"):
        write_genre_dataset(tmp_path, n_items=24, n_genres=2, n_candidates=20)
