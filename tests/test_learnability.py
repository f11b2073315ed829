"""The learnability benchmark at toy scale: synthetic genres -> SASRec -> three variants tuned by the tune CLI
(DeepSpeed) -> evaluation on every stored set -> paired differences. A tiny random Llama cannot learn the task;
the real run (SmolLM2, docs/results.md "Learnability") is what shows the behavioural tokens carry the answer. This keeps
the benchmark running and checks what the toy scale can show: SASRec's embeddings hold the genres."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("learnability", REPO / "benchmarks" / "learnability.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_learnability_benchmark_small(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    bench = _benchmark()
    args = ["--out", str(tmp_path), "--tiny", "32", "--items", "48", "--genres", "4", "--train-rows", "3000",
            "--eval-rows", "24", "--sets", "2", "--samples", "16", "--micro", "4", "--batch", "8",
            "--seqrec-epochs", "10", "--jobs", "2"]
    result = bench.run(bench.parser().parse_args(args))
    assert result["chance_hr@1"] == pytest.approx(1 / 5) and result["chance_hr@5"] == 1.0
    rows = {(r["method"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {("SASRec", "rank")} | {(v, m) for v in bench.VARIANTS for m in ("rank", "generate")}
    for r in rows.values():
        assert len(r["per_set"]) == 2 and all(0.0 <= x <= 1.0 for x in r["per_set"])
    # the backbone's embeddings carry the genres: far above chance, the interval clear of it
    sas = rows[("SASRec", "rank")]
    assert sas["hr@1"] >= 0.6 and sas["hr@1_ci"][0] > result["chance_hr@1"], sas
    pairs = {(p["method_a"], p["mode"]) for p in result["paired"]}
    assert pairs == {(v, m) for v in ("hybrid", "id_only") for m in ("rank", "generate")}
    for p in result["paired"]:
        assert p["method_b"] == "text_only" and p["ci"][0] <= p["diff"] <= p["ci"][1]
    assert json.loads((tmp_path / "learnability.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    out = capsys.readouterr().out
    assert "chance HR@1 = 0.200" in out and "| hybrid - text_only | rank | hr@1 |" in out
    logs = {v: (tmp_path / f"{v}.log").read_text() for v in bench.VARIANTS}
    assert all("step 2/2" in t for t in logs.values()), logs  # 16 samples / 8 per step, the tune CLI's log
    for v in bench.VARIANTS:  # the tune's own train_log.csv, one window per step at 2 steps
        curve = result["loss"][v]
        assert curve["windows"] == [[1, 1], [2, 2]] and len(curve["mean_loss"]) == 2, curve
        assert curve["random_pick_loss"] > 0
    assert "| variant | 1-1 | 2-2 | random pick | under it from step |" in out
    assert result["sasrec_genre_separation"] > 0 and "SASRec genre separation" in out
    sas = json.loads((tmp_path / "sasrec" / "metrics.json").read_text())["training"]
    assert result["sasrec_epochs"] == {"kept": sas["best_epoch"], "run": sas["epochs_run"]}
    assert f"(kept epoch {sas['best_epoch']} of {sas['epochs_run']} run)" in out

    # a rerun reuses every stage's outputs
    stamp = {v: (tmp_path / v / "projector.safetensors").stat().st_mtime_ns for v in bench.VARIANTS}
    again = bench.run(bench.parser().parse_args(args))
    assert stamp == {v: (tmp_path / v / "projector.safetensors").stat().st_mtime_ns for v in bench.VARIANTS}
    assert again["timings"] == result["timings"]  # the cached steps' original cost, not ~0 s
    assert {f"{v}_{step}" for v in bench.VARIANTS for step in ("tune", "evaluate")} <= set(result["timings"])


def test_learnability_refuses_no_jobs_before_any_work(tmp_path):
    bench = _benchmark()
    with pytest.raises(SystemExit, match="--jobs and --threads must be at least 1; got --jobs 0"):
        bench.run(bench.parser().parse_args(["--out", str(tmp_path / "out"), "--tiny", "32", "--jobs", "0"]))
    assert not (tmp_path / "out").exists()


def _write_log(path: Path, losses: list[float], answer_tokens: int) -> None:
    from llara.llm.train import LOG_COLUMNS

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        w.writeheader()
        for i, loss in enumerate(losses, 1):
            w.writerow({"step": i, "loss": loss, "lr": 1e-3, "hybrid_share": 1.0, "tokens_per_s": 100.0, "epoch": 0,
                        "tokens": 400, "answer_tokens": answer_tokens, "step_s": 1.0})


def test_loss_curve_windows_and_random_pick_line(tmp_path):
    bench = _benchmark()
    log = tmp_path / "train_log.csv"
    # 20 steps of 4 samples, 8 answer tokens a step: 2 per sample, so the line is ln 5 / 2 = 0.805
    losses = [1.2, 1.0, 0.9, 0.9, 0.7, 0.9, 0.9, 0.9, 0.5, 0.4] + [0.3] * 10
    _write_log(log, losses, answer_tokens=8)
    c = bench.loss_curve(log, candidates=5, samples_per_step=4, windows=10)
    assert c["random_pick_loss"] == pytest.approx(math.log(5) / 2, abs=1e-4)
    assert c["windows"][0] == [1, 2] and c["windows"][-1] == [19, 20] and len(c["windows"]) == 10
    assert c["mean_loss"][:5] == pytest.approx([1.1, 0.9, 0.8, 0.9, 0.45])
    # window 3 (steps 5-6) is under the line but window 4 is not: it counts from step 9
    assert c["below_from_step"] == 9
    _write_log(log, [0.3] * 19 + [2.0], answer_tokens=8)
    assert bench.loss_curve(log, candidates=5, samples_per_step=4, windows=20)["below_from_step"] is None
    assert bench.loss_curve(log, candidates=5, samples_per_step=4, windows=3)["windows"] == [[1, 7], [8, 14], [15, 20]]


def test_rerun_with_other_settings_stops_before_reusing_outputs(tmp_path):
    """Outputs are cached by file: a rerun into the same --out with other settings would report the old tunes
    under the new settings, so it stops, naming each argument that differs, and changes nothing."""
    bench = _benchmark()
    out = tmp_path / "out"
    first = ["--out", str(out), "--tiny", "32", "--samples", "16", "--seed", "42"]
    bench.check_settings(out, bench.parser().parse_args(first))
    record = (out / "settings.json").read_text()
    assert json.loads(record)["samples"] == 16 and "threads" not in json.loads(record)
    bench.check_settings(out, bench.parser().parse_args([*first, "--threads", "1", "--jobs", "2"]))  # speed only
    other = ["--out", str(out), "--tiny", "32", "--samples", "32", "--seed", "43"]
    with pytest.raises(SystemExit, match=r"--samples was 16, now 32; --seed was 42, now 43\. Pass another --out"):
        bench.run(bench.parser().parse_args(other))
    assert (out / "settings.json").read_text() == record
    assert sorted(p.name for p in out.iterdir()) == ["settings.json"]  # nothing built, nothing removed
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "settings.json").write_text("my notes")
    with pytest.raises(SystemExit, match=r"theirs/settings.json is not a settings record"):
        bench.check_settings(foreign, bench.parser().parse_args(["--out", str(foreign)]))
    assert (foreign / "settings.json").read_text() == "my notes"


def test_genre_separation_tells_separated_genres_from_mixed(tmp_path):
    import numpy as np
    import polars as pl

    bench = _benchmark()
    rng = np.random.default_rng(0)
    genre = np.repeat(np.arange(4), 10)
    pl.DataFrame({"item_id": np.arange(40), "title": [f"t{i}" for i in range(40)],
                  "source_id": [f"genre{g}" for g in genre]}).write_parquet(tmp_path / "items.parquet")

    def table(x, name):
        pl.DataFrame({"item_id": np.arange(len(x)), "embedding": x.astype(np.float32)},
                     schema_overrides={"embedding": pl.Array(pl.Float32, x.shape[1])}).write_parquet(tmp_path / name)
        return tmp_path / name

    noise = rng.normal(size=(40, 8))
    centres = 5 * np.eye(4, 8)[genre]
    apart = bench.genre_separation(tmp_path / "items.parquet", table(noise + centres, "apart.parquet"))
    mixed = bench.genre_separation(tmp_path / "items.parquet", table(noise, "mixed.parquet"))
    assert apart > 1.0 > 0.3 > mixed > 0.0, (apart, mixed)
    pl.DataFrame({"item_id": [100], "embedding": [[0.0] * 8]},
                 schema_overrides={"embedding": pl.Array(pl.Float32, 8)}).write_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="other.parquet: no item ids in common"):
        bench.genre_separation(tmp_path / "items.parquet", tmp_path / "other.parquet")


def test_data_seed_draws_the_data_apart_from_the_tune_seed(tmp_path):
    import polars as pl

    bench = _benchmark()
    small = ["--items", "48", "--genres", "4", "--train-rows", "200", "--eval-rows", "8", "--sets", "2"]
    crossed = bench.parser().parse_args(["--out", str(tmp_path / "x"), *small, "--seed", "1", "--data-seed", "2"])
    plain = bench.parser().parse_args(["--out", str(tmp_path / "y"), *small, "--seed", "2"])
    other = bench.parser().parse_args(["--out", str(tmp_path / "z"), *small, "--seed", "1"])
    assert bench.data_seed(vars(crossed)) == 2 and bench.data_seed(vars(other)) == 1
    x, y, z = (bench.build_data(a.out, a) for a in (crossed, plain, other))
    assert pl.read_parquet(x / "test.parquet").equals(pl.read_parquet(y / "test.parquet"))
    assert not pl.read_parquet(x / "test.parquet").equals(pl.read_parquet(z / "test.parquet"))
    bench.check_settings(crossed.out, crossed)
    again = bench.parser().parse_args(["--out", str(crossed.out), *small, "--seed", "1", "--data-seed", "3"])
    with pytest.raises(SystemExit, match=r"--data-seed was 2, now 3"):
        bench.check_settings(again.out, again)


def test_sasrec_separation_survey_keeps_the_best_fit_epoch_and_caches(tmp_path, capsys):
    """The survey's table on a small genre dataset whose valid HR@1 saturates: per data seed x SASRec seed, the
    kept epoch is the one with the lowest valid candidate cross-entropy among those tied at the top HR@1 (not
    the first to reach it), and a rerun reuses every trained SASRec."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("sasrec_separation", REPO / "benchmarks" / "sasrec_separation.py")
    survey = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(survey)
    data = ["--items", "48", "--genres", "4", "--train-rows", "3000", "--eval-rows", "24", "--sets", "2",
            "--seqrec-epochs", "6"]
    argv = ["--out", str(tmp_path), "--data-seeds", "1", "2", "--sasrec-seeds", "3", "4", *data]
    assert survey.main(argv) == 0
    rows = json.loads((tmp_path / "separation.json").read_text())
    assert [(r["data_seed"], r["sasrec_seed"]) for r in rows] == [(1, 3), (1, 4), (2, 3), (2, 4)]
    for r in rows:
        training = json.loads((tmp_path / f"data{r['data_seed']}" / f"sasrec{r['sasrec_seed']}" / "metrics.json")
                              .read_text())["training"]
        top = max((e["valid_hr@1"], e["valid_hr@1_mean"]) for e in training["epochs"])
        tied = [e for e in training["epochs"] if (e["valid_hr@1"], e["valid_hr@1_mean"]) == top]
        assert r["best_epoch"] == min(tied, key=lambda e: (e["valid_candidate_ce"], e["epoch"]))["epoch"]
        assert r["separation"] > 0
    assert "| 2 | 4 |" in capsys.readouterr().out
    model = tmp_path / "data1" / "sasrec3" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    survey.main(argv)
    assert model.stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit):  # a data option the benchmark does not know is refused by its parser
        survey.main([*argv, "--no-such-option", "1"])
    with pytest.raises(SystemExit, match="--items was 48, now 52"):  # cached data of other options are not reused
        survey.main([*argv, "--items", "52"])
