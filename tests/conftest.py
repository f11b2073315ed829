"""Shared fixtures: a tiny but learnable dataset in the data stage's Parquet format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from llara.data.schema import EVAL, ITEMS, TRAIN
from llara.io import write_parquet

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()


def make_tiny_dataset(out_dir: Path, n_items: int = 40, n_users: int = 60, seq_len: int = 12,
                      n_candidates: int = 10, n_sets: int = 3, seed: int = 0) -> Path:
    """Write items/train/valid/test.parquet of a synthetic dataset with a learnable rule.

    Each user walks the item ring with a user-specific stride (1 or 2), so the next item is
    predictable from the history; titles are readable ("Item 7 Alpha").
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    words = ["Alpha", "Bravo", "Delta", "Echo", "Gamma", "Kilo", "Lima", "Omega"]
    items = pa.table({
        "item_id": np.arange(n_items, dtype=np.int64),
        "title": [f"Item {i} {words[i % len(words)]}" for i in range(n_items)],
        "source_id": [str(i + 1) for i in range(n_items)],
    })
    write_parquet(items, out_dir / "items.parquet", ITEMS)
    train, valid, test = [], [], []
    for u in range(n_users):
        start, stride = int(rng.integers(n_items)), int(rng.integers(1, 3))
        seq = [(start + stride * t) % n_items for t in range(seq_len)]
        for t in range(3, seq_len - 2):
            train.append((u, seq[max(0, t - 10):t], seq[t]))
        valid.append((u, seq[-12:-2][-10:], seq[-2]))
        test.append((u, seq[-11:-1][-10:], seq[-1]))

    def with_candidates(rows, offset):
        r = np.random.default_rng(seed + offset)
        cols = {"user_id": [], "history": [], "target": [], "candidates": [], "candidate_sets": []}
        for u, hist, tgt in rows:
            pool = np.setdiff1d(np.arange(n_items), np.array(hist + [tgt]))
            sets = []
            for _ in range(n_sets):
                negs = r.choice(pool, n_candidates - 1, replace=False).tolist()
                negs.insert(int(r.integers(n_candidates)), tgt)
                sets.append(negs)
            for k, v in zip(cols, (u, hist, tgt, sets[0], sets)):
                cols[k].append(v)
        return pa.table(cols)

    write_parquet(pa.table({"user_id": [r[0] for r in train], "history": [r[1] for r in train],
                            "target": [r[2] for r in train]}), out_dir / "train.parquet", TRAIN)
    write_parquet(with_candidates(valid, 1), out_dir / "valid.parquet", EVAL)
    write_parquet(with_candidates(test, 2), out_dir / "test.parquet", EVAL)
    return out_dir


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A tiny learnable dataset (items/train/valid/test.parquet) in a temp folder."""
    return make_tiny_dataset(tmp_path / "data")


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    """Keep tests to the machine's 2 cores without oversubscription."""
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


def run_snakemake(workdir: Path, targets: list[str], *args: str, env: dict | None = None,
                  check: bool = True) -> "subprocess.CompletedProcess[str]":
    """Run the repository's Snakefile in ``workdir`` with 2 cores; output captured for assertions."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--cores", "2", *args, *targets]
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def tiny_pipeline(root: Path, **overrides) -> dict:
    """A whole-DAG set-up: a fixture mirror (tiny ML-100K-shaped zip, pinned by the config), a tiny random
    Llama over its titles, and a small config (``overrides`` replace top-level keys) written to
    ``root/config.yaml``. Returns ``{"root", "mirror", "cfg", "cfg_file"}``."""
    import zipfile

    import yaml

    from llara.io import sha256_bytes
    from llara.llm.testing import make_tiny_llama
    from test_data_parse import write_ml_zip

    mirror = root / "mirror"
    mirror.mkdir(parents=True)
    zp = write_ml_zip(mirror / "ml-100k.zip", n_users=30, n_items=40)
    with zipfile.ZipFile(zp) as zf:
        pins = {f"ml-100k.zip/{m}": sha256_bytes(zf.read(m)) for m in ("ml-100k/u.data", "ml-100k/u.item")}
        titles = [line.split("|")[1] for line in zf.read("ml-100k/u.item").decode("latin-1").splitlines()]
    llm = make_tiny_llama(root / "tiny-llama", titles, vocab_size=320, hidden=32, layers=2)
    cfg = {
        "download": {"extra_sha256": pins},
        "data": {"n_candidates": 10, "candidate_sets": 2},
        "seqrec": {"sasrec": {"hidden_size": 16, "max_epochs": 2}},
        "llm": {"name": "tiny", "source": "local", "path": str(llm)},
        "tune": {"max_train_samples": 16, "micro_batch_size": 4, "effective_batch_size": 8, "checkpoint_every": 1,
                 "precision": "fp32"},
        "evaluate": {"max_rows": 3, "max_new_tokens": 4, "bootstrap": {"n_resamples": 50},
                     "candidate_sets": {"llara": 2, "zeroshot": 1, "ablations": 1}},
        "report": {"datasets": ["movielens"], "baselines": ["sasrec"], "llara": ["sasrec"], "zeroshot": False},
        **overrides,
    }
    cfg_file = root / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    return {"root": root, "mirror": mirror, "cfg": cfg, "cfg_file": cfg_file}
