"""Evaluation speed: rows/s of generate and rank modes at batch sizes 1 / 8 / 32, and peak RSS.

Measured 2026-11-25 on this 2-core machine (shared: load average ~5 during the run), SmolLM2-135M-
Instruct zero-shot on 32 LastFM test rows, fp32, 2 threads, max_new_tokens 32:
generate 0.068 / 0.164 / 0.422 rows/s at batch 1 / 8 / 32 (peak RSS 1.0 / 1.3 / 1.9 GiB);
rank 0.142 / 0.195 rows/s at batch 1 / 8 (peak RSS 1.5 / 5.4 GiB); rank at batch 32 passed 10.8 GiB
RSS and was stopped.

Usage (from the repository root)::

    .venv/bin/python benchmarks/eval_speed.py [--base resources/llm/smollm2-135m-instruct]
        [--data results/lastfm/data] [--tuned results/lastfm/sasrec] [--rows 32] [--threads 2]

Uses the real base model folder when it exists (else a tiny random Llama built on the fly), the real
LastFM test split when it exists (else a synthetic one), and the tuned LLaRA model (hybrid prompts)
when ``--tuned`` holds llara/adapter + llara/projector.safetensors + seqrec/item_embeddings.parquet
(else the zero-shot base model). Each (mode, batch size) runs in its own process so that its peak
RSS is its own; a warm-up batch is excluded from the timing. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _one(args: argparse.Namespace) -> None:
    """Measure one (mode, batch size) in this process and print a JSON line."""
    import pyarrow.parquet as pq
    import torch

    from llara.evaluate.engine import LlaraEngine

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tuned = None if not args.tuned else Path(args.tuned)
    kw = {}
    if tuned is not None:
        kw = dict(adapter_dir=tuned / "llara" / "adapter", projector_path=tuned / "llara" / "projector.safetensors",
                  item_embeddings_path=tuned / "seqrec" / "item_embeddings.parquet")
    engine = LlaraEngine.load(args.base, Path(args.data) / "items.parquet", dataset=args.dataset, dtype=args.dtype,
                              representation="hybrid" if tuned else "plain", batch_size=args.batch_size,
                              rank_batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, **kw)
    load_s = time.perf_counter() - t0
    t = pq.read_table(Path(args.data) / "test.parquet")
    rows = [{"history": h, "candidates": c} for h, c in zip(t.column("history").to_pylist(),
                                                            t.column("candidates").to_pylist())]
    n = min(args.rows, len(rows) - args.batch_size)
    warm, rows = rows[:args.batch_size], rows[args.batch_size:args.batch_size + n]
    fn = engine.generate if args.mode == "generate" else engine.score
    fn(warm)
    t1 = time.perf_counter()
    fn(rows)
    dt = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"mode": args.mode, "batch_size": args.batch_size, "rows": n, "seconds": round(dt, 2),
                      "rows_per_s": round(n / dt, 3), "peak_rss_mib": round(rss), "load_s": round(load_s, 1),
                      "device": engine.device}))


def _tiny_setup(tmp: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_dataset

    from llara.evaluate.run import load_titles
    from llara.llm.testing import make_tiny_llama

    data = make_tiny_dataset(tmp / "data", n_users=120, n_candidates=20, n_items=60)
    base = make_tiny_llama(tmp / "base", list(load_titles(data / "items.parquet").values()))
    return base, data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="resources/llm/smollm2-135m-instruct")
    p.add_argument("--data", default="results/lastfm/data")
    p.add_argument("--dataset", default="lastfm")
    p.add_argument("--tuned", default="results/lastfm/sasrec")
    p.add_argument("--rows", type=int, default=32, help="timed rows per configuration")
    p.add_argument("--batch-sizes", default="1,8,32", help="generate-mode batch sizes")
    p.add_argument("--rank-batch-sizes", default="1,8",
                   help="rank-mode batch sizes (rows x 20 candidates each; 32 rows took > 10.8 GiB RSS with "
                        "SmolLM2-135M, more than a shared 23 GiB machine should give one benchmark)")
    p.add_argument("--modes", default="generate,rank")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        return _one(args)

    tmp = None
    base, data = Path(args.base), Path(args.data)
    what = f"base {base}"
    if not (base / "config.json").exists() or not (data / "test.parquet").exists():
        tmp = tempfile.TemporaryDirectory(prefix="eval_speed_")
        base, data = _tiny_setup(Path(tmp.name))
        what = "tiny random Llama (real base model or data not found)"
        args.tuned = ""
    tuned = Path(args.tuned) if args.tuned else None
    if tuned and not all((tuned / f).exists() for f in ("llara/adapter", "llara/projector.safetensors",
                                                        "seqrec/item_embeddings.parquet")):
        tuned = None
    print(f"# eval speed: {what}; {'tuned ' + str(tuned) + ' (hybrid)' if tuned else 'zero-shot (bare titles)'}; "
          f"data {data}; {args.threads} threads, {args.dtype}, max_new_tokens {args.max_new_tokens}", flush=True)
    results = []
    for mode in args.modes.split(","):
        sizes = args.batch_sizes if mode == "generate" else args.rank_batch_sizes
        for bs in (int(b) for b in sizes.split(",")):
            cmd = [sys.executable, __file__, "--one", "--mode", mode, "--batch-size", str(bs), "--base", str(base),
                   "--data", str(data), "--dataset", args.dataset, "--tuned", str(tuned or ""), "--rows",
                   str(args.rows), "--max-new-tokens", str(args.max_new_tokens), "--dtype", args.dtype,
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            if out.returncode != 0:
                print(f"{mode} bs={bs} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"  {mode:8s} bs={bs:<3d} {r['rows_per_s']:8.3f} rows/s  peak RSS {r['peak_rss_mib']} MiB", flush=True)
    print()
    print("| mode | batch size | rows | seconds | rows/s | peak RSS (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['mode']} | {r['batch_size']} | {r['rows']} | {r['seconds']} | {r['rows_per_s']} | {r['peak_rss_mib']} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
