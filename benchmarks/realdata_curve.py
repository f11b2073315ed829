#!/usr/bin/env python3
"""Real-data learning curve: LLaRA variants on LastFM against chance, text-only, SASRec and the last-item scorer.

    .venv/bin/python benchmarks/realdata_curve.py [--config config/config.yaml] [--variants hybrid text_only id_only]
        [--samples 600 1200 2400] [--out results/realdata_curve] [--csv benchmarks/results/realdata_curve.csv]
        [--threads 2] [--jobs 2] [--sets 5] [--probe-every 30] [--probe-rows 48]
        [--recipe NAME --tune config/recipes/small-llm.yaml | '{"lr": 2e-3, ...}']

Needs the pipeline's LastFM data, SASRec and base LLM (``snakemake --cores 2
results/lastfm/sasrec/seqrec/item_embeddings.parquet resources/llm/smollm2-135m-instruct results/lastfm/prompts.yaml``).
Each point (variant, sample budget) is one tune from scratch with the config's tune settings (the recipe; the
variants are the config's: ``hybrid`` = ``tune``, ``text_only`` / ``id_only`` = ``tune.variants``; ``--tune``
replaces keys of the ``tune`` section below the variants, e.g. a recipe not yet in the config), a
``max_train_samples`` budget and the in-training probe on valid rows (``probe.csv``), then a rank-mode
evaluation on every stored candidate set of the test rows. Per point it reports HR@1 with its row-bootstrap
95% CI and paired differences (same rows and sets) against SASRec, the last-item embedding scorer and the
text-only variant of the same budget; chance is 1/20.

Points live in ``--out/RECIPE/VARIANT/nSAMPLES/``; ``--recipe`` names the tune settings (``default``: the config's
as they are). Prints its time estimate first. Every stage is cached there (a tune resumes from its last checkpoint,
so an interrupted run goes on where it stopped); each point's settings are recorded and a rerun with other
ones stops, naming them. ``--csv`` (one row per finished point, of every recipe run so far) and a plot beside it
are rewritten after every point.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASET = "lastfm"
CSV_COLUMNS = ["recipe", "variant", "train_samples", "steps", "lr", "projector_lr", "curriculum", "answer_format",
               "projector_scale", "token_position", "representation", "tune_s", "eval_s", "rows", "sets", "chance_hr1", "hr1_mean", "hr1_ci_low",
               "hr1_ci_high", "hr5_mean", "valid_probe_hr1", "paired_vs_sasrec", "paired_vs_sasrec_ci_low",
               "paired_vs_sasrec_ci_high", "paired_vs_last_item", "paired_vs_last_item_ci_low",
               "paired_vs_last_item_ci_high", "paired_vs_text", "paired_vs_text_ci_low", "paired_vs_text_ci_high"]
INT_COLUMNS = {"train_samples", "steps", "rows", "sets"}
TOKENS_PER_SAMPLE = 215      # LastFM chat prompt + answer, SmolLM2 tokenizer (measured on the first runs)
TOKENS_PER_S_THREAD = 215    # bf16 LoRA step on one AMX / AVX512-BF16 core; fp32 on AVX2 is about half
EVAL_S_PER_ROW = 0.9         # rank mode, 20 candidates, one such core


def load_tune(arg: str) -> dict[str, Any]:
    """``--tune``: a YAML file of tune keys (e.g. ``config/recipes/small-llm.yaml``) or a JSON object."""
    import yaml

    if arg.lstrip().startswith("{"):
        value = json.loads(arg)
    else:
        path = Path(arg)
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{arg}: neither a JSON object nor a YAML file of tune keys")
        value = yaml.safe_load(path.read_text())
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{arg}: expected a mapping of tune keys, found {type(value).__name__}")
    return value


def variant_settings(config: dict[str, Any], variant: str, tune: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tune settings of ``variant`` (``hybrid``: the config's tune section; others: ``tune.variants``), with
    ``tune`` replacing keys of the tune section first (the variants still apply on top)."""
    from llara.llm.workflow import tune_settings

    config = {**config, "tune": {**config["tune"], **(tune or {})}}
    return tune_settings(config, DATASET, None if variant == "hybrid" else variant, repo=str(REPO))


def point_settings(config: dict[str, Any], variant: str, samples: int, a: argparse.Namespace) -> dict[str, Any]:
    """The tune config of one point: the variant's settings, ``samples`` training rows, one epoch, the probe on."""
    s = variant_settings(config, variant, a.tune)
    s.update(max_train_samples=samples, epochs=1, max_steps=None, probe_every=a.probe_every,
             probe_rows=a.probe_rows, checkpoint_every=10)
    return s


def check_recorded(path: Path, want: dict[str, Any]) -> None:
    """Record ``want`` in ``path``, or stop naming the keys that differ from what the folder was built with (a key
    recorded before it existed counts as its default)."""
    if path.is_file():
        from llara.llm.train import TuneConfig

        recorded, defaults = json.loads(path.read_text()), TuneConfig().to_dict()
        have = {**{k: defaults[k] for k in want if k not in recorded and k in defaults}, **recorded}
        diff = {k: (have.get(k), want.get(k)) for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)}
        if diff:
            raise SystemExit(f"realdata_curve: {path.parent} was built with other settings: "
                             + "; ".join(f"{k}: {o!r} there, {n!r} now" for k, (o, n) in diff.items())
                             + ". Pass another --out.")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(want, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


class Inputs:
    """The pipeline's artefacts this benchmark reads (checked up front)."""

    def __init__(self, root: Path, llm: str):
        self.data = root / "results" / DATASET / "data"
        self.sasrec = root / "results" / DATASET / "sasrec" / "seqrec"
        self.prompts = root / "results" / DATASET / "prompts.yaml"
        self.base = root / "resources" / "llm" / llm
        need = [self.data / "items.parquet", self.data / "train.parquet", self.data / "valid.parquet",
                self.data / "test.parquet", self.sasrec / "model.safetensors", self.sasrec / "item_embeddings.parquet",
                self.prompts, self.base / "config.json"]
        missing = [str(p.relative_to(root)) for p in need if not p.exists()]
        if missing:
            raise SystemExit("realdata_curve: missing " + ", ".join(missing) + "; build them with: snakemake --cores 2 "
                             f"results/{DATASET}/sasrec/seqrec/item_embeddings.parquet resources/llm/{llm} "
                             f"results/{DATASET}/prompts.yaml")


def tune(point: Path, settings: dict[str, Any], inp: Inputs, threads: int) -> float:
    """One tune through the stage's CLI (DeepSpeed, resumable); cached. Returns the seconds it took here."""
    out = point / "llara"
    if (out / "probe.csv").is_file():
        return 0.0
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "llara.llm.train", "--config-json", json.dumps(settings), "--base", str(inp.base),
           "--items", str(inp.data / "items.parquet"), "--train", str(inp.data / "train.parquet"),
           "--embeddings", str(inp.sasrec / "item_embeddings.parquet"), "--templates", str(inp.prompts),
           "--valid", str(inp.data / "valid.parquet"), "--out-dir", str(out), "--ckpt-dir", str(point / "ckpt"),
           "--threads", str(threads), "--log", str(point / "tune.log")]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
    with open(point / "tune.stderr", "a") as err:
        subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=err, stderr=err)
    return round(time.perf_counter() - t, 1)


def evaluate(point: Path, settings: dict[str, Any], inp: Inputs, a: argparse.Namespace) -> float:
    """Rank mode on every stored test set, in the training precision (bf16 on CPUs with native bf16); cached."""
    from llara.evaluate.run import evaluate_llm
    from llara.llm.model import resolve_precision

    if (point / "predictions.parquet").is_file():
        return 0.0
    t = time.perf_counter()
    dtype = "bfloat16" if resolve_precision("auto", False) == "bf16" else "float32"
    evaluate_llm(inp.base, inp.data / "items.parquet", {"test": inp.data / "test.parquet"},
                 point / "predictions.parquet", point / "metrics.json", dataset=DATASET, method="ablation",
                 variant=point.parent.name, seqrec="sasrec", adapter_dir=point / "llara" / "adapter",
                 projector_path=point / "llara" / "projector.safetensors",
                 item_embeddings_path=inp.sasrec / "item_embeddings.parquet",
                 representation=settings["representation"], k=a.sets, modes=["rank"], rank_batch_size=4,
                 dtype=dtype, seed=a.seed, threads=a.threads, progress=False)
    return round(time.perf_counter() - t, 1)


def references(inp: Inputs, out: Path, a: argparse.Namespace) -> dict[str, Path]:
    """SASRec's and the last-item scorer's predictions on the same test rows and sets (cached)."""
    from llara.evaluate.reference import reference_predictions
    from llara.evaluate.seqrec_ranker import seqrec_predictions

    split = {"test": inp.data / "test.parquet"}
    files = {"sasrec": out / "sasrec_ranker" / "predictions.parquet",
             "last_item": out / "last_item" / "predictions.parquet"}
    if not files["sasrec"].is_file():
        seqrec_predictions(inp.sasrec / "model.safetensors", inp.data / "items.parquet", split, files["sasrec"],
                           files["sasrec"].with_name("metrics.json"), seed=a.seed)
    if not files["last_item"].is_file():
        reference_predictions("last_item", inp.data / "items.parquet", split, files["last_item"],
                              files["last_item"].with_name("metrics.json"),
                              embeddings_path=inp.sasrec / "item_embeddings.parquet", seed=a.seed)
    return files


def final_probe(point: Path) -> float | None:
    with open(point / "llara" / "probe.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["hr1"]) if rows else None


def summarise(point: Path, variant: str, samples: int, settings: dict[str, Any], refs: dict[str, Path],
              text_point: Path | None, timings: dict[str, float], a: argparse.Namespace) -> dict[str, Any]:
    """One CSV row: HR@1 with its CI over the stored sets and rows, and the paired differences."""
    import pyarrow.parquet as pq

    from llara.evaluate.compare import paired_difference

    metrics = json.loads((point / "metrics.json").read_text())
    block = metrics["splits"]["test"]["rank"]
    pred = pq.read_table(point / "predictions.parquet")
    lo, hi = block["mean"]["hr@1_ci"]
    n_steps = samples // settings["effective_batch_size"]
    row = {"recipe": a.recipe, "variant": variant, "train_samples": samples, "steps": n_steps, "lr": settings["lr"],
           "projector_lr": settings["projector_lr"] or settings["lr"], "curriculum": settings["curriculum"],
           "answer_format": settings["answer_format"], "projector_scale": settings["projector_scale"],
           "token_position": settings.get("token_position", "after"), "representation": settings["representation"],
           "tune_s": timings.get("tune_s"), "eval_s": timings.get("eval_s"), "rows": metrics["splits"]["test"]["n"],
           "sets": len(block["per_set"]), "chance_hr1": 1 / len(pred.column("candidates")[0].as_py()),
           "hr1_mean": round(block["mean"]["hr@1"], 4), "hr1_ci_low": round(lo, 4), "hr1_ci_high": round(hi, 4),
           "hr5_mean": round(block["mean"]["hr@5"], 4), "valid_probe_hr1": final_probe(point)}
    others = {"sasrec": pq.read_table(refs["sasrec"]), "last_item": pq.read_table(refs["last_item"])}
    if text_point is not None and (text_point / "predictions.parquet").is_file():
        others["text"] = pq.read_table(text_point / "predictions.parquet")
    for name, other in others.items():
        r = paired_difference(pred, other, "test", "rank", "rank", "hr@1", seed=a.seed)
        row[f"paired_vs_{name}"] = round(r["diff"], 4)
        row[f"paired_vs_{name}_ci_low"], row[f"paired_vs_{name}_ci_high"] = (round(x, 4) for x in r["ci"])
    return row


def point_key(r: dict[str, Any]) -> tuple[str, str, int]:
    return str(r["recipe"]), str(r["variant"]), int(r["train_samples"])


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows a previous run wrote (numbers as floats, empty cells as None); none when there is no file."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    text = {"recipe", "variant", "curriculum", "answer_format", "projector_scale", "token_position", "representation"}
    rows = [{k: None if v in ("", None) else (v if k in text else float(v)) for k, v in r.items()} for r in rows]
    for r in rows:  # rows written before the column existed were measured with the authors' order
        r["token_position"] = r.get("token_position") or "after"
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Merge ``rows`` into the CSV at ``path`` (a point measured again replaces its row); returns all rows."""
    merged = {point_key(r): r for r in read_csv(path)}
    merged.update({point_key(r): r for r in rows})
    out = sorted(merged.values(), key=point_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in out:
            w.writerow({k: int(v) if k in INT_COLUMNS and v is not None else v
                        for k, v in ((k, r.get(k)) for k in CSV_COLUMNS)})
    tmp.replace(path)
    return out


def plot(rows: list[dict[str, Any]], refs: dict[str, float], path: Path) -> None:
    """HR@1 against training samples (log x) per variant with 95% CIs, beside chance, SASRec and last-item."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def recipe(r: dict[str, Any]) -> str:
        """A line per recipe and variant (points of another recipe are not one curve)."""
        return f"{r['recipe']}: {r['variant']}"

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for v in sorted({recipe(r) for r in rows}):
        pts = sorted((r for r in rows if recipe(r) == v), key=lambda r: r["train_samples"])
        x = [r["train_samples"] for r in pts]
        y = [r["hr1_mean"] for r in pts]
        err = [[r["hr1_mean"] - r["hr1_ci_low"] for r in pts], [r["hr1_ci_high"] - r["hr1_mean"] for r in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=v)
    for name, val, style in (("chance (1/20)", 0.05, ":"), ("SASRec", refs.get("sasrec"), "--"),
                             ("last-item similarity", refs.get("last_item"), "-.")):
        if val is not None:
            ax.axhline(val, ls=style, color="grey", lw=1)
            ax.text(ax.get_xlim()[0] if rows else 1, val, f" {name}", va="bottom", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("training samples (one epoch)")
    ax.set_ylabel("test rank HR@1 (5 stored sets x 122 rows)")
    ax.set_title("LLaRA on real LastFM, SmolLM2-135M")
    ax.legend(fontsize=6)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def estimate(points: list[tuple[str, int]], out: Path, a: argparse.Namespace) -> float:
    """Seconds of tuning and evaluation left for ``points`` (cached stages count 0)."""
    jobs = max(1, min(a.jobs, len(a.variants)))
    per_thread = TOKENS_PER_S_THREAD * max(1, a.threads // jobs)
    tune_s = sum(s * TOKENS_PER_SAMPLE / per_thread for v, s in points
                 if not (out / v / f"n{s}" / "llara" / "probe.csv").is_file()) / jobs
    probes = sum((s // 16) // max(a.probe_every, 1) + 1 for v, s in points
                 if not (out / v / f"n{s}" / "llara" / "probe.csv").is_file()) * a.probe_rows * EVAL_S_PER_ROW / jobs
    eval_s = sum(122 * a.sets * EVAL_S_PER_ROW / a.threads for v, s in points
                 if not (out / v / f"n{s}" / "predictions.parquet").is_file())
    return tune_s + probes + eval_s


def run(a: argparse.Namespace) -> list[dict[str, Any]]:
    import yaml

    config = yaml.safe_load(Path(a.config).read_text())
    from llara.settings import check_settings

    check_settings(config)
    inp = Inputs(REPO, config["llm"]["name"])
    out = a.out / a.recipe
    points = [(v, s) for s in sorted(a.samples) for v in a.variants]
    for v, s in points:
        check_recorded(out / v / f"n{s}" / "settings.json", point_settings(config, v, s, a))
    left = estimate(points, out, a)
    print(f"realdata_curve: {len(points)} points ({', '.join(a.variants)} x {sorted(a.samples)} samples); "
          f"estimated {left / 3600:.1f} h left on {a.threads} CPU thread(s) (bf16 AMX rate; fp32 AVX2 ~2x longer)",
          flush=True)
    refs = references(inp, a.out, a)
    ref_hr1 = {k: json.loads(p.with_name("metrics.json").read_text())["splits"]["test"]["rank"]["mean"]["hr@1"]
               for k, p in refs.items()}
    print(f"same rows and sets: SASRec HR@1 {ref_hr1['sasrec']:.3f}, last-item {ref_hr1['last_item']:.3f}, "
          "chance 0.050", flush=True)
    timings: dict[tuple[str, int], dict[str, float]] = {}
    timing_file = out / "timings.json"
    if timing_file.is_file():
        timings = {tuple(json.loads(k)): v for k, v in json.loads(timing_file.read_text()).items()}

    def save_timings() -> None:
        timing_file.write_text(json.dumps({json.dumps(list(k)): v for k, v in timings.items()}, indent=1) + "\n")

    rows: list[dict[str, Any]] = []
    for samples in sorted(a.samples):
        jobs = max(1, min(a.jobs, len(a.variants)))
        threads = max(1, a.threads // jobs)

        def one(variant: str) -> tuple[str, float]:
            s = point_settings(config, variant, samples, a)
            return variant, tune(out / variant / f"n{samples}", s, inp, threads)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for variant, took in pool.map(one, a.variants):
                if took:
                    timings.setdefault((variant, samples), {})["tune_s"] = took
        save_timings()
        order = sorted(a.variants, key=lambda v: v != "text_only")  # text-only first: the others pair with it
        for variant in order:
            point = out / variant / f"n{samples}"
            s = point_settings(config, variant, samples, a)
            took = evaluate(point, s, inp, a)
            if took:
                timings.setdefault((variant, samples), {})["eval_s"] = took
            save_timings()
            text = text_point(config, samples, a) if variant != "text_only" else None
            rows = [r for r in rows if (r["variant"], r["train_samples"]) != (variant, samples)]
            rows.append(summarise(point, variant, samples, s, refs, text, timings.get((variant, samples), {}), a))
            plot(write_csv(rows, a.csv), ref_hr1, a.csv.with_suffix(".png"))
            r = rows[-1]
            print(f"{variant} n={samples}: test HR@1 {r['hr1_mean']:.3f} [{r['hr1_ci_low']:.3f}, {r['hr1_ci_high']:.3f}] "
                  f"(chance 0.050); - SASRec {r['paired_vs_sasrec']:+.3f}; - last-item {r['paired_vs_last_item']:+.3f}"
                  + (f"; - text-only {r['paired_vs_text']:+.3f} [{r['paired_vs_text_ci_low']:+.3f}, "
                     f"{r['paired_vs_text_ci_high']:+.3f}]" if r.get("paired_vs_text") is not None else ""),
                  flush=True)
    return rows


HYBRID_ONLY_KEYS = {"token_position"}  # tune keys that change hybrid prompts only: text-only points can be shared


def text_point(config: dict[str, Any], samples: int, a: argparse.Namespace) -> Path:
    """The text-only point the others pair with: this recipe's, or with ``--text-from`` another recipe's, whose
    recorded settings must equal this recipe's text-only settings but for keys that only change hybrid prompts."""
    if not a.text_from:
        return a.out / a.recipe / "text_only" / f"n{samples}"
    point = a.out / a.text_from / "text_only" / f"n{samples}"
    if not (point / "settings.json").is_file():
        raise SystemExit(f"realdata_curve: --text-from {a.text_from}: no text-only point at {point}")
    from llara.llm.train import TuneConfig

    recorded, defaults = json.loads((point / "settings.json").read_text()), TuneConfig().to_dict()
    want = point_settings(config, "text_only", samples, a)
    diff = sorted(k for k in set(want) | set(recorded) if k not in HYBRID_ONLY_KEYS
                  and recorded.get(k, defaults.get(k)) != want.get(k, defaults.get(k)))
    if diff:
        raise SystemExit(f"realdata_curve: --text-from {a.text_from}: {point} was trained with other settings "
                         f"({', '.join(diff)}); only {sorted(HYBRID_ONLY_KEYS)} may differ")
    return point


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"),
                    help="config whose tune section (and tune.variants) is the recipe")
    ap.add_argument("--variants", nargs="+", default=["hybrid", "text_only", "id_only"],
                    help="hybrid (the config's tune) and names of tune.variants")
    ap.add_argument("--samples", nargs="+", type=int, default=[600, 1200, 2400], help="training samples per point")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "realdata_curve")
    ap.add_argument("--csv", type=Path, default=REPO / "benchmarks" / "results" / "realdata_curve.csv")
    ap.add_argument("--sets", type=int, default=5, help="stored test candidate sets to evaluate")
    ap.add_argument("--probe-every", type=int, default=30, help="optimizer steps between valid-row probes")
    ap.add_argument("--probe-rows", type=int, default=48, help="valid rows the probe scores")
    ap.add_argument("--recipe", default="default", type=str,
                    help="name of the tune settings (a folder under --out and the CSV's recipe column)")
    ap.add_argument("--tune", type=load_tune, default={},
                    help="tune keys replacing the config's (below the variants): a YAML file such as "
                         "config/recipes/small-llm.yaml, or a JSON object")
    ap.add_argument("--text-from", default=None, metavar="RECIPE",
                    help="pair with RECIPE's text-only points instead of this recipe's (allowed when the two recipes "
                         "differ only in keys that change hybrid prompts alone, such as token_position)")
    ap.add_argument("--seed", type=int, default=42, help="bootstrap seed")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads in all")
    ap.add_argument("--jobs", type=int, default=2, help="variants tuned at once (threads split among them)")
    return ap


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    run(parser().parse_args())
