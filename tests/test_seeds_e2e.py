"""A seed sweep through Snakemake on the tiny fixture: a one-seed run turned into a two-seed sweep retrains
only the new seed; per-seed folders, the aggregate metrics.json and the report; a third seed reruns only it."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_snakemake, tiny_pipeline
from test_evaluate_summary import check_summary

pytestmark = pytest.mark.slow

ROOT = "results/movielens/sasrec"
TARGETS = [f"{ROOT}/metrics.json", "results/report/table.md"]
TRAINING = {"seqrec_train", "seqrec_train_seed", "tune", "tune_seed"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fixture mirror (tiny ML-100K-shaped zip), a tiny random Llama and a small config."""
    root = tmp_path_factory.mktemp("seeds")
    return {**tiny_pipeline(root), "wd": root / "wd"}


def _run(setup, targets, *args):
    # targets first: --config takes every following word
    return run_snakemake(setup["wd"], [], *targets, "--configfile", str(setup["cfg_file"]), *args,
                         env={"LLARA_MIRROR": str(setup["mirror"])})


def _jobs(proc) -> list[tuple[str, str]]:
    """(rule, output) of every job a dry run lists."""
    text = proc.stdout + proc.stderr
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^rule (\w+):\n(?:    (?!output:).*\n)*    output: (.*)$",
                                                          text, flags=re.M)]


def _json(setup, path):
    return json.loads((setup["wd"] / path).read_text())


def test_seed_sweep(setup):
    wd = setup["wd"]
    # 1. a one-seed run (config seed 42) trains the backbone and LLaRA in the usual folders
    _run(setup, [f"{ROOT}/llara/train_log.csv"])
    assert _json(setup, f"{ROOT}/seqrec/metrics.json")["provenance"]["seed"] == 42

    # 2. a sweep that contains seed 42 retrains nothing for it: only seed 7 is trained
    sweep = ["--config", "seeds=[42,7]"]
    jobs = _jobs(_run(setup, TARGETS, "-n", *sweep))
    trained = [(r, o) for r, o in jobs if r in TRAINING]
    assert {r for r, _ in trained} == {"seqrec_train_seed", "tune_seed"}, trained
    assert all(f"{ROOT}/seeds/7/" in o for _, o in trained), trained
    assert not {"download", "preprocess", "base_llm"} & {r for r, _ in jobs}
    _run(setup, TARGETS, *sweep)

    # per-seed folders: seed 7's training; both seeds' evaluations; the data seed's training where it was
    for f in ("seeds/7/seqrec/model.safetensors", "seeds/7/llara/projector.safetensors", "seeds/42/predictions.parquet",
              "seeds/7/predictions.parquet", "seeds/42/seqrec/ranker_predictions.parquet",
              "seeds/7/seqrec/ranker_predictions.parquet"):
        assert (wd / ROOT / f).stat().st_size > 0, f
    assert _json(setup, f"{ROOT}/seeds/7/seqrec/metrics.json")["provenance"]["seed"] == 7
    assert _json(setup, f"{ROOT}/seeds/7/metrics.json")["train_seed"] == 7
    assert _json(setup, f"{ROOT}/seeds/42/metrics.json")["train_seed"] == 42
    # the method's metrics.json: the aggregate over seeds x candidate sets
    m = _json(setup, f"{ROOT}/metrics.json")
    assert m["seeds"] == [42, 7] and [r["seed"] for r in m["runs"]] == [42, 7]
    agg = m["aggregate"]["test"]["generate"]
    assert agg["n_seeds"] == 2 and agg["sets"] == [0, 1] and agg["n"] == 3
    assert [p["seed"] for p in agg["per_seed"]] == [42, 7] and agg["sd"]["hr@1"] is not None
    lo, hi = agg["mean"]["strict_hr@1_ci"]
    assert lo <= agg["mean"]["strict_hr@1"] <= hi
    singles = [_json(setup, f"{ROOT}/seeds/{s}/metrics.json")["splits"]["test"]["generate"]["mean"]["strict_hr@1"]
               for s in (42, 7)]
    assert agg["mean"]["strict_hr@1"] == pytest.approx(sum(singles) / 2)
    assert _json(setup, f"{ROOT}/seqrec/ranker_metrics.json")["aggregate"]["test"]["rank"]["n_seeds"] == 2
    # the sweep's summary.md (rule aggregate_seeds): over seeds x sets, the backbone of both seeds beside it
    summary = (wd / ROOT / "summary.md").read_text()
    check_summary(summary, m, [_json(setup, f"{ROOT}/{sub}seqrec/metrics.json") for sub in ("", "seeds/7/")])
    assert "| SASRec (backbone) | test | rank |" in summary and "| 2×2 |" in summary
    assert (wd / ROOT / "seeds/7/summary.md").is_file()  # each seed's evaluation has its own
    # the report reads every seed
    md = (wd / "results/report/table.md").read_text()
    assert "training seeds [7, 42]" in md and "| 2×2 |" in md and "## Per seed" in md
    assert "| LLaRA(SASRec) | MovieLens | 7 |" in md and "| SASRec | MovieLens | 42 |" in md
    assert "| 42, 7 |" in md  # paired differences LLaRA - SASRec over both seeds
    assert (wd / "results/report/hr1_seeds.png").stat().st_size > 0
    assert "Nothing to be done" in (p := _run(setup, TARGETS, "-n", *sweep)).stdout + p.stderr

    # 3. a third seed reruns only what that seed needs, plus the aggregates and the report
    jobs = _jobs(_run(setup, TARGETS, "-n", "--config", "seeds=[42,7,8]"))
    rules = [r for r, _ in jobs]
    assert sorted(rules) == sorted(["seqrec_train_seed", "tune_seed", "evaluate", "evaluate_seqrec", "aggregate_seeds",
                                    "aggregate_seeds_seqrec", "evaluate_reference_last_item",
                                    "aggregate_seeds_reference", "report"]), jobs
    per_seed = [o for r, o in jobs if not r.startswith("aggregate") and r != "report"]
    assert all(f"{ROOT}/seeds/8/" in o for o in per_seed), per_seed
