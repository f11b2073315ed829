"""One method over training seeds x candidate sets (aggregate block) and pairing across seeds."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from llara.evaluate.aggregate import aggregate_outcomes, write_seed_aggregate
from llara.evaluate.compare import outcome_matrix, paired_runs
from llara.metrics.bootstrap import bootstrap_ratio

from test_evaluate_run import _engine, _run


def _rank_matrix(ranks: np.ndarray) -> dict:
    n, k = ranks.shape
    return {"row": np.arange(n), "user_id": np.arange(n), "target": np.zeros(n, int), "sets": np.arange(k),
            "valid": np.ones((n, k), bool), "correct": ranks == 0, "target_rank": ranks,
            "candidates": [[[0, 1]] * n for _ in range(k)], "n_candidates": 20}


def test_mean_sd_min_max_and_interval_over_seeds_and_sets():
    rng = np.random.default_rng(0)
    runs = {s: _rank_matrix(rng.integers(0, 4 + s, size=(50, 2))) for s in (1, 2, 3)}
    agg = aggregate_outcomes(runs, "rank", seed=5, n_resamples=300)
    hits = np.stack([runs[s]["correct"] for s in (1, 2, 3)], axis=0).astype(float)  # [seeds, rows, sets]
    per_seed = hits.mean(axis=(1, 2))
    assert agg["seeds"] == [1, 2, 3] and agg["n_seeds"] == 3 and agg["n_sets"] == 2 and agg["n"] == 50
    assert agg["mean"]["hr@1"] == pytest.approx(hits.mean())
    assert agg["sd"]["hr@1"] == pytest.approx(np.std(per_seed, ddof=1))
    assert [p["hr@1"] for p in agg["per_seed"]] == pytest.approx(per_seed)
    cells = hits.mean(axis=1)  # [seeds, sets]
    assert agg["min"]["hr@1"] == pytest.approx(cells.min()) and agg["max"]["hr@1"] == pytest.approx(cells.max())
    lo, hi = agg["mean"]["hr@1_ci"]
    assert lo <= agg["mean"]["hr@1"] <= hi
    # the interval is the row bootstrap of the per-row mean across seeds and sets
    per_row = hits.transpose(1, 0, 2).reshape(50, -1).mean(axis=1)
    assert agg["mean"]["hr@1_ci"] == pytest.approx(bootstrap_ratio(per_row, seed=5, n_resamples=300)["ci"])
    assert agg == aggregate_outcomes(runs, "rank", seed=5, n_resamples=300)  # deterministic
    one = aggregate_outcomes({1: runs[1]}, "rank", seed=5, n_resamples=300)
    assert one["sd"]["hr@1"] is None and one["n_seeds"] == 1
    other = dict(runs[2], target=np.ones(50, int))
    with pytest.raises(ValueError, match="not paired: the runs of seeds 1 and 2 differ in 'target'"):
        aggregate_outcomes({1: runs[1], 2: other}, "rank")


def test_one_run_aggregate_equals_the_files_mean_block(tiny_data, tmp_path):
    m = _run(tiny_data, tmp_path / "a", _engine(tiny_data, skill=2), train_seed=4)
    assert m["train_seed"] == 4 and m["seeds"] == [4]
    for split in ("test", "valid"):
        for mode in ("generate", "rank"):
            agg, mean = m["aggregate"][split][mode], m["splits"][split][mode]["mean"]
            assert agg["seeds"] == [4] and agg["sets"] == [0, 1] and agg["n_candidates"] == 10
            for metric in ("hr@1", "valid_ratio"):
                assert agg["mean"][metric] == pytest.approx(mean[metric])
            assert agg["mean"]["hr@1_ci"] == pytest.approx(mean["hr@1_ci"])  # same draws, same bootstrap seed


def test_sweep_aggregate_file(tiny_data, tmp_path):
    runs = []
    for s, skill in ((1, 2), (2, 3)):
        out = tmp_path / f"seeds/{s}"
        _run(tiny_data, out, _engine(tiny_data, skill=skill), train_seed=s)
        runs.append({"seed": s, "predictions": str(out / "predictions.parquet"), "metrics": str(out / "metrics.json")})
    agg = write_seed_aggregate(runs, tmp_path / "metrics.json", seed=7, n_resamples=200)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["seeds"] == [1, 2] and on_disk["method"] == "fake" and on_disk["runs"][1]["seed"] == 2
    blk = agg["aggregate"]["test"]["generate"]
    singles = [json.loads(open(r["metrics"]).read())["splits"]["test"]["generate"]["mean"]["strict_hr@1"] for r in runs]
    assert blk["mean"]["strict_hr@1"] == pytest.approx(np.mean(singles))
    assert blk["sd"]["strict_hr@1"] == pytest.approx(np.std(singles, ddof=1)) and blk["sd"]["strict_hr@1"] > 0
    assert set(on_disk["provenance"]["inputs_sha256"]) == {"seed1/metrics", "seed1/predictions", "seed2/metrics",
                                                          "seed2/predictions"}
    # the same from the command line
    from llara.cli import main

    assert main(["aggregate", str(tmp_path / "cli.json"), "--seed", "7", "--n-resamples", "200",
                 *[x for r in runs for x in ("--run", str(r["seed"]), r["predictions"], r["metrics"])]]) == 0
    assert json.loads((tmp_path / "cli.json").read_text())["aggregate"] == on_disk["aggregate"]
    # runs of different settings, or a file trained with another seed, are refused by name
    other = tmp_path / "other"
    _run(tiny_data, other, _engine(tiny_data), train_seed=3, k=1)
    bad = runs[:1] + [{"seed": 3, "predictions": str(other / "predictions.parquet"), "metrics": str(other / "metrics.json")}]
    with pytest.raises(ValueError, match=r"other/metrics.json: candidate_sets = 1.*not runs of one method"):
        write_seed_aggregate(bad, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="trained with seed 1, listed as seed 5"):
        write_seed_aggregate([{**runs[0], "seed": 5}], tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        write_seed_aggregate([{**runs[0], "metrics": str(tmp_path / "nope.json")}], tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
    user = tmp_path / "user.json"  # a file llara did not write is never replaced
    user.write_text("mine")
    with pytest.raises(FileExistsError, match="llara did not write it"):
        write_seed_aggregate(runs, user)
    assert user.read_text() == "mine"


def test_paired_across_seeds(tiny_data, tmp_path):
    tables = {}
    for name, skill in (("a1", 3), ("a2", 2), ("b1", 1), ("b2", 1)):
        _run(tiny_data, tmp_path / name, _engine(tiny_data, skill=skill))
        tables[name] = pq.read_table(tmp_path / name / "predictions.parquet")
    a, b = {1: tables["a1"], 2: tables["a2"]}, {1: tables["b1"], 2: tables["b2"]}
    r = paired_runs(a, b, metric="strict_hr@1", seed=3, n_resamples=200)
    assert r["seeds"] == [1, 2] and r["sets"] == [0, 1] and len(r["per_seed"]) == 2
    strict = lambda t: outcome_matrix(t, "test", "generate")["correct"].mean()  # noqa: E731
    assert r["per_seed"][0]["diff"] == pytest.approx(strict(tables["a1"]) - strict(tables["b1"]))
    assert r["diff"] == pytest.approx(np.mean([p["diff"] for p in r["per_seed"]]))
    assert r["ci"][0] > 0  # the better model wins on every seed
    # an untrained method (one run, seed None) meets every seed
    z = paired_runs(a, {None: tables["b1"]}, metric="strict_hr@1", n_resamples=50)
    assert [p["seed"] for p in z["per_seed"]] == [1, 2]
    with pytest.raises(ValueError, match="no training seed in common"):
        paired_runs({1: tables["a1"]}, {2: tables["b2"]})


def test_compare_cli(tiny_data, tmp_path, capsys):
    """`llara compare A B`: A - B on the same rows and sets, equal to paired_runs; bad files named, exit 2."""
    from llara.cli import main
    from llara.evaluate.compare import paired_difference

    for name, skill in (("good", 3), ("weak", 1)):
        _run(tiny_data, tmp_path / name, _engine(tiny_data, skill=skill))
    a, b = tmp_path / "good" / "predictions.parquet", tmp_path / "weak" / "predictions.parquet"
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--metric", "hr@1", "strict_hr@1", "--seed", "3", "--n-resamples", "200",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    want = paired_difference(pq.read_table(a), pq.read_table(b), metric="strict_hr@1", seed=3, n_resamples=200)
    assert [r["metric"] for r in rows] == ["hr@1", "strict_hr@1"] and rows[1]["file_a"] == str(a)
    assert rows[1]["diff"] == pytest.approx(want["diff"]) and rows[1]["ci"] == pytest.approx(want["ci"])
    assert rows[1]["ci"][0] > 0 and f"{want['diff']:+.3f}" in printed  # the better fake wins, and the table says so
    # rank mode on one side, generate on the other
    assert main(["compare", str(a), str(b), "--mode-a", "rank", "--mode-b", "generate", "--n-resamples", "50"]) == 0
    capsys.readouterr()
    # a missing file, a file that is not Parquet, a metric the modes lack, a split neither holds: one line, exit 2
    (tmp_path / "notes.parquet").write_text("not parquet")
    for argv, msg in (([str(tmp_path / "nope.parquet"), str(b)], "nope.parquet: no such predictions file"),
                      ([str(a), str(tmp_path / "notes.parquet")], "notes.parquet: not a predictions Parquet file"),
                      ([str(a), str(b), "--metric", "hr@5"], "'hr@5' needs rank-mode outcomes"),
                      ([str(a), str(b), "--split", "train"], "share no evaluated candidate set on split 'train'")):
        rc = main(["compare", *argv])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and err.count("\n") == 1, err
