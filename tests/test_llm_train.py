"""LLaRA tuning under DeepSpeed on CPU with a tiny random Llama: 2-process ZeRO-2, adapter reload, resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    """A CSV of numbers; an empty cell (a diagnostic with nothing to measure that step) reads as None."""
    with open(path) as f:
        return [{k: float(v) if v != "" else None for k, v in r.items()} for r in csv.DictReader(f)]


CFG = {"dataset": "lastfm", "seed": 3, "max_train_samples": 32, "epochs": 4, "micro_batch_size": 2,
       "effective_batch_size": 8, "n_candidates": 8, "lr": 0.02, "min_lr": 0.002, "warmup_start_lr": 0.002,
       "precision": "fp32", "deepspeed_config": DS2, "checkpoint_every": 4, "prompt_format": "raw"}


def test_zero2_two_processes_lowers_loss_and_adapter_reloads(env):
    out, ckpt, probe = env["root"] / "dp", env["root"] / "dp_ckpt", env["root"] / "probe.safetensors"
    res = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "llara.llm.train", *_args(env, out, ckpt, CFG), "--final-logits", str(probe)])
    assert res.returncode == 0, res.stderr[-4000:]
    assert "micro 2 x accum 2 x 2 procs" in res.stderr and "ZeRO stage 2" in res.stderr
    rows = _log(out / "train_log.csv")
    assert [r["step"] for r in rows] == list(range(1, 17))
    loss = [r["loss"] for r in rows]
    assert sum(loss[-4:]) / 4 < sum(loss[:4]) / 4 - 0.2, loss
    share = [r["hybrid_share"] for r in rows]
    assert share[0] <= 0.25 and share[-1] == 1.0
    assert all(r["tokens_per_s"] > 0 for r in rows)
    # diagnostics gathered over both processes: gradients before the update, per-representation losses
    assert all(r["grad_norm_lora"] > 0 and r["first_token_loss"] > 0 for r in rows)
    assert rows[-1]["loss_text"] is None and rows[-1]["loss_hybrid"] == pytest.approx(rows[-1]["loss"], rel=0.05)
    assert all((r["inject_norm"] is None) == (r["hybrid_share"] == 0) for r in rows)
    assert len({r["token_emb_norm"] for r in rows}) == 1
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "projector.safetensors").is_file()
    assert (out / "probe.csv").read_text().startswith("step,samples,rows,hr1")  # the probe is off: header only
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


def test_probe_scores_valid_rows_during_training(env):
    """``probe_every``: rank-mode HR@1 and the candidate-restricted loss on the first valid rows, at step 0, every
    k steps and at the end, written to probe.csv (kept through a resume like the train log); the text-only
    steps of a hybrid run have a projector gradient and injected vectors. Run with ``token_position: before``:
    the saved model renders its prompts that way again at inference (else its scores differ)."""
    from llara.llm.inference import load_llara, score_candidates
    from llara.llm.probe import load_probe_rows, probe_metrics

    out, ckpt = env["root"] / "probed", env["root"] / "probed_ckpt"
    cfg = dict(CFG, epochs=2, probe_every=3, probe_rows=12, checkpoint_every=4, token_position="before")
    args = [*_args(env, out, ckpt, cfg), "--valid", str(env["data"] / "valid.parquet")]
    killed = _run([sys.executable, "-m", "llara.llm.train", *args], extra_env={"LLARA_TEST_KILL_AT_STEP": "4"})
    assert killed.returncode == 137
    res = _run([sys.executable, "-m", "llara.llm.train", *args])
    assert res.returncode == 0, res.stderr[-4000:]
    assert "probe at step 6: valid HR@1" in res.stderr and "resumed from" in res.stderr
    probe = _log(out / "probe.csv")
    assert [r["step"] for r in probe] == [0, 3, 6, 8] and all(r["rows"] == 12 for r in probe)
    assert all(0 <= r["hr1"] <= r["hr5"] <= 1 and r["cand_loss"] > 0 and r["chance_hr1"] == 1 / 10 for r in probe)
    # the last probe is the saved model's own scores on those rows
    m = load_llara(env["model"], env["data"] / "items.parquet", env["data"] / "emb.parquet", out / "adapter",
                   out / "projector.safetensors", merge_adapter=False)
    assert m.encoder.token_position == "before"
    rows = load_probe_rows(str(env["data"] / "valid.parquet"), 12, len(m.titles))
    again = probe_metrics(score_candidates(m, rows, "hybrid"), rows)
    assert again["hr1"] == probe[-1]["hr1"] and again["cand_loss"] == pytest.approx(probe[-1]["cand_loss"], rel=1e-3)
    log = _log(out / "train_log.csv")
    assert all(r["grad_norm_projector"] > 0 and r["inject_norm"] > 0 for r in log if r["hybrid_share"] > 0)
    bad = _run([sys.executable, "-m", "llara.llm.train", *_args(env, env["root"] / "nv", env["root"] / "nv_ckpt", cfg)])
    assert bad.returncode != 0 and "probe_every" in bad.stderr and "--valid" in bad.stderr


def test_probe_metrics_by_hand():
    from llara.llm.probe import probe_metrics

    rows = [{"candidates": [5, 6, 7], "target": 6}, {"candidates": [1, 2, 3], "target": 1}]
    scores = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    m = probe_metrics(scores, rows)
    assert m["hr1"] == 0.5 and m["hr5"] == 1.0 and m["mean_rank"] == 1.0  # ties count against the target and m["chance_hr1"] == pytest.approx(1 / 3)
    expect = -(np.log(np.e / (np.e + 2)) + np.log(1 / (2 + np.e ** 2))) / 2
    assert m["cand_loss"] == pytest.approx(expect)


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
    log = _log(out / "train_log.csv")
    assert all(r["grad_norm_projector"] == 0 and r["loss_hybrid"] is None and r["inject_norm"] is None
               and r["loss_text"] == pytest.approx(r["loss"], rel=0.05) for r in log)
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
