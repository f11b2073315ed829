"""A real Snakemake run of one seqrec target on the tiny fixture, and its rerun behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import make_tiny_dataset
from llara.seqrec import item_embeddings_schema

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TARGET = "results/lastfm/gru4rec/seqrec/metrics.json"


def _snakemake(workdir: Path, target: str, *flags: str) -> subprocess.CompletedProcess:
    # --allowed-rules: the fixture stands in for the data stage's outputs, only the seqrec rule may run
    cmd = [str(SNAKEMAKE), target, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
           *flags, "--allowed-rules", "seqrec_train", "--configfile", str(workdir / "test_config.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _write_config(workdir: Path, gru4rec: dict, caser: dict | None = None) -> None:
    cfg = {"seqrec": {"gru4rec": gru4rec, **({"caser": caser} if caser else {})}}
    (workdir / "test_config.yaml").write_text(json.dumps(cfg))  # JSON is YAML


@pytest.mark.slow
def test_snakemake_runs_one_seqrec_target(tmp_path):
    work = tmp_path / "work"
    make_tiny_dataset(work / "results" / "lastfm" / "data")
    _write_config(work, {"max_epochs": 3, "hidden_size": 16})
    run = _snakemake(work, TARGET)
    assert run.returncode == 0, run.stderr[-3000:]

    out = work / "results" / "lastfm" / "gru4rec" / "seqrec"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "gru4rec" and metrics["dataset"] == "lastfm"
    assert metrics["provenance"]["config"]["hparams"]["hidden_size"] == 16  # the merged config slice
    assert metrics["provenance"]["config"]["hparams"]["n_layers"] == 1  # default kept by the merge
    assert metrics["training"]["epochs_run"] <= 3
    table = pq.read_table(out / "item_embeddings.parquet")
    assert table.num_rows == 40 and table.schema == item_embeddings_schema(16)
    assert (out / "model.safetensors").stat().st_size > 0
    log = (work / "logs" / "seqrec" / "lastfm_gru4rec.log").read_text()
    assert "valid HR@1" in log and "trained" in log

    # nothing to do when nothing changed; another model's hyper-parameter does not rerun this one
    _write_config(work, {"max_epochs": 3, "hidden_size": 16}, caser={"n_h": 2})
    dry = _snakemake(work, TARGET, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]
    # a per-dataset override of this model's hyper-parameter does
    cfg = {"seqrec": {"gru4rec": {"max_epochs": 3, "hidden_size": 16},
                      "overrides": {"lastfm": {"gru4rec": {"dropout": 0.05}}}}}
    (work / "test_config.yaml").write_text(json.dumps(cfg))
    dry = _snakemake(work, TARGET, "-n")
    text = dry.stdout + dry.stderr
    assert dry.returncode == 0 and "seqrec_train" in text and "params" in text.lower(), text[-2000:]


def test_wildcard_and_config_errors(tmp_path):
    work = tmp_path / "work"
    make_tiny_dataset(work / "results" / "lastfm" / "data")
    _write_config(work, {"max_epochs": 1})
    run = _snakemake(work, "results/lastfm/bert4rec/seqrec/metrics.json", "-n")
    assert run.returncode != 0 and "MissingRuleException" in run.stdout + run.stderr
    _write_config(work, {"n_heads": 2})  # not a GRU4Rec hyper-parameter: rejected by the schema
    run = _snakemake(work, TARGET, "-n")
    assert run.returncode != 0 and "n_heads" in run.stdout + run.stderr
