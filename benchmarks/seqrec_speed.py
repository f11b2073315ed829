"""Training speed and memory of the sequential recommenders (default hyper-parameters) on a dataset.

    .venv/bin/python benchmarks/seqrec_speed.py [--data results/lastfm/data] [--epochs 2] [--threads 1]

Each model runs in its own process (so peak RSS is per model) and trains ``--epochs`` epochs with
the package's training loop; the table gives training sequences/s (the training steps only),
wall time per epoch (with the per-epoch valid evaluation) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(model: str, data: Path, epochs: int, threads: int) -> dict:
    import torch

    from llara.seqrec import build_model, fit, load_n_items, load_split, resolve_hparams

    torch.set_num_threads(threads)
    hp = resolve_hparams(model)
    n_items = load_n_items(data / "items.parquet")
    train = load_split(data / "train.parquet", "train", n_items, hp["max_len"])
    valid = load_split(data / "valid.parquet", "valid", n_items, hp["max_len"])
    torch.manual_seed(0)
    m = build_model(model, n_items, hp)
    t0 = time.perf_counter()
    summary = fit(m, train, valid, lr=hp["lr"], weight_decay=hp["weight_decay"], batch_size=hp["batch_size"],
                  max_epochs=epochs, patience=epochs + 1, seed=0, progress=False)
    wall = time.perf_counter() - t0
    return {
        "model": model,
        "params": sum(p.numel() for p in m.parameters()),
        "train_rows": len(train),
        "sequences_per_s": summary["sequences_per_s"],
        "epoch_s": wall / summary["epochs_run"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO / "results" / "lastfm" / "data")
    p.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "caser"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.data, a.epochs, a.threads)))
        return
    if not (a.data / "train.parquet").exists():
        sys.exit(f"{a.data / 'train.parquet'} not found: build it first, e.g. "
                 "LLARA_MIRROR=../shared/datasets .venv/bin/snakemake --cores 1 results/lastfm/data/test.parquet")
    print(f"data: {a.data}  epochs: {a.epochs}  threads: {a.threads}\n")
    print("| model | parameters | train rows | train sequences/s | s / epoch (incl. valid) | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for model in a.models:
        out = subprocess.run([sys.executable, __file__, "--worker", model, "--data", str(a.data),
                              "--epochs", str(a.epochs), "--threads", str(a.threads)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['model']} | {r['params']:,} | {r['train_rows']:,} | {r['sequences_per_s']:,.0f} | "
              f"{r['epoch_s']:.1f} | {r['peak_rss_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
