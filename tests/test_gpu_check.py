"""The prepared GPU check (benchmarks/gpu/check.py), rehearsed on the CPU at toy scale: the same probe
(DeepSpeed ZeRO-2 through the tune stage's engine and step), the same LastFM stage (tune CLI,
evaluation API, paired comparisons), the learnability call, the wheel's two-part journey."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))

from check import FoldedEncoder, assemble, sha256, split_file  # noqa: E402


def test_parts_join_to_the_pinned_file(tmp_path):
    blob = tmp_path / "model.whl"
    blob.write_bytes(os.urandom(10_001))
    parts = split_file(blob, [tmp_path / "a", tmp_path / "b"])
    assert [p["size"] for p in parts] == [5001, 5000]
    manifest = {"file": blob.name, "sha256": sha256(blob), "parts": parts}
    out = assemble(manifest, [tmp_path / "a", tmp_path / "b"], tmp_path / "joined")
    assert out.read_bytes() == blob.read_bytes()
    with pytest.raises(FileNotFoundError, match="not kept warm"):
        assemble(manifest, [tmp_path / "b"], tmp_path / "again")
    (tmp_path / "a" / parts[0]["name"]).write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        assemble(manifest, [tmp_path / "a", tmp_path / "b"], tmp_path / "again")


def test_stash_keeps_part1_for_a_later_call(tmp_path, monkeypatch):
    import check

    blob = tmp_path / "model.whl"
    blob.write_bytes(os.urandom(999))
    manifest = {"file": blob.name, "sha256": sha256(blob),
                "parts": split_file(blob, [tmp_path / "bundle" / "part1", tmp_path / "bundle" / "part2"])}
    monkeypatch.setattr(check, "STASH", tmp_path / "stash")
    check.stash_part1(tmp_path / "bundle")  # call 1 carries part1 only ...
    out = assemble(manifest, [tmp_path / "stash", tmp_path / "bundle" / "part2"], tmp_path / "joined")
    assert out.read_bytes() == blob.read_bytes()  # ... and a later call, carrying part2, joins them


def test_learnability_call_refuses_data_built_for_other_settings(tmp_path):
    """The device call tunes on data and SASRec built ahead by prepare.py: a call asking for another seed
    (or other data settings) stops naming each difference before any copy or tune; tune settings may differ."""
    import check

    sys.path.insert(0, str(REPO / "benchmarks"))
    import learnability

    prebuilt, work = tmp_path / "prebuilt", tmp_path / "work"
    (prebuilt / "data").mkdir(parents=True)
    learnability.check_settings(prebuilt, learnability.parser().parse_args(["--out", str(prebuilt)]))  # as prepare.py
    with pytest.raises(SystemExit, match=r"--eval-rows 100 there, 12 asked for; --data-seed 42 there, 43 asked for\."):
        check.run_learnability(prebuilt, None, work, tmp_path / "out", ["--seed", "43", "--eval-rows", "12"])
    assert not work.exists()  # nothing copied, nothing tuned
    (prebuilt / "settings.json").unlink()
    with pytest.raises(SystemExit, match=r"prebuilt/settings.json is missing .* rebuild them with benchmarks/gpu/prepare"):
        check.run_learnability(prebuilt, None, work, tmp_path / "out", [])
    learnability.check_settings(prebuilt, learnability.parser().parse_args(["--out", str(prebuilt)]))
    learnability.check_prebuilt(prebuilt, learnability.parser().parse_args(
        ["--out", str(work), "--samples", "16000", "--threads", "8"]))  # tune settings are the call's own
    learnability.check_prebuilt(prebuilt, learnability.parser().parse_args(
        ["--out", str(work), "--seed", "43", "--data-seed", "42"]))  # another tune seed on the same data
    with pytest.raises(SystemExit, match=r"--data-seed 42 there, 7 asked for"):
        learnability.check_prebuilt(prebuilt, learnability.parser().parse_args(["--out", str(work), "--data-seed", "7"]))


def test_folded_encoder_keeps_special_ids_and_lengths():
    import torch

    class Enc:
        special_ids = [100, 101, 102, 103]

        def training_batch(self, samples, encoded=None):
            ids = torch.tensor([[5, 70, 101, 99, 102]])
            return {"input_ids": ids, "labels": torch.tensor([[-100, -100, -100, 99, 70]])}

    b = FoldedEncoder(Enc(), vocab=64).training_batch([])
    assert b["input_ids"].tolist() == [[5, 6, 101, 35, 102]]
    assert b["labels"].tolist() == [[-100, -100, -100, 35, 6]]


@pytest.mark.slow
def test_smoke_rehearsal(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OUT"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "check.py"), "smoke", "--out",
                           str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert [(s["micro"], s["grad_ckpt"]) for s in probe["settings"]] == [(2, True), (2, False)]
    for s in probe["settings"]:
        assert "error" not in s, s
        assert s["tokens_per_s"] > 0 and s["peak_reserved_gib"] > 0 and len(s["loss"]) == 2
        assert s["zero_stage"] == 2 and s["tokens_per_sample"] > 20  # real LLaRA prompts, not stubs
    res = json.loads((tmp_path / "lastfm.json").read_text())
    assert set(res["metrics"]) == {"SASRec", "LLaRA", "zero-shot"}
    assert {"generate", "rank"} <= set(res["metrics"]["LLaRA"])
    assert len(res["metrics"]["LLaRA"]["rank"]["per_set"]) == 2  # every requested candidate set
    assert len(res["paired"]) == 5
    for p in res["paired"]:
        assert p["sets"] == [0, 1] and p["ci"][0] <= p["diff"] <= p["ci"][1]
    assert "| LLaRA (rank) - SASRec (rank) | hr@1 |" in proc.stdout  # the printed table
    learn = json.loads((tmp_path / "learnability.json").read_text())  # the last pass: both variants
    assert {(r["method"], r["mode"]) for r in learn["rows"]} == {("SASRec", "rank"), ("hybrid", "rank"),
                                                                 ("text_only", "rank")}
    assert learn["settings"]["projector_lr"] == 0.01 and learn["settings"]["samples"] == 8
    assert [(q["method_a"], q["method_b"]) for q in learn["paired"]] == [("hybrid", "text_only")]
    # the tuned artefacts a call returns before evaluating, and `finish` evaluating them elsewhere
    for name in ("lastfm", "learnability_hybrid", "learnability_text_only"):
        kept = tmp_path / "tuned" / name
        assert (kept / "adapter" / "adapter_model.safetensors").is_file() and (kept / "settings.json").is_file()
    again = json.loads((tmp_path / "finish" / "lastfm.json").read_text())
    for mode in ("generate", "rank"):  # the same figures (rows/s aside)
        assert again["metrics"]["LLaRA"][mode]["per_set"] == res["metrics"]["LLaRA"][mode]["per_set"]
    assert again["tune"] == res["tune"] and again["timings"]["evaluated"].startswith("here")
    assert json.loads((tmp_path / "finish" / "learnability.json").read_text())["rows"] == learn["rows"]
    # the real-data call: both variants with the probe, kept with their curves and predictions, paired
    real = json.loads((tmp_path / "realdata.json").read_text())
    assert set(real["metrics"]) == {"SASRec", "last-item", "hybrid", "text_only"}
    assert all(len(real["metrics"][m]["rank"]["per_set"]) == 2 for m in real["metrics"])
    pairs = {(p["method_a"], p["method_b"]) for p in real["paired"]}
    assert ("hybrid (rank)", "text_only (rank)") in pairs and ("text_only (rank)", "last-item (rank)") in pairs
    assert real["tune"]["text_only"]["representation"] == "text" and real["tune"]["hybrid"]["probe_every"] == 2
    for v in ("hybrid", "text_only"):
        kept = tmp_path / "tuned" / f"realdata_{v}"
        assert (kept / "predictions.parquet").is_file() and (kept / "adapter" / "adapter_model.safetensors").is_file()
        probe = (kept / "probe.csv").read_text().splitlines()
        assert probe[0].startswith("step,samples,rows,hr1") and len(probe) >= 3 and real["probe"][v] == probe


def _top_imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_device_has_every_module_the_gpu_path_imports():
    """Every third-party module the package imports (anywhere, also inside functions; the data stage, which
    runs on the CPU, aside) and every requirement of the carried wheels is in the device image or carried:
    a missing one (jsonschema, found on an H200) fails the device call after its start."""
    import importlib.metadata as md
    import re

    import prepare

    have = {n.lower() for n in (*prepare.DEVICE_IMAGE, *prepare.DEVICE_LACKS)}
    dists = md.packages_distributions()
    needed = {}
    for f in (REPO / "src" / "llara").rglob("*.py"):
        if "data" in f.relative_to(REPO / "src" / "llara").parts[:1]:
            continue
        for mod in _top_imports(f) - set(sys.stdlib_module_names) - {"llara", "__future__"}:
            for dist in dists.get(mod, [mod]):
                needed.setdefault(dist.lower().replace("_", "-"), f.name)
    for dist in prepare.DEVICE_LACKS:
        for req in md.requires(dist) or []:
            if "extra ==" not in req:
                needed.setdefault(re.split(r"[ <>=!;(\[]", req, maxsplit=1)[0].lower().replace("_", "-"), dist)
    missing = {d: by for d, by in needed.items() if d not in have}
    assert not missing, f"not on the device image nor in prepare.DEVICE_LACKS: {missing}"
