#!/usr/bin/env python3
"""LoRA training throughput of LLaRA's own model code on one GPU: the speed levers, measured in one run.

Usage::

    # on a lent H100/H200 through the device tool (the checkout travels as it is; nothing to carry,
    # no weights: both shapes are built with random init from a config), timeout_s 540:
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu/throughput.py --out $OUT/throughput.json

    # here, on the CPU: the rehearsal at toy scale in fp32 (tests/test_gpu_throughput.py), 10-30 s
    .venv/bin/python benchmarks/gpu/throughput.py --tiny --out /tmp/throughput.json

    # fewer configurations, a shorter budget (substrings of the configuration names):
    python3 benchmarks/gpu/throughput.py --budget-s 200 --only 135m/sdpa,7b/sdpa/ckpt-on

What one training step is. The model is the project's: ``llara.llm.model.add_lora`` (r 8, alpha 32,
dropout 0.1 on q,k,v,o,gate,up,down) over a ``LlamaForCausalLM`` built by
``AutoModelForCausalLM.from_config`` on the device in bf16, ``llara.llm.model.init_projector`` over a random
item table (4,606 items x 64, LastFM's size), all inside ``llara.llm.model.LlaraLM``, whose forward injects
the projected items at the behavioural-token slots and runs the LM head and the cross-entropy on the answer
positions only. One step = one micro-batch forward + backward + ``torch.optim.AdamW.step`` on the trainable
parameters (LoRA + projector), plain torch in one process (no DeepSpeed: the project's ZeRO-2 adds its
gradient bucketing; its fp32 master copy is O(trainable parameters), ~1% of a step for LoRA). Every
parameter is bf16 (as under DeepSpeed's bf16 mode; peft would keep the adapter in fp32 otherwise).

The batches. Sequence lengths are drawn from LastFM's LLaRA training prompts (raw format, prompt + answer,
SmolLM2 tokenizer, 4,096 hybrid samples: mean 201.5, 142-254; ``LASTFM_LENGTH_PERCENTILES``) and, for the
Llama-2-7B shape, the same distribution scaled to ``--len-7b`` (mean 256; Llama-2's tokenizer gives more
tokens than SmolLM2's). Micro-batches are cut as the tune loop cuts them (``llara.llm.batches``): a step's
128 samples (``--sort-chunk``, the effective batch; at least one micro-batch) sorted by length, right-padded.
The first, untimed, micro-batch of every configuration holds prompts of the longest length, so the memory
search's answer fits any step. Each sample has 30 behavioural-token slots (10 history + 20 candidates, as
LastFM's prompts) and its answer labels on its last 5 real tokens (LastFM's answers: 4.3 tokens on average).
Token ids are random. Only real (non-pad) tokens are counted.

The levers, each on / off where available, in the same run: attention implementation (``sdpa``,
``eager``, ``flash_attention_2`` when ``flash_attn`` imports), gradient checkpointing (non-reentrant) on /
off, the micro-batch (a list, and ``auto``: the largest power of two up to ``--max-mb-*`` that fits in
memory: try the longest micro-batch, catch ``torch.cuda.OutOfMemoryError``, halve), length-sorted batches
on / off, Liger kernels when ``liger_kernel`` imports (``apply_liger_kernel_to_llama`` with rms_norm, rope,
swiglu; its fused linear cross-entropy is not applied: LlaraLM computes the head and the loss itself, on
the ~5 answer positions per sample, so the logits are B x 5 x vocab and there is nothing to fuse without
changing ``LlaraLM.forward``), ``torch.compile`` (135M shape only; regional: each decoder layer, the
compile time reported apart and excluded from tokens/s). A configuration that fails (out of memory, a
missing package, an error) becomes a row that says why; ``--budget-s`` (420 s) skips the configurations
that no longer fit and lists them. The most important ones run first: 135M sdpa without checkpointing at
the auto micro-batch; 7B sdpa with checkpointing on, then off, at the auto micro-batch; then the rest.

Measured per configuration: warm-up steps (not timed), then timed steps (``torch.cuda.synchronize`` after
each) until ``--steps`` or ``--config-s``; tokens/s = real tokens / timed seconds, the median step time,
peak memory (``torch.cuda.max_memory_allocated``, weights included), and MFU = model FLOP/s / peak, with

    model FLOPs of a step = 4 N T + sum over sequences of 6 L h l^2 + 4 V h A

where T = real tokens, N = the frozen base's non-embedding parameters (the transformer blocks' weights and
norms; embeddings and LM head excluded), l = a sequence's real length, L = layers, h = hidden size,
V = vocabulary, A = answer tokens. 4N per token: forward 2N + the backward's input gradients 2N (a frozen
base has no weight gradients; checkpointing's recompute is hardware work, not model work). 6 L h l^2 per
sequence: causal attention, forward QK^T and PV over l/2 keys on average (2 L h l^2), backward twice that;
the non-causal convention (PaLM's 12 L h l per token) would count twice this. 4 V h A: the LM head on the
answer positions, forward and input gradient. LoRA and projector FLOPs (<1%) are not counted. MFU (4N)
counts the first term only (the goal's convention), MFU (full) all three. The peak is ``--peak-tflops``, by
default the dense bf16 matmul rate measured at startup (8192^3, median of 10; on the CPU, where the
rehearsal runs in fp32, an fp32 1024^3 matmul); the nominal H100 SXM / H200 dense bf16 peak, 989 TFLOP/s,
is printed beside it.

Goals printed beside the numbers (issue #27): the 135M shape at >= 150,000 tokens/s; the 7B shape at MFU
(4N) >= 0.35. Output: a Markdown table on stdout (progress on stderr) and JSON at ``--out`` (default
``$OUT/throughput.json`` when $OUT is set), rewritten after every configuration so that a call cut short
still returns what finished. How to run it on a lent GPU: docs/gpu.md, section "Throughput call".
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import os
import platform
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))  # the device machine runs the checkout, not an install

GIB = 1024 ** 3
NOMINAL_BF16_TFLOPS = 989.0  # H100 SXM (and H200) dense bf16, datasheet
GOAL_135M_TOKENS_S = 150_000.0
GOAL_7B_MFU_4N = 0.35

SHAPES = {
    # SmolLM2-135M's LlamaConfig (the project's default model)
    "135m": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
             "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True},
    # Llama-2-7B (the paper's model)
    "7b": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
           "intermediate_size": 11008, "vocab_size": 32000, "tie_word_embeddings": False},
}
TINY_SHAPES = {
    "135m": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocab_size": 512, "tie_word_embeddings": True},
    "7b": {"hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
           "intermediate_size": 192, "vocab_size": 512, "tie_word_embeddings": False},
}
# LastFM LLaRA training prompts (raw format, prompt + answer, SmolLM2's tokenizer), 4,096 hybrid samples drawn
# by llara.llm.data.Schedule from results/lastfm/data: the 0th, 5th, ..., 100th percentiles of the length
LASTFM_LENGTH_PERCENTILES = [142, 175, 186, 190, 193, 195, 197, 198, 200, 201, 202, 204, 205, 207, 208, 209, 212,
                             214, 216, 221, 254]
LASTFM_MEAN_LENGTH = 201.5
ANSWER_TOKENS = 5       # LastFM's answers (title + newline): 4.3 tokens on average (raw), 4.6 (chat)
HISTORY_SLOTS, CANDIDATE_SLOTS = 10, 20  # behavioural tokens per prompt (measured: 29.5 on average)
N_ITEMS, D_REC = 4606, 64                # LastFM's items, SASRec's hidden size
LORA = {"r": 8, "alpha": 32, "dropout": 0.1}


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

def draw_lengths(rng, n: int, mean: float) -> list[int]:
    """``n`` sequence lengths from LastFM's distribution (inverse CDF through the percentiles), scaled to ``mean``."""
    import numpy as np

    u = rng.random(n) * 100.0
    lens = np.interp(u, np.arange(0, 101, 5), LASTFM_LENGTH_PERCENTILES) * (mean / LASTFM_MEAN_LENGTH)
    floor = ANSWER_TOKENS + HISTORY_SLOTS + CANDIDATE_SLOTS + 8
    return [max(floor, int(round(x))) for x in lens]


def max_length(mean: float) -> int:
    """The longest prompt of the distribution scaled to ``mean``."""
    return int(round(LASTFM_LENGTH_PERCENTILES[-1] * mean / LASTFM_MEAN_LENGTH))


def plan_lengths(rng, mb: int, n_batches: int, mean: float, sort: bool, chunk: int = 128) -> list[list[int]]:
    """The lengths of ``n_batches`` micro-batches of ``mb``, as the tune loop cuts them: a step's ``chunk``
    samples (the effective batch; at least ``mb``) sorted by length and cut into micro-batches
    (``llara.llm.batches``), or kept in their drawn order (``sort`` False)."""
    per = max(1, chunk // mb)
    out: list[list[int]] = []
    while len(out) < n_batches:
        lens = draw_lengths(rng, mb * per, mean)
        if sort:
            lens.sort()
        out.extend(lens[i * mb:(i + 1) * mb] for i in range(per))
    return out[:n_batches]


def make_batch(gen, lengths: list[int], vocab: int, special_first: int) -> dict[str, Any]:
    """A right-padded LLaRA training micro-batch with random token ids: behavioural-token slots ([HistoryEmb]
    then [CansEmb]) spread over the prompt, labels on the last ANSWER_TOKENS real tokens."""
    import torch

    b, lmax = len(lengths), max(lengths)
    ln = torch.tensor(lengths)
    pos = torch.arange(lmax)[None, :]
    real = pos < ln[:, None]
    ids = torch.randint(0, vocab, (b, lmax), generator=gen)
    ids[~real] = 0
    labels = torch.full((b, lmax), -100, dtype=torch.long)
    answer = real & (pos >= (ln - ANSWER_TOKENS)[:, None])
    labels[answer] = ids[answer]
    n_slots = HISTORY_SLOTS + CANDIDATE_SLOTS
    span = (ln - ANSWER_TOKENS - 8).float()  # slots between position 4 and the answer
    k = torch.arange(n_slots).float()[None, :]
    slot_pos = (4 + (k + 0.5) * span[:, None] / n_slots).long()
    rows = torch.arange(b)[:, None].expand_as(slot_pos)
    kind = torch.where(k < HISTORY_SLOTS, special_first + 1, special_first + 2).long().expand_as(slot_pos)
    ids[rows, slot_pos] = kind
    item_slots = torch.full((b, lmax), -1, dtype=torch.long)
    item_slots[rows, slot_pos] = torch.randint(0, N_ITEMS, (b, n_slots), generator=gen)
    return {"input_ids": ids, "attention_mask": real.long(), "labels": labels, "item_slots": item_slots}


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

@dataclass
class Bench:
    """One built shape: the LoRA-wrapped LlaraLM and what the FLOP count needs."""
    shape: str
    dims: dict[str, int]
    module: Any
    causal_lm: Any
    n_nonembedding: int
    n_total: int
    n_trainable: int
    build_s: float
    patched: list[str] = field(default_factory=list)  # levers that cannot be undone on this instance (liger)


def build(shape: str, dims: dict[str, int], device: str, dtype, seed: int) -> Bench:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llara.llm.model import LlaraLM, add_lora, init_projector

    t0 = time.perf_counter()
    config = LlamaConfig(**dims, max_position_embeddings=4096, attention_dropout=0.0, use_cache=False)
    torch.manual_seed(seed)
    with torch.device(device):
        base = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    base.config.use_cache = False
    lm = add_lora(base, LORA["r"], LORA["alpha"], LORA["dropout"])
    gen = torch.Generator().manual_seed(seed + 1)
    table = torch.randn(N_ITEMS, D_REC, generator=gen)
    projector = init_projector(D_REC, base.get_input_embeddings(), seed)
    module = LlaraLM(lm, projector, table, dims["vocab_size"]).to(device=device, dtype=dtype)
    module.train()
    causal_lm = module.causal_lm
    n_nonemb = sum(p.numel() for n, p in causal_lm.named_parameters()
                   if "lora_" not in n and "embed_tokens" not in n and "lm_head" not in n)
    n_total = sum(p.numel() for n, p in causal_lm.named_parameters() if "lora_" not in n)
    n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return Bench(shape, dims, module, causal_lm, n_nonemb, n_total, n_train, time.perf_counter() - t0)


def free_memory(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


class Unavailable(Exception):
    """A lever that this machine cannot apply (a missing package): reported as a row, not a failure."""


def set_attention(bench: Bench, attn: str) -> None:
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise Unavailable("flash_attn does not import (not in the device image; a wheel matching torch 2.11 + "
                          "CUDA 13 would have to travel)")
    lm = bench.causal_lm
    if lm.config._attn_implementation == attn:
        return
    if hasattr(lm, "set_attn_implementation"):
        lm.set_attn_implementation(attn)
    else:  # older transformers: the attention function is looked up from the config at forward time
        lm.config._attn_implementation = attn


def set_checkpointing(bench: Bench, on: bool) -> None:
    lm = bench.causal_lm
    with warnings.catch_warnings():  # deprecated alias in transformers >= 5.2x, the API in 5.17
        warnings.simplefilter("ignore", FutureWarning)
        if on:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_disable()
    lm.config.use_cache = False


def apply_liger(bench: Bench) -> str:
    """Liger's rms_norm, rope and swiglu kernels on this instance; returns what was applied."""
    if importlib.util.find_spec("liger_kernel") is None:
        raise Unavailable("liger_kernel does not import (not in the device image; carry its wheel: docs/gpu.md)")
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    wanted = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
              "fused_linear_cross_entropy": False, "model": bench.causal_lm}
    params = inspect.signature(apply_liger_kernel_to_llama).parameters
    apply_liger_kernel_to_llama(**{k: v for k, v in wanted.items() if k in params})
    bench.patched.append("liger")
    return "rms_norm, rope, swiglu (fused linear CE not applicable: LlaraLM computes its own answer-position loss)"


def compile_layers(bench: Bench, backend: str) -> None:
    """Regional torch.compile: every decoder layer (one graph reused by the identical layers)."""
    import torch

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    for layer in bench.causal_lm.get_decoder().layers:
        layer.compile(backend=backend)


def uncompile_layers(bench: Bench) -> None:
    import torch

    for layer in bench.causal_lm.get_decoder().layers:
        layer._compiled_call_impl = None
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------
# the measurement
# ---------------------------------------------------------------------------------------------

@dataclass
class Config:
    shape: str
    attn: str = "sdpa"
    ckpt: bool = False
    mb: int | str = "auto"       # an int, "auto" (search down from the cap) or "best" (down from the auto result)
    sort: bool = True
    liger: bool = False
    compile: bool = False

    @property
    def name(self) -> str:
        parts = [self.shape, self.attn, "ckpt-on" if self.ckpt else "ckpt-off", f"mb-{self.mb}"]
        if not self.sort:
            parts.append("unsorted")
        if self.liger:
            parts.append("liger")
        if self.compile:
            parts.append("compile")
        return "/".join(parts)


def flops_of(bench: Bench, lengths: list[int]) -> tuple[float, float]:
    """(4 N T, full model FLOPs) of one micro-batch: see the module docstring."""
    d = bench.dims
    t = sum(lengths)
    f4n = 4.0 * bench.n_nonembedding * t
    attn = sum(6.0 * d["num_hidden_layers"] * d["hidden_size"] * ln * ln for ln in lengths)
    head = 4.0 * d["vocab_size"] * d["hidden_size"] * ANSWER_TOKENS * len(lengths)
    return f4n, f4n + attn + head


def measure(bench: Bench, cfg: Config, mb: int, args, device: str, time_left: float) -> dict[str, Any]:
    """Warm-up and timed steps of ``cfg`` at micro-batch ``mb``; raises torch.cuda.OutOfMemoryError."""
    import numpy as np
    import torch

    on_gpu = device.startswith("cuda")
    module = bench.module
    rng = np.random.default_rng([args.seed, mb, int(cfg.sort)])
    gen = torch.Generator().manual_seed(args.seed)
    mean_len = args.len_7b if bench.shape == "7b" else args.len_135m
    # the first (untimed) micro-batch is the worst case: mb prompts of the longest length, so a micro-batch that
    # passes it fits whatever the data brings
    worst = [max_length(mean_len)] * mb
    plan = plan_lengths(rng, mb, max(args.warmup - 1, 0) + args.steps, mean_len, cfg.sort, args.sort_chunk)
    if cfg.compile:
        # compiled: one untimed pass over every micro-batch (compiling each variant that occurs: the first shape,
        # the dynamic one, the unpadded batches whose attention mask is None), then the same batches timed
        plan = [worst, *plan, *plan]
        warm = (len(plan) + 1) // 2
    else:
        plan = [worst, *plan]
        warm = max(args.warmup, 1)
    made: dict[int, dict[str, Any]] = {}
    batches = []
    for ls in plan:  # a compiled run's second pass reuses the first pass's tensors
        key = id(ls)
        if key not in made:
            made[key] = {k: v.to(device, non_blocking=True) for k, v in
                         make_batch(gen, ls, bench.dims["vocab_size"], bench.dims["vocab_size"]).items()}
        batches.append(made[key])
    del made
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def step(batch) -> torch.Tensor:
        if args.fake_oom_tokens and batch["input_ids"].numel() > args.fake_oom_tokens:
            raise torch.cuda.OutOfMemoryError(f"fake out of memory: {tuple(batch['input_ids'].shape)} tokens > "
                                              f"--fake-oom-tokens {args.fake_oom_tokens}")
        loss, _ = module(**batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for b in batches[:warm]:
        loss = step(b)
    sync()
    warm_s = time.perf_counter() - t0
    times, used = [], []
    limit = min(args.config_s, max(time_left, 1.0))
    start = time.perf_counter()
    for i, b in enumerate(batches[warm:]):
        s = time.perf_counter()
        loss = step(b)
        sync()
        times.append(time.perf_counter() - s)
        used.append(plan[warm + i])
        if len(times) >= args.min_steps and time.perf_counter() - start > limit:
            break
    total = sum(times)
    real = sum(sum(ls) for ls in used)
    padded = sum(max(ls) * len(ls) for ls in used)
    f4n = sum(flops_of(bench, ls)[0] for ls in used)
    ffull = sum(flops_of(bench, ls)[1] for ls in used)
    peak = args.peak_tflops * 1e12
    med = float(np.median(times))
    row = {"mb": mb, "warmup_steps": warm, "timed_steps": len(times), "timed_s": round(total, 3),
           "tokens_per_s": round(real / total, 1), "step_s_median": round(med, 4),
           "step_s_mean": round(total / len(times), 4), "real_tokens_per_step": round(real / len(times), 1),
           "padded_tokens_per_step": round(padded / len(times), 1), "padding_efficiency": round(real / padded, 3),
           "answer_tokens_per_step": ANSWER_TOKENS * mb, "worst_len": max(max(ls) for ls in plan),
           "tflops_4n": round(f4n / total / 1e12, 3), "tflops_full": round(ffull / total / 1e12, 3),
           "mfu_4n": round(f4n / total / peak, 4), "mfu_full": round(ffull / total / peak, 4),
           "mfu_4n_nominal": round(f4n / total / (NOMINAL_BF16_TFLOPS * 1e12), 4) if on_gpu else None,
           "loss_last": float(loss.float()), "warmup_s": round(warm_s, 2)}
    if cfg.compile:  # the untimed pass less what the same batches take compiled
        row["compile_s"] = round(max(0.0, warm_s - warm * total / len(times)), 2)
    if on_gpu:
        row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
    else:
        row["peak_allocated_gib"] = row["peak_reserved_gib"] = None
    return row


def run_config(bench: Bench, cfg: Config, args, device: str, best: dict, time_left: float) -> dict[str, Any]:
    """One configuration: apply its levers, find its micro-batch, measure; every failure becomes the row."""
    import torch

    row: dict[str, Any] = {"name": cfg.name, "shape": cfg.shape, "attn": cfg.attn, "ckpt": cfg.ckpt,
                           "mb_mode": cfg.mb, "sorted": cfg.sort, "liger": cfg.liger, "compile": cfg.compile}
    cap = args.max_mb_7b if cfg.shape == "7b" else args.max_mb_135m
    if cfg.mb == "auto":
        mb, search = cap, True
    elif cfg.mb == "best":
        mb, search = best.get((cfg.shape, cfg.ckpt), cap), True
    else:
        mb, search = int(cfg.mb), False
    tried: list[list[Any]] = []
    try:
        set_attention(bench, cfg.attn)
        set_checkpointing(bench, cfg.ckpt)
        if cfg.liger:
            row["liger_applied"] = apply_liger(bench)
        if cfg.compile:
            compile_layers(bench, args.compile_backend)
            row["compile_backend"] = args.compile_backend
        while True:
            oom = None
            try:
                res = measure(bench, cfg, mb, args, device, time_left)
            except torch.cuda.OutOfMemoryError as e:
                oom = str(e).strip().splitlines()[0][:200]
            if oom is None:
                tried.append([mb, "ok"])
                row.update(res, status="ok")
                break
            for p in bench.module.parameters():
                p.grad = None
            free_memory(device)
            tried.append([mb, "out of memory"])
            if not search or mb == 1:
                row.update(status="failed", reason=f"out of memory at micro-batch {mb}: {oom}", mb=mb)
                break
            mb //= 2
    except Unavailable as e:
        row.update(status="unavailable", reason=str(e))
    except Exception as e:  # noqa: BLE001 - a failed configuration is a row, never a crash
        traceback.print_exc(file=sys.stderr)
        first_line = (str(e).strip().splitlines() or [""])[0][:300]
        row.update(status="failed", reason=f"{type(e).__name__}: {first_line}")
    finally:
        for p in bench.module.parameters():
            p.grad = None
        if cfg.compile:
            try:
                uncompile_layers(bench)
            except Exception:  # noqa: BLE001
                traceback.print_exc(file=sys.stderr)
        free_memory(device)
    row["mb_tried"] = tried
    if row.get("status") == "ok" and search and cfg.attn == "sdpa" and not cfg.liger and not cfg.compile \
            and cfg.sort and (cfg.shape, cfg.ckpt) not in best:
        best[(cfg.shape, cfg.ckpt)] = row["mb"]
    add_goal(row, args)
    return row


def add_goal(row: dict[str, Any], args) -> None:
    if row.get("status") != "ok":
        return
    if row["shape"] == "135m":
        row["goal"] = f">= {GOAL_135M_TOKENS_S:,.0f} tokens/s"
        row["goal_met"] = row["tokens_per_s"] >= GOAL_135M_TOKENS_S
    else:
        row["goal"] = f"MFU (4N) >= {GOAL_7B_MFU_4N}"
        row["goal_met"] = row["mfu_4n"] >= GOAL_7B_MFU_4N
    if args.tiny:
        row["goal_met"] = None  # toy shapes: the goals are the real shapes'


# ---------------------------------------------------------------------------------------------
# the plan, the peak, the report
# ---------------------------------------------------------------------------------------------

def plan_configs(args) -> list[Config]:
    """Most important first: 135M sdpa no-ckpt auto; 7B sdpa ckpt on / off auto; then the rest (per shape, the
    levers that patch the model for good, Liger, last)."""
    s, l = "135m", "7b"
    out = [Config(s, "sdpa", False, "auto"),
           Config(l, "sdpa", True, "auto"), Config(l, "sdpa", False, "auto"),
           Config(l, "eager", False, "best"), Config(l, "flash_attention_2", False, "best"),
           *[Config(l, "sdpa", False, m) for m in args.mb_7b],
           Config(l, "sdpa", True, 2 if args.tiny else 8),  # the paper's setting (check.py probe: under ZeRO-2)
           Config(l, "sdpa", False, "best", liger=True),
           Config(s, "eager", False, "best"), Config(s, "flash_attention_2", False, "best"),
           Config(s, "sdpa", True, "auto"),
           *[Config(s, "sdpa", False, m) for m in args.mb_135m],
           Config(s, "sdpa", False, "best", sort=False),
           Config(s, "sdpa", False, "best", compile=True),
           Config(s, "sdpa", False, "best", liger=True)]
    out = [c for c in out if c.shape in args.shapes]
    if args.only:
        out = [c for c in out if any(o in c.name for o in args.only)]
    return out


def matmul_tflops(device: str, dtype) -> float:
    """Measured dense matmul rate in ``dtype`` (GPU: 8192^3, median of 10 after 3 warm-ups; CPU: 1024^3, of 5)."""
    import torch

    n, reps = (8192, 10) if device.startswith("cuda") else (1024, 5)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
    times.sort()
    return 2 * n ** 3 / times[len(times) // 2] / 1e12


FLOPS_FORMULA = ("model FLOPs per step = 4*N*T + sum_seq 6*L*h*l^2 + 4*V*h*A (T real tokens, N non-embedding "
                 "params of the frozen base, l real length of a sequence, L layers, h hidden, V vocab, A answer "
                 "tokens); MFU (4N) = 4*N*T / time / peak; MFU (full) = all three terms / time / peak")


def fmt(x: Any, spec: str = "") -> str:
    return "" if x is None else format(x, spec)


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\n## LoRA training throughput ({m['device']}; torch {m['torch']}, transformers {m['transformers']}, "
          f"peft {m['peft']}; {'tiny shapes' if result['tiny'] else '135M and 7B shapes'})\n")
    print(f"Peak for MFU: {result['peak_tflops']:.1f} TFLOP/s ({result['peak_source']}); nominal H100 SXM / H200 "
          f"dense bf16: {NOMINAL_BF16_TFLOPS:.0f} TFLOP/s. {FLOPS_FORMULA}.")
    for shape, info in result["shapes"].items():
        print(f"- {shape}: N (non-embedding) {info['n_nonembedding']:,}, all {info['n_total']:,}, trainable "
              f"{info['n_trainable']:,}; built in {info['build_s']} s; mean length {info['mean_len']}")
    print("\n| config | mb | status | tokens/s | step ms | peak GiB | MFU 4N | MFU full | pad eff | goal | note |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in result["rows"]:
        if r.get("status") == "ok":
            goal = f"{r['goal']}: {'n/a (tiny)' if r['goal_met'] is None else ('yes' if r['goal_met'] else 'no')}"
            note = []
            if "compile_s" in r:
                note.append(f"compile {r['compile_s']} s ({r.get('compile_backend')})")
            if r.get("liger_applied"):
                note.append("liger: " + r["liger_applied"])
            if len(r.get("mb_tried", [])) > 1:
                note.append("tried " + ", ".join(f"{a}: {b}" for a, b in r["mb_tried"]))
            print(f"| {r['name']} | {r['mb']} | ok | {r['tokens_per_s']:,.0f} | {1e3 * r['step_s_median']:.1f} | "
                  f"{fmt(r['peak_allocated_gib'], '.2f')} | {r['mfu_4n']:.3f} | {r['mfu_full']:.3f} | "
                  f"{r['padding_efficiency']:.2f} | {goal} | {'; '.join(note)} |")
        else:
            print(f"| {r['name']} | {fmt(r.get('mb'))} | {r.get('status')} | | | | | | | | "
                  f"{str(r.get('reason', '')).replace('|', '/')[:160]} |")
    ok = [r for r in result["rows"] if r.get("status") == "ok"]
    for shape, key, label, spec in (("135m", "tokens_per_s", "tokens/s", ",.0f"), ("7b", "mfu_4n", "MFU (4N)", ".3f")):
        rows = [r for r in ok if r["shape"] == shape]
        if rows:
            top = max(rows, key=lambda r: r[key])
            met = "n/a (tiny)" if top["goal_met"] is None else "met" if top["goal_met"] else "not met"
            print(f"\nBest {shape}: {top['name']} at micro-batch {top['mb']}: {label} {top[key]:{spec}}"
                  f" ({top['goal']}: {met})")
    if result["skipped"]:
        print(f"\nSkipped (budget {result['budget_s']} s): {', '.join(result['skipped'])}")
    for note in result["notes"]:
        print(f"- {note}")
    print(f"\nElapsed {result['elapsed_s']} s of the {result['budget_s']} s budget.")


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON output (default $OUT/throughput.json when $OUT is set, else none)")
    p.add_argument("--budget-s", type=float, default=420.0, help="total time budget; later configurations are skipped")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the MFU denominator (default: the dense matmul rate measured at startup)")
    p.add_argument("--tiny", action="store_true", help="toy shapes, few steps: the CPU rehearsal")
    p.add_argument("--shapes", type=lambda s: s.split(","), default=["135m", "7b"], help="135m,7b")
    p.add_argument("--only", type=lambda s: [x for x in s.split(",") if x], default=None,
                   help="run only the configurations whose name contains one of these substrings")
    p.add_argument("--mb-135m", type=int_list, default=None, help="fixed micro-batches for 135M (default 16,32,64)")
    p.add_argument("--mb-7b", type=int_list, default=None, help="fixed micro-batches for 7B (default 4,8,16)")
    p.add_argument("--max-mb-135m", type=int, default=None, help="auto search starts here (default 512)")
    p.add_argument("--max-mb-7b", type=int, default=None, help="auto search starts here (default 64)")
    p.add_argument("--len-135m", type=float, default=None, help="mean sequence length, 135M (default 201.5)")
    p.add_argument("--len-7b", type=float, default=None, help="mean sequence length, 7B shape (default 256)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per configuration (default 3)")
    p.add_argument("--steps", type=int, default=None, help="timed steps at most (default 20)")
    p.add_argument("--min-steps", type=int, default=None, help="timed steps at least (default 3; tiny 2)")
    p.add_argument("--config-s", type=float, default=None, help="timed seconds per configuration (default 10)")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; tiny: eager)")
    p.add_argument("--sort-chunk", type=int, default=128,
                   help="samples sorted together before they are cut into micro-batches (the effective batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fake-oom-tokens", type=int, default=0, help=argparse.SUPPRESS)  # tests: OOM above this
    return p


def resolve_args(args) -> argparse.Namespace:
    tiny = args.tiny
    defaults = {"mb_135m": [2] if tiny else [16, 32, 64], "mb_7b": [2] if tiny else [4, 8, 16],
                "max_mb_135m": 4 if tiny else 512, "max_mb_7b": 4 if tiny else 64,
                "len_135m": 64.0 if tiny else LASTFM_MEAN_LENGTH, "len_7b": 80.0 if tiny else 256.0,
                "warmup": 1 if tiny else 3, "steps": 2 if tiny else 20, "config_s": 0.5 if tiny else 10.0,
                "compile_backend": "eager" if tiny else "inductor", "min_steps": 2 if tiny else 3}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.out is None and os.environ.get("OUT"):
        args.out = Path(os.environ["OUT"]) / "throughput.json"
    return args


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = resolve_args(parser().parse_args(argv))
    import torch
    import transformers

    import peft

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers >= 5.2x renames checkpointing's API
    on_gpu = torch.cuda.is_available()
    device = "cuda:0" if on_gpu else "cpu"
    # bf16 on the GPU; fp32 on the CPU (the rehearsal: bf16 at toy sizes ran 10x slower than fp32 here, even on
    # a CPU with native bf16 units)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    shapes = TINY_SHAPES if args.tiny else SHAPES
    name = torch.cuda.get_device_name(0) if on_gpu else f"cpu ({platform.processor() or platform.machine()}, " \
                                                         f"{torch.get_num_threads()} threads)"
    if args.peak_tflops is None:
        args.peak_tflops = matmul_tflops(device, dtype)
        source = f"measured {'8192' if on_gpu else '1024'}^3 {str(dtype).replace('torch.', '')} matmul"
    else:
        source = "--peak-tflops"
    print(f"[throughput] {name}; peak {args.peak_tflops:.2f} TFLOP/s ({source})", file=sys.stderr, flush=True)
    notes = [f"dtype {str(dtype).replace('torch.', '')}; LoRA r {LORA['r']} alpha {LORA['alpha']} dropout "
             f"{LORA['dropout']} on q,k,v,o,gate,up,down; AdamW on LoRA + projector; one micro-batch per step",
             "Liger: rms_norm, rope, swiglu only; fused linear cross-entropy not applicable as is: LlaraLM.forward "
             "runs the LM head and its own cross-entropy on the ~5 answer positions per sample (logits B x 5 x V)",
             "torch.compile: regional (each decoder layer), 135M only; compile time excluded from tokens/s",
             f"flash_attn importable: {importlib.util.find_spec('flash_attn') is not None}; liger_kernel importable: "
             f"{importlib.util.find_spec('liger_kernel') is not None}"]
    result: dict[str, Any] = {
        "tiny": args.tiny, "budget_s": args.budget_s,
        "machine": {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
                    "peft": peft.__version__, "python": platform.python_version(),
                    "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
                    if on_gpu else None},
        "peak_tflops": round(args.peak_tflops, 3), "peak_source": source, "nominal_bf16_tflops": NOMINAL_BF16_TFLOPS,
        "flops_formula": FLOPS_FORMULA,
        "goals": {"135m_tokens_per_s": GOAL_135M_TOKENS_S, "7b_mfu_4n": GOAL_7B_MFU_4N},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "shapes": {}, "rows": [], "skipped": [], "notes": notes, "elapsed_s": 0.0}
    deadline = t_start + args.budget_s
    bench: Bench | None = None
    best: dict = {}
    for cfg in plan_configs(args):
        left = deadline - time.perf_counter()
        need = 0.5 if args.tiny else (8.0 if cfg.shape == "135m" else 20.0) + (90.0 if cfg.compile else 0.0)
        if bench is None or bench.shape != cfg.shape or bench.patched:
            need += 0.0 if args.tiny else (5.0 if cfg.shape == "135m" else 30.0)
        if left < need:
            result["skipped"].append(cfg.name)
            result["rows"].append({"name": cfg.name, "shape": cfg.shape, "status": "skipped",
                                   "reason": f"budget: {max(left, 0):.0f} s left, ~{need:.0f} s needed"})
            continue
        if bench is None or bench.shape != cfg.shape or bench.patched:
            bench = None
            free_memory(device)
            try:
                bench = build(cfg.shape, shapes[cfg.shape], device, dtype, args.seed)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc(file=sys.stderr)
                result["rows"].append({"name": cfg.name, "shape": cfg.shape, "status": "failed",
                                       "reason": f"build: {type(e).__name__}: {str(e)[:300]}"})
                free_memory(device)
                continue
            result["shapes"].setdefault(cfg.shape, {
                "dims": shapes[cfg.shape], "n_nonembedding": bench.n_nonembedding, "n_total": bench.n_total,
                "n_trainable": bench.n_trainable, "build_s": round(bench.build_s, 1),
                "mean_len": args.len_7b if cfg.shape == "7b" else args.len_135m})
        restore = _llama_module_state() if cfg.liger else None
        print(f"[throughput] {cfg.name} ...", file=sys.stderr, flush=True)
        t_cfg = time.perf_counter()
        row = run_config(bench, cfg, args, device, best, deadline - time.perf_counter())
        row["wall_s"] = round(time.perf_counter() - t_cfg, 1)
        if restore is not None:
            _restore_llama_module(restore)  # liger patches modeling_llama's globals: later builds stay plain
        print(f"[throughput] {cfg.name}: {row.get('status')} "
              f"{row.get('tokens_per_s', row.get('reason', ''))}", file=sys.stderr, flush=True)
        result["rows"].append(row)
        result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        write_json(args.out, result)
    bench = None
    free_memory(device)
    result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    write_json(args.out, result)
    print_table(result)
    return 0


def _llama_module_state() -> dict[str, Any]:
    from transformers.models.llama import modeling_llama

    return {"module": dict(vars(modeling_llama)),
            "classes": {n: dict(vars(c)) for n, c in vars(modeling_llama).items() if isinstance(c, type)}}


def _restore_llama_module(state: dict[str, Any]) -> None:
    from transformers.models.llama import modeling_llama

    for k, v in state["module"].items():
        if vars(modeling_llama).get(k) is not v:
            setattr(modeling_llama, k, v)
    for n, attrs in state["classes"].items():
        cls = state["module"][n]
        for k, v in attrs.items():
            if k not in ("__dict__", "__weakref__") and vars(cls).get(k) is not v:
                try:
                    setattr(cls, k, v)
                except (AttributeError, TypeError):
                    pass


if __name__ == "__main__":
    sys.exit(main())
