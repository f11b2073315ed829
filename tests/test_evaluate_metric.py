"""The LLaRA validity/hit rule on hand-made outputs, bootstraps, paired differences, metric blocks."""

from __future__ import annotations

import numpy as np
import pytest

from llara.evaluate.matching import match_output, normalize_title, score_outputs
from llara.evaluate.blocks import generate_block, rank_block
from llara.metrics.bootstrap import aggregate_sets, bootstrap_ci, bootstrap_ratio, paired_bootstrap, ratio_stat

TITLES = {0: "Up", 1: "Up in the Air", 2: "Radiohead", 3: "The Beatles", 4: "Beyoncé", 5: "Don't Look Back"}


def test_exactly_one_candidate_is_valid():
    m = match_output("The answer is Radiohead.", ["Radiohead", "The Beatles"])
    assert m.valid and m.position == 0


def test_no_candidate_is_invalid():
    m = match_output("Pink Floyd", ["Radiohead", "The Beatles"])
    assert not m.valid and m.position is None and m.matched == ()


def test_two_candidates_are_invalid_never_guessed():
    m = match_output("Radiohead or The Beatles", ["Radiohead", "The Beatles"])
    assert not m.valid and m.position is None and m.matched == (0, 1)


def test_case_and_unicode_normalisation():
    assert match_output("RADIOHEAD", ["radiohead"]).valid
    assert match_output("beyonce\u0301", ["Beyoncé"]).valid  # combining accent == precomposed (NFKC)
    assert match_output("Don\u2019t  look   back", ["Don't Look Back"]).valid  # curly quote, extra spaces
    assert normalize_title("  The\tBEATLES ") == "the beatles"


def test_title_inside_another_title_is_shadowed():
    cands = ["Up", "Up in the Air"]
    m = match_output("Up in the Air", cands)
    assert m.matched == (0, 1)          # the authors' literal rule sees two titles ...
    assert not m.valid_literal
    assert m.valid and m.position == 1  # ... we name the longer one: "Up" occurs only inside it


def test_shorter_title_also_standing_alone_is_ambiguous():
    m = match_output("Up in the Air, or maybe Up", ["Up", "Up in the Air"])
    assert not m.valid and m.named == (0, 1)


def test_short_title_alone_is_valid():
    m = match_output("up", ["Up", "Up in the Air"])
    assert m.valid and m.position == 0


def test_identical_titles_are_ambiguous():
    assert not match_output("Heat", ["Heat", "Heat"]).valid


def test_only_first_line_counts_by_default():
    out = "Radiohead\nThe Beatles"
    assert match_output(out, ["Radiohead", "The Beatles"]).valid
    assert not match_output(out, ["Radiohead", "The Beatles"], first_line_only=False).valid


def test_empty_title_is_an_error():
    with pytest.raises(ValueError, match="empty title"):
        match_output("anything", ["  ", "x"])


def test_score_outputs_counts_and_errors():
    outs = ["Up in the Air", "radiohead", "Radiohead and The Beatles", "nothing", "THE BEATLES"]
    cands = [[0, 1, 2], [3, 2, 0], [3, 2, 0], [0, 1, 2], [3, 2, 0]]
    targets = [1, 3, 2, 2, 2]
    o = score_outputs(outs, cands, targets, TITLES)
    assert o.valid.tolist() == [True, True, False, False, True]
    assert o.correct.tolist() == [True, False, False, False, False]
    assert o.predicted == [1, 2, None, None, 3]
    assert o.valid_literal.tolist() == [False, True, False, False, True]
    assert o.n_named.tolist() == [1, 1, 2, 0, 1]
    with pytest.raises(ValueError, match="row 0: target 9 occurs 0 times"):
        score_outputs(["x"], [[0, 1]], [9], TITLES)
    with pytest.raises(ValueError, match="item 77 has no title"):
        score_outputs(["x"], [[77, 1]], [1], TITLES)


def test_bootstrap_is_deterministic_for_a_seed_and_matches_ranking():
    v = np.random.default_rng(3).random(122)
    a = bootstrap_ratio(v, seed=11)
    assert a == bootstrap_ratio(v, seed=11)
    assert a != bootstrap_ratio(v, seed=12)
    assert a["ci"] == pytest.approx(bootstrap_ci(v, seed=11), abs=1e-12)  # same draws as the seqrec stage's helper
    lo, hi = a["ci"]
    assert lo <= a["value"] <= hi


def test_ratio_stat_is_paper_hr1():
    valid = np.array([1, 1, 0, 1, 0], float)
    correct = np.array([1, 0, 0, 1, 0], float)
    assert ratio_stat(correct, valid) == pytest.approx(2 / 3)
    assert ratio_stat(correct, np.ones(5)) == pytest.approx(2 / 5)
    assert ratio_stat(np.zeros(3), np.zeros(3)) == 0.0  # no valid output: 0, as the official code


def test_mean_over_sets_and_aggregates():
    num = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], float)
    assert ratio_stat(num, np.ones_like(num)) == pytest.approx((0.75 + 0.25) / 2)
    assert aggregate_sets([0.75, 0.25]) == {"mean": 0.5, "min": 0.25, "max": 0.75}


def test_paired_bootstrap():
    r = np.random.default_rng(0)
    b = (r.random(300) < 0.3).astype(float)
    a = np.maximum(b, (r.random(300) < 0.2).astype(float))  # A hits whenever B does, and more
    res = paired_bootstrap(a, b, seed=1)
    assert res["diff"] == pytest.approx(a.mean() - b.mean())
    assert 0 < res["ci"][0] <= res["diff"] <= res["ci"][1]
    assert res["p_value"] < 0.01
    same = paired_bootstrap(a, a, seed=1)
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0]
    # pairing matters: the paired interval is narrower than the unpaired spread
    unpaired = np.subtract(bootstrap_ratio(a, seed=1)["ci"], bootstrap_ratio(b, seed=2)["ci"][::-1])
    assert res["ci"][1] - res["ci"][0] < unpaired[1] - unpaired[0]
    with pytest.raises(ValueError, match="differ in shape"):
        paired_bootstrap(a, b[:-1])


def test_generate_block_layout():
    valid = np.array([[1, 1], [1, 0], [0, 1], [1, 1]], bool)
    correct = np.array([[1, 0], [0, 0], [0, 1], [1, 1]], bool)
    blk = generate_block(valid, correct, [0, 1], seed=0)
    assert blk["n"] == 4 and blk["k"] == 2 and blk["sets"] == [0, 1]
    s0, s1 = blk["per_set"]
    assert s0["valid_ratio"] == 0.75 and s0["hr@1"] == pytest.approx(2 / 3) and s0["strict_hr@1"] == 0.5
    assert s1["valid_ratio"] == 0.75 and s1["hr@1"] == pytest.approx(2 / 3) and s1["strict_hr@1"] == 0.5
    assert s0["n_valid"] == 3 and s0["n_correct"] == 2
    assert blk["mean"]["hr@1"] == pytest.approx(2 / 3) and len(blk["mean"]["hr@1_ci"]) == 2
    assert blk["min"]["strict_hr@1"] == blk["max"]["strict_hr@1"] == 0.5
    with pytest.raises(ValueError, match="correct must imply valid"):
        generate_block(np.zeros((2, 1), bool), np.ones((2, 1), bool), [0])
    with pytest.raises(ValueError, match="empty"):
        generate_block(np.zeros((0, 1), bool), np.zeros((0, 1), bool), [0])


def test_rank_block_layout():
    ranks = np.array([[0, 3], [6, 0], [1, 1]])
    blk = rank_block(ranks, [0, 1])
    s0 = blk["per_set"][0]
    assert s0["valid_ratio"] == 1.0 and s0["hr@1"] == pytest.approx(1 / 3) and s0["hr@5"] == pytest.approx(2 / 3)
    assert s0["ndcg@5"] == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert blk["mean"]["hr@1"] == pytest.approx(1 / 3) and "ndcg@5_ci" in blk["mean"]
