"""LLaRA tuning under DeepSpeed on CPU with a tiny random Llama: 2-process ZeRO-2, adapter reload, resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_dataset
from llara.llm.data import load_titles, write_random_embeddings
from llara.llm.testing import make_tiny_llama

REPO = Path(__file__).resolve().parents[1]
DS2 = str(REPO / "config" / "deepspeed" / "zero2.json")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("llmtrain")
    data = make_tiny_dataset(root / "data")
    titles = load_titles(data / "items.parquet")
    write_random_embeddings(data / "emb.parquet", len(titles), 16, seed=1)
    return {"root": root, "data": data, "model": make_tiny_llama(root / "model", titles)}


def _args(env, out: Path, ckpt: Path, cfg: dict) -> list[str]:
    d = env["data"]
    return ["--config-json", json.dumps(cfg), "--base", str(env["model"]), "--items", str(d / "items.parquet"),
            "--train", str(d / "train.parquet"), "--embeddings", str(d / "emb.parquet"),
            "--out-dir", str(out), "--ckpt-dir", str(ckpt), "--threads", "2"]


def _run(cmd, extra_env=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _log(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


CFG = {"dataset": "lastfm", "seed": 3, "max_train_samples": 32, "epochs": 4, "micro_batch_size": 2,
       "effective_batch_size": 8, "n_candidates": 8, "lr": 0.02, "min_lr": 0.002, "warmup_start_lr": 0.002,
       "precision": "fp32", "deepspeed_config": DS2, "checkpoint_every": 4, "prompt_format": "raw"}


def test_zero2_two_processes_lowers_loss_and_adapter_reloads(env):
    out, ckpt, probe = env["root"] / "dp", env["root"] / "dp_ckpt", env["root"] / "probe.safetensors"
    res = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "llara.llm.train", *_args(env, out, ckpt, CFG), "--probe", str(probe)])
    assert res.returncode == 0, res.stderr[-4000:]
    assert "micro 2 x accum 2 x 2 procs" in res.stderr and "ZeRO stage 2" in res.stderr
    rows = _log(out / "train_log.csv")
    assert [r["step"] for r in rows] == list(range(1, 17))
    loss = [r["loss"] for r in rows]
    assert sum(loss[-4:]) / 4 < sum(loss[:4]) / 4 - 0.2, loss
    share = [r["hybrid_share"] for r in rows]
    assert share[0] <= 0.25 and share[-1] == 1.0
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "projector.safetensors").is_file()
    assert not ckpt.exists()  # removed once the outputs are complete

    from llara.llm.inference import load_llara

    m = load_llara(env["model"], env["data"] / "items.parquet", env["data"] / "emb.parquet", out / "adapter",
                   out / "projector.safetensors", merge_adapter=False)
    ref = load_file(str(probe))
    rows = [{"history": h, "candidates": list(range(8))}
            for h in _train_histories(env, CFG)[:2]]
    b = m.encoder.inference_batch(rows, "hybrid")
    assert torch.equal(b["input_ids"], ref["input_ids"])
    logits = m.module.logits(b["input_ids"], b["attention_mask"], b["item_slots"])
    assert torch.equal(logits, ref["logits"])


def _train_histories(env, cfg):
    from llara.llm.data import load_train_rows

    return load_train_rows(env["data"] / "train.parquet", 40, cfg["max_train_samples"], cfg["seed"]).histories


def _projector_moved(out: Path, env, seed: int) -> dict[str, bool]:
    """Which saved projector tensors differ from the seeded initial projector."""
    from llara.llm.model import init_projector, load_base

    _, base = load_base(env["model"])
    init = init_projector(16, base.get_input_embeddings(), seed).state_dict()
    saved = load_file(str(out / "projector.safetensors"))
    assert saved.keys() == init.keys()
    return {k: not torch.equal(saved[k], init[k]) for k in init}


def test_projector_frozen_on_text_only_steps(env):
    """Text-only tuning (TALLRec-style) never uses a behavioural token: as in the authors' code, Adam
    never touches the projector (no momentum, no weight decay), so it is saved exactly as initialised;
    hybrid tuning moves the MLP. The special-token rows are frozen in both."""
    out = env["root"] / "text_only"
    cfg = dict(CFG, epochs=1, representation="text", curriculum="none", weight_decay=0.1)
    res = _run([sys.executable, "-m", "llara.llm.train", *_args(env, out, env["root"] / "text_only_ckpt", cfg)])
    assert res.returncode == 0, res.stderr[-4000:]
    assert not any(_projector_moved(out, env, cfg["seed"]).values())
    out = env["root"] / "hybrid_only"
    cfg = dict(cfg, representation="hybrid", curriculum="hybrid_only")
    res = _run([sys.executable, "-m", "llara.llm.train", *_args(env, out, env["root"] / "hybrid_only_ckpt", cfg)])
    assert res.returncode == 0, res.stderr[-4000:]
    moved = _projector_moved(out, env, cfg["seed"])
    assert moved["mlp.0.weight"] and moved["mlp.2.weight"] and not moved["special"], moved


def test_projector_lr_sets_the_projector_group_only(env):
    """``projector_lr`` is the projector group's own peak: at 1e-12 (Adam steps ~lr, far below fp32
    resolution of the weights) the hybrid run leaves the MLP exactly as initialised, while the same run
    with the shared lr moves it (test above)."""
    out = env["root"] / "tiny_projector_lr"
    cfg = dict(CFG, epochs=1, representation="hybrid", curriculum="hybrid_only", projector_lr=1e-12)
    res = _run([sys.executable, "-m", "llara.llm.train", *_args(env, out, env["root"] / "tiny_projector_lr_ckpt", cfg)])
    assert res.returncode == 0, res.stderr[-4000:]
    assert not any(_projector_moved(out, env, cfg["seed"]).values())
    assert _log(out / "train_log.csv")[-1]["lr"] > 1e-4  # the LoRA group kept the shared lr


def test_resume_after_kill_matches_uninterrupted_run(env):
    cfg = dict(CFG, epochs=2, checkpoint_every=3)
    full, ckpt_full = env["root"] / "full", env["root"] / "full_ckpt"
    res = _run([sys.executable, "-m", "llara.llm.train", *_args(env, full, ckpt_full, cfg)])
    assert res.returncode == 0, res.stderr[-4000:]

    out, ckpt = env["root"] / "res", env["root"] / "res_ckpt"
    killed = _run([sys.executable, "-m", "llara.llm.train", *_args(env, out, ckpt, cfg)],
                  extra_env={"LLARA_TEST_KILL_AT_STEP": "3"})
    assert killed.returncode == 137
    assert not out.exists() and (ckpt / "latest").read_text().strip() == "step0000003"
    resumed = _run([sys.executable, "-m", "llara.llm.train", *_args(env, out, ckpt, cfg)])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stderr and "at step 3/8" in resumed.stderr

    for f in ("adapter/adapter_model.safetensors", "projector.safetensors"):
        a, b = load_file(str(full / f)), load_file(str(out / f))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (f, k)
    la, lb = _log(full / "train_log.csv"), _log(out / "train_log.csv")
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]



@pytest.mark.slow
def test_changed_config_discards_foreign_checkpoint(env):
    cfg = dict(CFG, epochs=2, checkpoint_every=3)
    out, ckpt = env["root"] / "fp", env["root"] / "fp_ckpt"
    killed = _run([sys.executable, "-m", "llara.llm.train", *_args(env, out, ckpt, cfg)],
                  extra_env={"LLARA_TEST_KILL_AT_STEP": "3"})
    assert killed.returncode == 137 and (ckpt / "latest").is_file()
    other = _run([sys.executable, "-m", "llara.llm.train", *_args(env, out, ckpt, dict(cfg, lr=0.01))])
    assert other.returncode == 0, other.stderr[-3000:]
    assert "discarding checkpoints" in other.stderr and "resumed from" not in other.stderr


def test_snakemake_dry_run_lists_llm_rules(tmp_path):
    res = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "results/lastfm/sasrec/llara/projector.safetensors",
                          "results/lastfm/sasrec/ablations/text_only/llara/adapter", "-n", "--nolock",
                          "--cores", "2", "--forceall"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    assert "rule tune:" in text and "rule tune_variant:" in text and "rule base_llm:" in text
    assert "logs/tune/lastfm_sasrec.log" in text


def test_stale_build_locks_names_a_lock_a_killed_build_left(tmp_path, monkeypatch):
    """A DeepSpeed op build killed mid-way leaves ``<extensions>/<py>_cpu/<op>/lock``; every later tune then
    waits on it without a word. The tune names such a lock (older than 10 min) in its log before it waits."""
    import os
    import time

    from llara.llm.train import stale_build_locks

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    old, fresh = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock", tmp_path / "py311_cpu" / "other_op" / "lock"
    for p in (old, fresh):
        p.parent.mkdir(parents=True)
        p.touch()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    [(found, age)] = stale_build_locks()  # a build in progress (fresh lock) is left alone
    assert found == old and 3590 < age < 3700
    assert stale_build_locks(max_age_s=7200) == []
