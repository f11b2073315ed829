"""Invariants of the seeded candidate sampler."""

import numpy as np
import pytest

from llara.data.candidates import sample_candidate_sets


def _rows(n_rows=50, n_items=100, seed=0):
    rng = np.random.default_rng(seed)
    hists = [rng.choice(n_items, size=int(rng.integers(3, 11)), replace=False).tolist() for _ in range(n_rows)]
    tgts = [int(rng.choice(np.setdiff1d(np.arange(n_items), h))) for h in hists]
    return hists, tgts


def test_candidates_invariants():
    hists, tgts = _rows()
    sets = sample_candidate_sets(hists, tgts, 100, n_candidates=20, n_sets=4, seed=7)
    positions = []
    for hist, tgt, row in zip(hists, tgts, sets):
        assert len(row) == 4
        for cands in row:
            assert len(cands) == 20 and len(set(cands)) == 20
            assert cands.count(tgt) == 1
            assert not set(cands) & set(hist)
            assert all(0 <= c < 100 for c in cands)
            positions.append(cands.index(tgt))
        assert row[0] != row[1]  # sets are different draws
    assert len(set(positions)) > 10  # the target is not always at the same place


def test_candidates_seeded():
    hists, tgts = _rows()
    a = sample_candidate_sets(hists, tgts, 100, seed=3)
    b = sample_candidate_sets(hists, tgts, 100, seed=3)
    c = sample_candidate_sets(hists, tgts, 100, seed=4)
    assert a == b
    assert a != c


def test_too_few_negatives():
    with pytest.raises(ValueError, match="row 0: only 5 eligible negatives"):
        sample_candidate_sets([[0, 1, 2, 3]], [4], 10, n_candidates=20)
