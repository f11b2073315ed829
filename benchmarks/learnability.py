#!/usr/bin/env python3
"""Learnability: can the tuned LLM use what only the behavioural tokens carry?

    .venv/bin/python benchmarks/learnability.py [--base resources/llm/smollm2-135m-instruct]
        [--out results/learnability] [--items 400] [--genres 8] [--candidates 5] [--samples 8000]
        [--variants hybrid text_only id_only] [--threads 2] [--jobs 1]

A synthetic dataset (``llara.data.synthetic``): random, meaningless titles; items belong to hidden
genres; a row is a session of ``--history`` items of one genre and its target is another item of that
genre; the stored candidate sets hold exactly one item of the session's genre. Titles say nothing
about genres, so a text-only model must memorise ``--items`` title-to-genre facts from the
``--samples`` rows it sees; SASRec, trained on every training row, learns the genres and its item
embeddings carry them to the LLM through the projector. The variants are the pipeline's own
(``config/config.yaml`` tune.variants): LLaRA (hybrid prompt), text-only (TALLRec-style) and ID-only
(behavioural tokens, no titles: the answer's title must be learned from its token); hybrid and ID-only
train with p(hybrid) = 1 by default (``--curriculum linear``: the pipeline's tau/T),
each tuned by ``python -m llara.llm.train`` (DeepSpeed) and evaluated by ``llara.evaluate`` on every
stored candidate set of the held-out test rows; SASRec is scored on the same rows and sets. Short
prompts (raw format, one short template), 500 steps of 16 per variant: ~90 min of tuning for hybrid and
text-only side by side (``--jobs 2``) on 2 CPU cores, then ~9 min of evaluation each (docs/learnability.md).
Each stage's outputs are kept, and a tune resumes from its last checkpoint: a rerun goes on where it stopped.
``--out/settings.json`` records the arguments the outputs are built with; a rerun there with other ones stops
and names them (add variants freely; ``--threads``/``--jobs`` only change the speed).

Prints one table (HR@1 beside chance, paired differences with 95% bootstrap intervals) and writes
``learnability.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "A user chose {history}. Candidates: {candidates}. The next choice is"
VARIANTS = {"hybrid": {"representation": "hybrid", "curriculum": "linear"},   # LLaRA
            "text_only": {"representation": "text", "curriculum": "none"},   # TALLRec-style
            "id_only": {"representation": "id", "curriculum": "linear"}}     # behavioural tokens only


# the arguments that shape a cached output (data, SASRec, tuned variants, predictions); --variants may grow,
# --threads/--jobs only change the speed
SHAPING = ("base", "tiny", "modes", "items", "genres", "train_rows", "eval_rows", "history", "candidates", "sets",
           "samples", "epochs", "micro", "batch", "lr", "projector_lr", "min_lr", "curriculum", "seqrec_epochs", "seed",
           "data_seed")
# the ones that shape the data and SASRec alone (what benchmarks/gpu/prepare.py builds ahead for the device)
# (and the data's seed, data_seed(): --data-seed, or --seed when it is not given)
DATA_SHAPING = ("items", "genres", "train_rows", "eval_rows", "history", "candidates", "sets", "seqrec_epochs")


def data_seed(settings: dict[str, Any]) -> int | None:
    """The seed of the synthetic data and SASRec: ``data_seed`` when set, else ``seed`` (the tune's)."""
    return settings.get("seed") if settings.get("data_seed") is None else settings["data_seed"]


def previous_timings(out: Path) -> dict[str, float]:
    """The timings a previous run recorded in ``out/learnability.json`` (empty when there is none or it does
    not parse): a rerun reuses cached outputs and reports their original cost, not ~0 s."""
    try:
        t = json.loads((out / "learnability.json").read_text()).get("timings", {})
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return {}
    return {k: v for k, v in t.items() if isinstance(v, (int, float))} if isinstance(t, dict) else {}


def check_settings(out: Path, a: argparse.Namespace) -> None:
    """Record in ``out/settings.json`` the arguments its outputs are built with, or, when it holds outputs of
    other ones, stop naming each that differs: outputs are cached by file, so a rerun with, say, another
    ``--samples`` would otherwise report the old tunes under the new settings. Nothing is removed."""
    want = {k: str(Path(v).resolve()) if k == "base" and v else v for k, v in vars(a).items() if k in SHAPING}
    f = out / "settings.json"
    if f.is_file():
        try:
            have = json.loads(f.read_text())
        except json.JSONDecodeError:
            have = None
        if not isinstance(have, dict):
            raise SystemExit(f"learnability: {f} is not a settings record (a JSON object of arguments) this benchmark "
                             "wrote; pass another --out")
        diff = {k: (have.get(k), want[k]) for k in SHAPING if have.get(k) != want[k]}
        if diff:
            raise SystemExit(f"learnability: {out} holds outputs built with other settings ({f}): "
                             + "; ".join(f"--{k.replace('_', '-')} was {old!r}, now {new!r}" for k, (old, new) in diff.items())
                             + ". Pass another --out, or the settings it was built with.")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + ".tmp")
    tmp.write_text(json.dumps(want, indent=2) + "\n")
    tmp.replace(f)


def check_prebuilt(prebuilt: Path, a: argparse.Namespace) -> None:
    """Stop, naming each difference, when the data and SASRec built ahead in ``prebuilt`` (by
    ``benchmarks/gpu/prepare.py``, which records its arguments in ``prebuilt/settings.json``) were built with
    other data-shaping arguments than ``a``: a run on them would report, say, a ``--seed 43`` tune on seed-42
    data."""
    f = prebuilt / "settings.json"
    try:
        have = json.loads(f.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        have = None
    if not isinstance(have, dict):
        raise SystemExit(f"learnability: {f} is missing or not a settings record, so what the data and SASRec in "
                         f"{prebuilt} were built with is unknown; rebuild them with benchmarks/gpu/prepare.py")
    diff = {k: (have.get(k), getattr(a, k)) for k in DATA_SHAPING if have.get(k) != getattr(a, k)}
    if data_seed(have) != data_seed(vars(a)):
        diff["data_seed"] = (data_seed(have), data_seed(vars(a)))
    if diff:
        raise SystemExit(f"learnability: the data and SASRec in {prebuilt} were built with other settings: "
                         + "; ".join(f"--{k.replace('_', '-')} {old!r} there, {new!r} asked for"
                                     for k, (old, new) in diff.items())
                         + ". Drop those options, or rebuild with benchmarks/gpu/prepare.py after changing its "
                           "arguments.")


def _config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def build_data(out: Path, a: argparse.Namespace) -> Path:
    from llara.data.synthetic import write_genre_dataset

    data = out / "data"
    if not (data / "test.parquet").is_file():
        write_genre_dataset(data, n_items=a.items, n_genres=a.genres, n_train=a.train_rows, n_eval=a.eval_rows,
                            history=a.history, n_candidates=a.candidates, candidate_sets=a.sets,
                            seed=data_seed(vars(a)))
    return data


def build_sasrec(out: Path, data: Path, a: argparse.Namespace, seed: int | None = None, name: str = "sasrec") -> Path:
    """SASRec (the pipeline's settings, ``a.seqrec_epochs`` epochs) on ``data``, seeded with ``seed`` (default: the
    data's seed), in ``out/name``; cached."""
    from llara.seqrec.train import run_seqrec

    sas = out / name
    if not (sas / "metrics.json").is_file():
        hp = {**_config()["seqrec"]["sasrec"], "max_epochs": a.seqrec_epochs}
        run_seqrec("sasrec", items=data / "items.parquet", train=data / "train.parquet", valid=data / "valid.parquet",
                   test=data / "test.parquet", out_model=sas / "model.safetensors",
                   out_embeddings=sas / "item_embeddings.parquet", out_metrics=sas / "metrics.json", hparams=hp,
                   seed=data_seed(vars(a)) if seed is None else seed, threads=a.threads, dataset="synthetic",
                   progress=False)
    return sas


def tune(out: Path, data: Path, sas: Path, base: Path, variant: str, a: argparse.Namespace, threads: int) -> Path:
    """One variant through the tune stage's CLI (DeepSpeed, the pipeline's code) on ``threads`` CPU threads;
    cached."""
    from llara.llm.workflow import tune_settings

    d = out / variant
    if (d / "projector.safetensors").is_file():
        return d
    templates = out / "templates.yaml"
    variant_cfg = dict(VARIANTS[variant])
    if a.curriculum and variant_cfg["representation"] != "text":
        variant_cfg["curriculum"] = a.curriculum
    cfg = {**tune_settings(_config(), "synthetic", repo=REPO), **variant_cfg, "seed": a.seed,
           "prompt_format": "raw", "n_candidates": a.candidates, "max_train_samples": a.samples, "epochs": a.epochs,
           "micro_batch_size": a.micro, "effective_batch_size": a.batch, "lr": a.lr, "projector_lr": a.projector_lr,
           "min_lr": a.lr / 100 if a.min_lr is None else a.min_lr, "warmup_start_lr": a.lr / 100,
           "checkpoint_every": 10}
    cmd = [sys.executable, "-m", "llara.llm.train", "--config-json", json.dumps(cfg), "--base", str(base),
           "--items", str(data / "items.parquet"), "--train", str(data / "train.parquet"),
           "--embeddings", str(sas / "item_embeddings.parquet"), "--templates", str(templates),
           "--out-dir", str(d), "--ckpt-dir", str(out / f"{variant}_ckpt"), "--threads", str(threads),
           "--log", str(out / f"{variant}.log")]
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return d


def tune_all(out: Path, data: Path, sas: Path, base: Path, a: argparse.Namespace,
             after_tune: Callable[[str, Path], None] | None) -> dict[str, float]:
    """Tune every variant of ``a.variants``, up to ``a.jobs`` at a time (no more than are left to tune), the
    ``a.threads`` split among them: on 2 cores two one-thread tunes train more tokens/s in all than one
    two-thread tune (docs/learnability.md). ``after_tune(variant, folder)`` runs as each one ends (cached ones
    too). Returns the seconds each one tuned here took."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    (out / "templates.yaml").write_text(json.dumps({"datasets": {"synthetic": "synthetic"},
                                                    "domains": {"synthetic": [TEMPLATE]}}))
    pending = [v for v in a.variants if not (out / v / "projector.safetensors").is_file()]
    jobs = max(1, min(a.jobs, len(pending)))
    threads = max(1, a.threads // jobs)

    def one(variant: str) -> tuple[Path, float]:
        t = time.perf_counter()
        return tune(out, data, sas, base, variant, a, threads), round(time.perf_counter() - t, 1)

    seconds: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {pool.submit(one, v): v for v in a.variants}
        for done in as_completed(running):
            folder, took = done.result()
            if running[done] in pending:
                seconds[running[done]] = took
            if after_tune is not None:
                after_tune(running[done], folder)
    return seconds


def evaluate(out: Path, data: Path, sas: Path, base: Path, variant: str, a: argparse.Namespace) -> Path:
    from llara.evaluate.run import evaluate_llm

    d = out / variant
    if not (d / "predictions.parquet").is_file():
        evaluate_llm(base, data / "items.parquet", {"test": data / "test.parquet"}, d / "predictions.parquet",
                     d / "metrics.json", dataset="synthetic", method="ablation", variant=variant, seqrec="sasrec",
                     adapter_dir=d / "adapter", projector_path=d / "projector.safetensors",
                     item_embeddings_path=sas / "item_embeddings.parquet",
                     representation=VARIANTS[variant]["representation"], k=a.sets, modes=a.modes,
                     batch_size=16, rank_batch_size=8, max_new_tokens=12, seed=a.seed, threads=a.threads,
                     progress=False)
    return d / "predictions.parquet"


def loss_curve(train_log: Path, candidates: int, samples_per_step: int, windows: int = 10) -> dict[str, Any]:
    """The tune's answer-token loss as means over ``windows`` equal runs of steps, beside the *random-pick
    line*: the loss of a model that writes every title perfectly but picks one of ``candidates`` at random,
    ln(candidates) / answer tokens per sample. Each step trains on rows not seen before (one epoch), so the
    curve is a held-out one. ``below_from_step``: the first step of the earliest window from which every
    window's mean stays under the line (None when the last window is not under it)."""
    import math

    import numpy as np

    from llara.report.plots import read_train_log

    log = read_train_log(train_log)
    steps, loss = log["step"], log["loss"]
    if steps.size == 0:
        raise ValueError(f"{train_log}: no steps logged")
    line = math.log(candidates) / (float(log["answer_tokens"].sum()) / (steps.size * samples_per_step))
    parts = np.array_split(np.arange(steps.size), min(windows, steps.size))
    means = [round(float(loss[i].mean()), 4) for i in parts]
    under = [m < line for m in means]
    first = next((w for w in range(len(parts)) if all(under[w:])), None)
    return {"windows": [[int(steps[i[0]]), int(steps[i[-1]])] for i in parts], "mean_loss": means,
            "random_pick_loss": round(line, 4),
            "below_from_step": None if first is None else int(steps[parts[first][0]])}


def genre_separation(items: Path, embeddings: Path) -> float:
    """How far apart the backbone's item embeddings put the hidden genres (``items.source_id``): the mean
    squared distance of the genre centroids from the mean embedding over the mean squared distance of an item
    from its genre's centroid. What the projector has to carry; SASRec can rank every test row right with
    quite different values (0.88 and 1.63 for seeds 43 and 42 of the default data)."""
    import numpy as np
    import polars as pl

    genre = pl.read_parquet(items).select("item_id", "source_id")
    table = pl.read_parquet(embeddings).join(genre, on="item_id", how="inner")
    if table.height == 0:
        raise ValueError(f"{embeddings}: no item ids in common with {items}")
    x = np.stack(table["embedding"].to_numpy()).astype(np.float64)
    x -= x.mean(0)
    labels = table["source_id"].to_numpy()
    between, within = [], []
    for g in np.unique(labels):
        members = x[labels == g]
        centroid = members.mean(0)
        between.append(float(centroid @ centroid))
        within.extend(((members - centroid) ** 2).sum(1))
    return float(np.mean(between) / np.mean(within))


def summarise(out: Path, preds: dict[str, Any], metrics: dict[str, Any], a: argparse.Namespace,
              timings: dict[str, float]) -> dict[str, Any]:
    from llara.evaluate.compare import paired_difference
    from llara.io import write_json

    rows = []
    for name, m in metrics.items():
        for mode in a.modes if name != "SASRec" else ["rank"]:
            b = m["splits"]["test"][mode]
            rows.append({"method": name, "mode": mode, "hr@1": b["mean"]["hr@1"], "hr@1_ci": b["mean"].get("hr@1_ci"),
                         "per_set": [s["hr@1"] for s in b["per_set"]],
                         "valid_ratio": b["mean"].get("valid_ratio"), "strict_hr@1": b["mean"].get("strict_hr@1")})
    paired = []
    for name in (v for v in a.variants if v != "text_only"):
        for mode in a.modes:
            for base_name in ("text_only",) if "text_only" in preds else ():
                metric = "strict_hr@1" if mode == "generate" else "hr@1"
                r = paired_difference(preds[name], preds[base_name], "test", mode, mode, metric, seed=a.seed)
                paired.append({**r, "method_a": name, "method_b": base_name, "mode": mode})
    loss = {v: loss_curve(out / v / "train_log.csv", a.candidates, a.batch) for v in a.variants}
    separation = genre_separation(out / "data" / "items.parquet", out / "sasrec" / "item_embeddings.parquet")
    training = json.loads((out / "sasrec" / "metrics.json").read_text())["training"]
    result = {"settings": vars(a) | {"out": str(a.out), "base": str(a.base)}, "chance_hr@1": 1 / a.candidates,
              "chance_hr@5": min(1.0, 5 / a.candidates), "rows": rows, "paired": paired, "loss": loss,
              "sasrec_genre_separation": round(separation, 4),
              "sasrec_epochs": {"kept": training["best_epoch"], "run": training["epochs_run"]}, "timings": timings}
    write_json(result, out / "learnability.json")
    return result


def print_table(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(f"\nLearnability ({s['items']} items, {s['samples']} tuning samples x {s['epochs']} epoch(s), "
          f"{s['candidates']} candidates, {s['eval_rows']} test rows x {s['sets']} candidate sets); "
          f"chance HR@1 = {result['chance_hr@1']:.3f}")
    print("| method | mode | HR@1 mean [95% CI] | per set | ValidRatio | HR@1 (all rows) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in result["rows"]:
        ci = f" [{r['hr@1_ci'][0]:.3f}, {r['hr@1_ci'][1]:.3f}]" if r["hr@1_ci"] else ""
        vr = f"{r['valid_ratio']:.3f}" if r["valid_ratio"] is not None else ""
        st = f"{r['strict_hr@1']:.3f}" if r["strict_hr@1"] is not None else ""
        print(f"| {r['method']} | {r['mode']} | {r['hr@1']:.3f}{ci} | {', '.join(f'{x:.3f}' for x in r['per_set'])} | "
              f"{vr} | {st} |")
    if result["paired"]:
        print("\n| A - B (same rows and sets) | mode | metric | difference [95% CI] |")
        print("| --- | --- | --- | --- |")
        for p in result["paired"]:
            print(f"| {p['method_a']} - {p['method_b']} | {p['mode']} | {p['metric']} | {p['diff']:+.3f} "
                  f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] |")
    if result.get("loss"):
        curves = result["loss"]
        first = next(iter(curves.values()))
        print("\nTraining loss on the answer tokens, mean per window of steps (each step on rows not seen before); "
              "random pick: perfect titles, a random candidate (ln candidates / answer tokens per sample)")
        print("| variant | " + " | ".join(f"{w0}-{w1}" for w0, w1 in first["windows"]) + " | random pick | under it from step |")
        print("| --- |" + " --- |" * (len(first["windows"]) + 2))
        for v, c in curves.items():
            print(f"| {v} | " + " | ".join(f"{m:.2f}" for m in c["mean_loss"]) +
                  f" | {c['random_pick_loss']:.2f} | {c['below_from_step'] if c['below_from_step'] is not None else '-'} |")
    if "sasrec_genre_separation" in result:
        kept = result.get("sasrec_epochs", {})
        print(f"\nSASRec genre separation (between / within genre spread of its item embeddings): "
              f"{result['sasrec_genre_separation']:.3f}" +
              (f" (kept epoch {kept['kept']} of {kept['run']} run)" if kept else ""))
    print(f"\ntimings (s): {result['timings']}")


def run(a: argparse.Namespace, after_tune: Callable[[str, Path], None] | None = None) -> dict[str, Any]:
    """Build the data and SASRec, tune (``a.jobs`` at a time) and then evaluate each variant (all cached), print
    and return the table; ``after_tune(variant, folder)`` runs as each variant's tuning ends, before any is
    evaluated."""
    import pyarrow.parquet as pq

    from llara.evaluate.seqrec_ranker import seqrec_predictions

    if a.jobs < 1 or a.threads < 1:
        raise SystemExit(f"learnability: --jobs and --threads must be at least 1; got --jobs {a.jobs}, "
                         f"--threads {a.threads}")
    out = a.out
    check_settings(out, a)
    # seconds of the work this run did, over those a previous run into ``out`` recorded (cached steps keep theirs)
    timings: dict[str, float] = dict(previous_timings(out))
    t, built = time.perf_counter(), (out / "sasrec" / "metrics.json").is_file()
    data = build_data(out, a)
    sas = build_sasrec(out, data, a)
    if not built:
        timings["data_and_sasrec"] = round(time.perf_counter() - t, 1)
    if a.tiny:
        from llara.llm.data import load_titles
        from llara.llm.testing import make_tiny_llama

        base = out / "tiny_llama"
        if not (base / "config.json").is_file():
            make_tiny_llama(base, load_titles(data / "items.parquet"), hidden=a.tiny)
    else:
        base = a.base
    preds, metrics = {}, {}
    sp = out / "sasrec_ranker"
    if not (sp / "predictions.parquet").is_file():
        seqrec_predictions(sas / "model.safetensors", data / "items.parquet", {"test": data / "test.parquet"},
                           sp / "predictions.parquet", sp / "metrics.json", seed=data_seed(vars(a)))
    preds["SASRec"] = pq.read_table(sp / "predictions.parquet")
    metrics["SASRec"] = json.loads((sp / "metrics.json").read_text())
    for v, s in tune_all(out, data, sas, base, a, after_tune).items():
        timings[f"{v}_tune"] = s
    for v in a.variants:
        t, cached = time.perf_counter(), (out / v / "predictions.parquet").is_file()
        p = evaluate(out, data, sas, base, v, a)
        if not cached:
            timings[f"{v}_evaluate"] = round(time.perf_counter() - t, 1)
        preds[v] = pq.read_table(p)
        metrics[v] = json.loads((p.parent / "metrics.json").read_text())
    result = summarise(out, preds, metrics, a, timings)
    print_table(result)
    return result


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "results" / "learnability")
    ap.add_argument("--base", type=Path, default=REPO / "resources" / "llm" / "smollm2-135m-instruct",
                    help="base LLM folder (snakemake resources/llm/smollm2-135m-instruct builds it)")
    ap.add_argument("--tiny", type=int, default=0, metavar="HIDDEN",
                    help="use a tiny random Llama of this hidden size instead of --base (tests)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--modes", nargs="+", default=["rank", "generate"], choices=["rank", "generate"])
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--genres", type=int, default=8)
    ap.add_argument("--train-rows", type=int, default=20000, help="rows SASRec trains on")
    ap.add_argument("--eval-rows", type=int, default=100)
    ap.add_argument("--history", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--sets", type=int, default=5)
    ap.add_argument("--samples", type=int, default=8000, help="tuning samples the LLM sees per epoch")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--micro", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--projector-lr", type=float, default=1e-2,
                    help="the projector's peak lr (tune.projector_lr; the authors use one lr for both)")
    ap.add_argument("--min-lr", type=float, default=None,
                    help="cosine floor (default lr/100); = --lr gives a constant lr after the warm-up")
    ap.add_argument("--curriculum", choices=["linear", "hybrid_only"], default="hybrid_only",
                    help="curriculum of the hybrid and ID-only variants; linear is the pipeline's (p = tau/T), which "
                         "in a run this short leaves few behavioural-token steps at a useful learning rate")
    ap.add_argument("--seqrec-epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42,
                    help="seed of the tunes (LoRA and projector initialisation, row order) and, unless --data-seed "
                         "is given, of the synthetic data and SASRec")
    ap.add_argument("--data-seed", type=int, default=None,
                    help="seed of the synthetic data and SASRec alone (default: --seed), to cross the data's draw "
                         "with the tune's")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads in all (split among --jobs tunes)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="variants tuned at once, each on threads/jobs threads (the evaluations follow, one at a time)")
    return ap


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    run(parser().parse_args())
