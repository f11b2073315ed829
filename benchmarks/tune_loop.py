#!/usr/bin/env python3
"""The real tune loop before and after a change, on the same machine in one run: tokens/s, padding, loss.

    .venv/bin/python benchmarks/tune_loop.py [--before 2782e3e] [--steps 24] [--runs before:4,after:4,after:auto]

Each run is ``python -m llara.llm.train`` of the default config's tune slice (config/config.yaml: LastFM,
SmolLM2-135M-Instruct, 16 samples a step, precision auto) for ``--steps`` optimizer steps, in its own process,
one after the other. ``before`` runs the package of commit ``--before`` (checked out with ``git worktree``
under /tmp; the commit before the throughput work of issue #27), ``after`` this checkout; the number after the
colon is ``tune.micro_batch_size``. Inputs are this checkout's results/lastfm data, SASRec item embeddings,
prompts.yaml and base model (``snakemake --cores 2 results/lastfm/sasrec/metrics.json`` builds them).

Printed: per run the median real (non-padding) tokens/s over steps 2..N (step 1 warms up), its ratio to the
first run, the real/padded token ratio (``pad_ratio``, logged by the new loop; for the old loop computed here from its
micro-batches in the step's order), the loss at the last step and the mean over the last 8 steps, and the
largest per-step loss difference to the first run. Writes the table and the per-step losses to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tune_settings(steps: int, micro: str) -> dict:
    """The default config's tune slice for ``steps`` steps and micro-batch ``micro`` (int or ``auto``)."""
    import yaml

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    t = {k: v for k, v in cfg["tune"].items() if k not in ("overrides", "variants")}
    t.update(dataset="lastfm", seed=cfg.get("seed", 42), prompt_format=cfg["llm"].get("prompt_format", "auto"),
             max_steps=steps, checkpoint_every=10 ** 6, micro_batch_size=int(micro) if micro.isdigit() else micro)
    return t


def worktree(ref: str) -> Path:
    """A checkout of ``ref`` under /tmp (made once with ``git worktree add --detach``)."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"llara-before-{sha}"
    if not (path / "src" / "llara").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=REPO, check=True,
                       capture_output=True)
    return path


def run_one(src: Path, settings: dict, out: Path, threads: int) -> dict:
    """One tune in its own process with ``src`` first on the path; returns its log rows and wall time."""
    data = REPO / "results" / "lastfm"
    cmd = [sys.executable, "-m", "llara.llm.train", "--config-json", json.dumps(settings),
           "--base", str(REPO / "resources" / "llm" / "smollm2-135m-instruct"),
           "--items", str(data / "data" / "items.parquet"), "--train", str(data / "data" / "train.parquet"),
           "--embeddings", str(data / "sasrec" / "seqrec" / "item_embeddings.parquet"),
           "--templates", str(data / "prompts.yaml"), "--out-dir", str(out), "--ckpt-dir", str(out) + "_ckpt",
           "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if proc.returncode:
            err.seek(0)
            raise SystemExit(f"tune failed ({src}):\n{err.read()[-3000:]}")
    with open(out / "train_log.csv") as f:
        rows = [{k: float(v) if v not in ("", None) else None for k, v in r.items()} for r in csv.DictReader(f)]
    return {"rows": rows, "wall_s": wall, "peak_rss_gib": usage.ru_maxrss / 2 ** 20}


def ungrouped_pad_ratio(settings: dict) -> float:
    """Real / padded tokens of the old loop's micro-batches (the step's order, not grouped by length), computed
    with this checkout's tokenisation of the same samples (``group_by_length=False`` reproduces that order)."""
    from transformers import AutoTokenizer

    from llara.llm.batches import build_step
    from llara.llm.data import Schedule, load_titles, load_train_rows
    from llara.llm.prompts import PromptEncoder, load_templates, resolve_prompt_format

    data = REPO / "results" / "lastfm"
    titles = load_titles(data / "data" / "items.parquet")
    tok = AutoTokenizer.from_pretrained(str(REPO / "resources" / "llm" / "smollm2-135m-instruct"))
    templates = load_templates("lastfm", data / "prompts.yaml")
    enc = PromptEncoder(tok, titles, templates, resolve_prompt_format(settings["prompt_format"], tok),
                        settings["answer_format"], settings["token_position"])
    rows = load_train_rows(data / "data" / "train.parquet", len(titles), settings["max_train_samples"],
                           settings["seed"])
    sched = Schedule(rows, len(titles), settings["seed"], settings["epochs"], settings["effective_batch_size"],
                     settings["n_candidates"], len(templates), settings["curriculum"], settings["representation"],
                     settings["max_steps"])
    real = padded = 0
    for step in range(1, sched.total_steps + 1):
        sb = build_step(enc, sched.step_samples(step), step, settings["micro_batch_size"], 0, 1, group_by_length=False)
        real, padded = real + sb.real_tokens, padded + sb.padded_tokens
    return real / padded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="2782e3e", help="git ref of the 'before' code")
    ap.add_argument("--steps", type=int, default=24, help="optimizer steps per run (the default config has 24)")
    ap.add_argument("--runs", default="before:4,after:4,after:auto", help="code:micro_batch_size, comma-separated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "tune_loop.json"))
    a = ap.parse_args(argv)
    runs = [tuple(r.split(":")) for r in a.runs.split(",")]
    bad = [r for r in runs if len(r) != 2 or r[0] not in ("before", "after")]
    if bad:
        ap.error(f"--runs: expected code:micro with code before|after, found {bad}")
    print(f"{len(runs)} runs of {a.steps} steps; roughly {len(runs) * (30 + a.steps * 12) / 60:.0f} min on 2 cores "
          f"with bf16 (twice that in fp32)", file=sys.stderr, flush=True)
    trees = {"after": REPO / "src"}
    if any(code == "before" for code, _ in runs):
        trees["before"] = worktree(a.before) / "src"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (code, micro) in enumerate(runs):
            r = run_one(trees[code], tune_settings(a.steps, micro), Path(tmp) / f"run{i}", a.threads)
            rows = r["rows"]
            timed = rows[1:] or rows
            res = {"code": code, "micro": micro, "steps": len(rows), "wall_s": round(r["wall_s"], 1),
                   "peak_rss_gib": round(r["peak_rss_gib"], 2),
                   "tokens_per_s": round(statistics.median(x["tokens_per_s"] for x in timed), 1),
                   "step_s": round(statistics.median(x["step_s"] for x in timed), 2),
                   "pad_ratio": round(statistics.mean(x["pad_ratio"] for x in rows) if rows[0].get("pad_ratio")
                                      is not None else ungrouped_pad_ratio(tune_settings(a.steps, micro)), 4),
                   "loss": [x["loss"] for x in rows]}
            results.append(res)
            print(f"done {code}:{micro}: {res['tokens_per_s']} tokens/s, wall {res['wall_s']} s", file=sys.stderr,
                  flush=True)
    first = results[0]
    lines = [f"{a.steps} steps x 16 samples, {a.threads} threads, default config; 'before' = {a.before}", "",
             "| code | micro | tokens/s | x first | step s | real/padded | peak RSS GiB | loss last | loss last 8 | max abs loss diff to first |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        diff = max(abs(x - y) for x, y in zip(r["loss"], first["loss"]))
        lines.append(f"| {r['code']} | {r['micro']} | {r['tokens_per_s']} | {r['tokens_per_s'] / first['tokens_per_s']:.2f} "
                     f"| {r['step_s']} | {r['pad_ratio']} | {r['peak_rss_gib']} | {r['loss'][-1]:.4f} "
                     f"| {statistics.mean(r['loss'][-8:]):.4f} | {diff:.4f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"before": a.before, "steps": a.steps, "threads": a.threads, "runs": results,
                               "table": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
