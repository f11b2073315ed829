"""The whole DAG through Snakemake on a tiny fixture: mirror -> data -> SASRec -> base LLM -> tune -> evaluate
-> report; determinism across two cold runs; what a config change reruns (issue 6)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake, tiny_pipeline
from test_evaluate_summary import check_summary

pytestmark = pytest.mark.slow

TARGETS = ["results/movielens/sasrec/metrics.json", "results/report/table.md"]
VOLATILE = re.compile(r"provenance|rows_per_s|wall|time|tokens_per_s|seconds")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fixture mirror (tiny ML-100K-shaped zip, pinned by config), a tiny random Llama and a config."""
    return tiny_pipeline(tmp_path_factory.mktemp("e2e"))


def _run(setup, wd: Path, *args: str):
    return run_snakemake(wd, [], *TARGETS, "--configfile", str(setup["cfg_file"]), *args,
                         env={"LLARA_MIRROR": str(setup["mirror"])})


def _numbers(obj):
    """metrics.json without provenance and timings: what must be identical across runs."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items() if not VOLATILE.search(k)}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    return obj


def _jobs(proc) -> set[str]:
    return set(re.findall(r"^rule (\w+):", proc.stdout + proc.stderr, flags=re.M))


def test_whole_dag_deterministic_and_cached(setup):
    root = setup["root"]
    runs = []
    for name in ("run1", "run2"):  # two cold runs in separate folders
        wd = root / name
        proc = _run(setup, wd)
        metrics = json.loads((wd / "results/movielens/sasrec/metrics.json").read_text())
        # the main target's job ends with the summary: summary.md beside metrics.json, printed too
        summary = (wd / "results/movielens/sasrec/summary.md").read_text()
        check_summary(summary, metrics, [json.loads((wd / "results/movielens/sasrec/seqrec/metrics.json").read_text())])
        assert summary in proc.stdout + proc.stderr
        runs.append(metrics)
        test = metrics["splits"]["test"]
        assert test["n"] == 3 and {"generate", "rank"} <= set(test)
        assert 0.0 <= test["generate"]["mean"]["valid_ratio"] <= 1.0
        assert metrics["provenance"]["inputs_sha256"]
        log = (wd / "results/movielens/sasrec/llara/train_log.csv").read_text().splitlines()
        assert log[0].startswith("step,loss,lr,hybrid_share") and len(log) == 1 + 2  # 16 samples / 8 per step
        assert (wd / "results/report/table.md").read_text().count("LLaRA(SASRec)") >= 1
    assert _numbers(runs[0]) == _numbers(runs[1])

    wd = root / "run1"
    _run(setup, wd, "--report", str(wd / "report.html"))  # Snakemake's HTML report with the plots attached
    assert (wd / "report.html").stat().st_size > 10_000
    assert "Nothing to be done" in (_run(setup, wd, "-n").stdout + _run(setup, wd, "-n").stderr)
    # a seqrec hyper-parameter: seqrec, tune, evaluate and report rerun; the data stage does not
    cfg = json.loads(json.dumps(setup["cfg"]))
    cfg["seqrec"]["sasrec"]["hidden_size"] = 8
    setup["cfg_file"].write_text(yaml.safe_dump(cfg))
    jobs = _jobs(_run(setup, wd, "-n"))
    assert {"seqrec_train", "tune", "evaluate", "report"} <= jobs, jobs
    assert not {"download", "preprocess", "base_llm"} & jobs, jobs
    # an evaluation-only key: only the evaluations and the report
    cfg = json.loads(json.dumps(setup["cfg"]))
    cfg["evaluate"]["max_new_tokens"] = 5
    setup["cfg_file"].write_text(yaml.safe_dump(cfg))
    jobs = _jobs(_run(setup, wd, "-n"))
    assert "evaluate" in jobs and "report" in jobs, jobs
    assert not {"download", "preprocess", "seqrec_train", "base_llm", "tune"} & jobs, jobs
    setup["cfg_file"].write_text(yaml.safe_dump(setup["cfg"]))
