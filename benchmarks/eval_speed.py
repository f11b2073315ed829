"""Evaluation speed before vs after the fast inference paths (issue #27): rows/s of generate, rank and both modes.

"before" runs ``llara`` as of commit ``--before`` (default 2782e3e, the commit before this work), extracted with
``git archive`` into a temporary folder and put first on PYTHONPATH; "after" runs this working tree. Each
(dtype, mode, implementation) runs in its own process (its peak RSS is its own), on the same rows, one after
the other, so both sides see the same machine. Modes: ``generate`` (``LlaraEngine.generate``), ``rank``
(``LlaraEngine.score``) and ``both`` (what an evaluation with both modes costs: ``generate`` then ``score``
before; ``generate_and_score``, one prompt forward for both, after). A warm-up call on 2 rows is not timed.
Besides wall-clock rows/s it reports the process CPU seconds (all threads), steadier on a shared machine,
and whether the after side gives the same answers (generate: identical strings) and scores (rank: max
absolute difference, and the share of rows with the same best candidate).

Measured 2026-12-06 on this 2-core machine (Xeon with AVX512-BF16/AMX, shared; load ~1), SmolLM2-135M-Instruct
zero-shot, first 32 LastFM test rows, 2 threads, generate batch 32, rank batch 4 (rows/s before -> after):
fp32 generate 2.23 -> 2.57 (1.15x), rank 1.29 -> 2.90 (2.26x), both 0.83 -> 1.96 (2.36x); bf16 generate
5.75 -> 6.29 (1.09x), rank 3.08 -> 6.96 (2.26x), both 2.02 -> 4.32 (2.14x). fp32 on all 122 rows: rank
1.37 -> 3.11, both 0.88 -> 2.23, generate 2.39 -> 3.13. Answers identical; fp32 scores within 1.2e-4.

Usage (from the repository root)::

    .venv/bin/python benchmarks/eval_speed.py [--base resources/llm/smollm2-135m-instruct]
        [--data results/lastfm/data] [--tuned results/lastfm/sasrec] [--rows 32] [--threads 2]
        [--dtypes float32,bfloat16] [--modes generate,rank,both] [--before 2782e3e]
        [--batch-size 32] [--rank-batch-size 4] [--sweep-batch-sizes 8,16,32,64] [--sweep-rank-batch-sizes 1,4,16]

Uses the real base model folder when it exists (else a tiny random Llama built on the fly), the first
``--rows`` rows of the real LastFM test split with candidate set 0 when it exists (else a synthetic split),
and the tuned LLaRA model (hybrid prompts) when ``--tuned`` holds llara/adapter + llara/projector.safetensors +
seqrec/item_embeddings.parquet (else the zero-shot base model). ``--sweep-batch-sizes`` /
``--sweep-rank-batch-sizes`` add after-only generate / rank rows at those batch sizes. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rows(data: Path, n: int) -> list[dict]:
    import pyarrow.parquet as pq

    t = pq.read_table(data / "test.parquet").slice(0, n)
    return [{"history": h, "candidates": cs[0]} for h, cs in zip(t.column("history").to_pylist(),
                                                                  t.column("candidate_sets").to_pylist())]


def _one(args: argparse.Namespace) -> None:
    """Measure one (implementation, dtype, mode) in this process; write a JSON file."""
    import numpy as np
    import torch

    import llara
    from llara.evaluate.engine import LlaraEngine

    torch.set_num_threads(args.threads)
    tuned = Path(args.tuned) if args.tuned else None
    kw = {}
    if tuned is not None:
        kw = dict(adapter_dir=tuned / "llara" / "adapter", projector_path=tuned / "llara" / "projector.safetensors",
                  item_embeddings_path=tuned / "seqrec" / "item_embeddings.parquet")
    t0 = time.perf_counter()
    engine = LlaraEngine.load(args.base, Path(args.data) / "items.parquet", dataset=args.dataset, dtype=args.dtype,
                              representation="hybrid" if tuned else "plain", batch_size=args.batch_size,
                              rank_batch_size=args.rank_batch_size, max_new_tokens=args.max_new_tokens, **kw)
    load_s = time.perf_counter() - t0
    rows = _rows(Path(args.data), args.rows)

    def run(rs):
        if args.mode == "generate":
            return engine.generate(rs), None
        if args.mode == "rank":
            return None, engine.score(rs)
        if hasattr(engine, "generate_and_score"):
            return engine.generate_and_score(rs)
        return engine.generate(rs), engine.score(rs)

    run(rows[:2])  # warm-up
    c0, t1 = time.process_time(), time.perf_counter()
    outs, scores = run(rows)
    dt, cpu = time.perf_counter() - t1, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    res = {"mode": args.mode, "dtype": args.dtype, "batch_size": args.batch_size, "rows": len(rows),
           "seconds": round(dt, 2), "cpu_seconds": round(cpu, 2), "rows_per_s": round(len(rows) / dt, 3),
           "peak_rss_mib": round(rss), "load_s": round(load_s, 1), "device": engine.device,
           "llara": str(Path(llara.__file__).parent), "outputs": outs,
           "scores": None if scores is None else np.asarray(scores, dtype=float).tolist()}
    Path(args.out).write_text(json.dumps(res))


def _tiny_setup(tmp: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_dataset

    from llara.evaluate.run import load_titles
    from llara.llm.testing import make_tiny_llama

    data = make_tiny_dataset(tmp / "data", n_users=120, n_candidates=20, n_items=60)
    base = make_tiny_llama(tmp / "base", list(load_titles(data / "items.parquet").values()))
    return base, data


def _before_tree(rev: str, dest: Path) -> Path:
    """``src/llara`` (and the schema its symlink points to) as of ``rev``, extracted under ``dest``."""
    blob = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src/llara", "workflow/schemas"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def _compare(before: dict | None, after: dict) -> str:
    """How the after side's results compare with the before side's."""
    import numpy as np

    if before is None:
        return ""
    parts = []
    if after["outputs"] is not None and before["outputs"] is not None:
        same = sum(a == b for a, b in zip(before["outputs"], after["outputs"]))
        parts.append(f"answers {same}/{len(after['outputs'])} identical")
    if after["scores"] is not None and before["scores"] is not None:
        a, b = np.asarray(after["scores"]), np.asarray(before["scores"])
        parts.append(f"scores max abs diff {np.abs(a - b).max():.1e}, best candidate same "
                     f"{int((a.argmax(1) == b.argmax(1)).sum())}/{len(a)}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="resources/llm/smollm2-135m-instruct")
    p.add_argument("--data", default="results/lastfm/data")
    p.add_argument("--dataset", default="lastfm")
    p.add_argument("--tuned", default="results/lastfm/sasrec")
    p.add_argument("--rows", type=int, default=32, help="timed rows (the split's first rows, candidate set 0)")
    p.add_argument("--modes", default="generate,rank,both")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--batch-size", type=int, default=32, help="generation batch (config evaluate.batch_size)")
    p.add_argument("--rank-batch-size", type=int, default=4, help="config evaluate.rank_batch_size")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--before", default="2782e3e", help="git revision of the before side ('' for after only)")
    p.add_argument("--sweep-batch-sizes", default="", help="also time after-side generate at these batch sizes")
    p.add_argument("--sweep-rank-batch-sizes", default="", help="also time after-side rank at these batch sizes")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        return _one(args)

    tmp = tempfile.TemporaryDirectory(prefix="eval_speed_")
    base, data = Path(args.base), Path(args.data)
    what = f"base {base}"
    if not (base / "config.json").exists() or not (data / "test.parquet").exists():
        base, data = _tiny_setup(Path(tmp.name))
        what = "tiny random Llama (real base model or data not found)"
        args.tuned = ""
    tuned = Path(args.tuned) if args.tuned else None
    if tuned and not all((tuned / f).exists() for f in ("llara/adapter", "llara/projector.safetensors",
                                                        "seqrec/item_embeddings.parquet")):
        tuned = None
    before_src = _before_tree(args.before, Path(tmp.name) / "before") if args.before else None
    n_rows = len(_rows(data, args.rows))
    print(f"# eval speed: {what}; {'tuned ' + str(tuned) + ' (hybrid)' if tuned else 'zero-shot (bare titles)'}; "
          f"data {data}, first {n_rows} test rows, candidate set 0; {args.threads} threads; generate batch "
          f"{args.batch_size}, rank batch {args.rank_batch_size}, max_new_tokens {args.max_new_tokens}; "
          f"before = {args.before or '-'}, after = working tree", flush=True)

    def measure(impl: str, dtype: str, mode: str, batch_size: int, rank_batch_size: int) -> dict | None:
        out = Path(tmp.name) / f"{impl}_{dtype}_{mode}_{batch_size}_{rank_batch_size}.json"
        cmd = [sys.executable, __file__, "--one", "--mode", mode, "--dtype", dtype, "--out", str(out),
               "--base", str(base), "--data", str(data), "--dataset", args.dataset, "--tuned", str(tuned or ""),
               "--rows", str(args.rows), "--batch-size", str(batch_size), "--rank-batch-size",
               str(rank_batch_size), "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if impl == "before":
            env["PYTHONPATH"] = os.pathsep.join([str(before_src)] + [x for x in [env.get("PYTHONPATH")] if x])
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            print(f"{impl} {dtype} {mode} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
            return None
        res = json.loads(out.read_text())
        print(f"  {impl:6s} {dtype:8s} {mode:8s} batch {batch_size}/{rank_batch_size} {res['rows_per_s']:7.3f} rows/s  "
              f"{res['cpu_seconds']:7.1f} CPU s  peak RSS {res['peak_rss_mib']} MiB  ({res['llara']})", flush=True)
        return res

    def sizes(text: str) -> list[int]:
        return [int(b) for b in text.split(",") if b.strip()]

    bs, rbs = args.batch_size, args.rank_batch_size
    label = {"generate": str(bs), "rank": str(rbs), "both": f"{bs} / {rbs}"}
    table = []
    for dtype in args.dtypes.split(","):
        for mode in [x for x in args.modes.split(",") if x]:
            before = measure("before", dtype, mode, bs, rbs) if before_src else None
            after = measure("after", dtype, mode, bs, rbs)
            if after is not None:
                table.append((mode, dtype, label[mode], before, after, _compare(before, after)))
        for mode, key in (("generate", args.sweep_batch_sizes), ("rank", args.sweep_rank_batch_sizes)):
            for b in sizes(key):
                after = measure("after", dtype, mode, b if mode == "generate" else bs, b if mode == "rank" else rbs)
                if after is not None:
                    table.append((mode, dtype, str(b), None, after, "batch-size sweep"))
    print()
    print("| mode | dtype | batch (generate / rank) | rows | before rows/s | after rows/s | speed-up | before CPU s | after CPU s | "
          "CPU speed-up | peak RSS MiB before / after | after vs before |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for mode, dtype, batch, b, a, cmp in table:
        speed = f"{a['rows_per_s'] / b['rows_per_s']:.2f}x" if b else "-"
        cpu_speed = f"{b['cpu_seconds'] / a['cpu_seconds']:.2f}x" if b else "-"
        print(f"| {mode} | {dtype} | {batch} | {a['rows']} | {b['rows_per_s'] if b else '-'} | {a['rows_per_s']} | {speed} | "
              f"{b['cpu_seconds'] if b else '-'} | {a['cpu_seconds']} | {cpu_speed} | "
              f"{b['peak_rss_mib'] if b else '-'} / {a['peak_rss_mib']} | {cmp} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
