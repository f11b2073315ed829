"""LLaRA tuning speed and memory per lever: tokens/s and peak RSS per step, fp32 vs bf16, plain loop vs DeepSpeed
ZeRO-2, torch's dropout vs the packed CPU dropout of the tune loop (llara.llm.dropout).

    .venv/bin/python benchmarks/tune_speed.py [--base resources/llm/smollm2-135m-instruct]
        [--data results/lastfm/data] [--batch 4] [--tokens 256] [--steps 3] [--threads 2]
        [--configs plain:bf16:torch,plain:bf16:packed,zero2:bf16:packed]

A config is mode:precision[:dropout] (dropout torch by default). The whole tune loop before/after a change:
benchmarks/tune_loop.py.

Each configuration runs in its own process (so peak RSS is its own). A step is one forward + backward +
optimizer step of ``batch`` real LLaRA hybrid prompts cut to ``tokens`` tokens (loss on the last 8).
The FLOP floor is 6 x (decoder parameters) x tokens at the measured matmul rate of this CPU
(torch.mm, same dtype and threads); ``x floor`` = measured step time / that floor. The first step is
a warm-up and is not timed. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def matmul_gflops(dtype, threads: int, n: int = 1024, k: int = 576, m: int = 1536, reps: int = 20) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, k, dtype=dtype), torch.randn(k, m, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n * k * m * reps / (time.perf_counter() - t) / 1e9


def one(args) -> dict:
    """Run one configuration in this process; returns its measurements."""
    import torch

    torch.set_num_threads(args.threads)
    if args.mode == "zero2":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": os.environ.get("MASTER_PORT", "29517")})
    from llara.llm.data import Schedule, load_item_embeddings, load_titles, load_train_rows, write_random_embeddings
    from llara.llm.model import LlaraLM, add_lora, init_projector, load_base
    from llara.llm.prompts import IGNORE, PromptEncoder, load_templates

    data = Path(args.data)
    titles = load_titles(data / "items.parquet")
    emb_path = Path(args.embeddings) if args.embeddings else Path(f"/tmp/llara_bench_emb_{len(titles)}.parquet")
    if not emb_path.exists():
        write_random_embeddings(emb_path, len(titles), 64)
    table = torch.from_numpy(load_item_embeddings(emb_path, len(titles)))
    tok, base = load_base(args.base)
    enc = PromptEncoder(tok, titles, load_templates(args.dataset), "raw")
    rows = load_train_rows(data / "train.parquet", len(titles), 64, 0)
    sched = Schedule(rows, len(titles), 0, 1, args.batch, 40, 3, "hybrid_only", "hybrid")  # long enough to cut
    torch.manual_seed(0)
    lm = add_lora(base)
    if args.dropout == "packed":
        from llara.llm.dropout import pack_lora_dropout

        pack_lora_dropout(lm)
    module = LlaraLM(lm, init_projector(table.shape[1], base.get_input_embeddings(), 0), table, enc.special_ids[0])
    n_decoder = sum(p.numel() for n, p in base.named_parameters() if ".layers." in n and "lora_" not in n)

    def batch_for(step):
        b = enc.training_batch(sched.step_samples(step))
        L = args.tokens
        if b["input_ids"].shape[1] < L:
            raise SystemExit(f"prompts are shorter than --tokens {L}")
        b = {k: v[:, :L].clone() for k, v in b.items()}
        b["attention_mask"][:] = 1
        b["labels"][:] = IGNORE
        last = b["input_ids"][:, -8:]
        b["labels"][:, -8:] = last.masked_fill(last >= enc.special_ids[0], IGNORE)
        return b

    params = [p for p in module.parameters() if p.requires_grad]
    if args.mode == "zero2":
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
        cfg = json.loads((REPO / "config/deepspeed/zero2.json").read_text())
        cfg.update(train_micro_batch_size_per_gpu=args.batch, gradient_accumulation_steps=1,
                   train_batch_size=args.batch, bf16={"enabled": args.precision == "bf16"})
        engine, *_ = deepspeed.initialize(model=module, optimizer=torch.optim.AdamW(params, lr=1e-4), config=cfg)

        def step_fn(b):
            loss, _ = engine(**b)
            engine.backward(loss)
            engine.step()
            return loss.item()
    else:
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step_fn(b):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss, _ = module(**b)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()

    times = []
    for s in range(1, args.steps + 2):
        b = batch_for(s)
        t = time.perf_counter()
        step_fn(b)
        if s > 1:
            times.append(time.perf_counter() - t)
    tokens = args.batch * args.tokens
    step_s = sorted(times)[len(times) // 2]
    gflops = matmul_gflops(torch.bfloat16 if args.precision == "bf16" else torch.float32, args.threads)
    floor_s = 6 * n_decoder * tokens / (gflops * 1e9)
    return {"mode": args.mode, "precision": args.precision, "dropout": args.dropout, "batch": args.batch, "step_s": round(step_s, 2),
            "tokens_per_s": round(tokens / step_s, 1), "peak_rss_gib": round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2), "matmul_gflops": round(gflops, 1),
            "floor_s": round(floor_s, 2), "x_floor": round(step_s / floor_s, 1), "steps": len(times)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=str(REPO / "resources/llm/smollm2-135m-instruct"))
    ap.add_argument("--data", default=str(REPO / "results/lastfm/data"))
    ap.add_argument("--dataset", default="lastfm")
    ap.add_argument("--embeddings", default=None, help="item_embeddings.parquet (default: a random table)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="plain:fp32,plain:bf16,zero2:fp32,zero2:bf16")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="plain")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--dropout", default="torch", choices=["torch", "packed"])
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args)), flush=True)
        return 0
    rows = []
    for spec in args.configs.split(","):
        mode, prec, drop = (spec.split(":") + ["torch"])[:3]
        cmd = [sys.executable, __file__, "--one", "--mode", mode, "--precision", prec, "--dropout", drop] + [
            x for k in ("base", "data", "dataset", "batch", "tokens", "steps", "threads")
            for x in (f"--{k}", str(getattr(args, k)))] + (["--embeddings", args.embeddings] if args.embeddings else [])
        res = subprocess.run(cmd, capture_output=True, text=True, env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ,
                                                                   "OMP_NUM_THREADS": str(args.threads)})
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
        if res.returncode or not line:
            print(f"{spec} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line[0][7:]))
        print(f"done {spec}: {rows[-1]}", file=sys.stderr, flush=True)
    print(f"\n{args.batch} x {args.tokens} tokens per step, {args.threads} threads, base {Path(args.base).name}\n")
    cols = ["mode", "precision", "dropout", "batch", "step_s", "tokens_per_s", "peak_rss_gib", "matmul_gflops", "floor_s", "x_floor"]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
