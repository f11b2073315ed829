"""The seqrec backbone as a ranker, written in the evaluation's predictions format.

The seqrec stage's own metrics.json holds aggregate numbers only; pairing LLaRA with its backbone
on the same rows and candidate sets needs per-row outcomes, so this scores every stored candidate
set with the saved backbone (``llara.seqrec.load_model``) and writes rank-mode rows of
``llara.evaluate.run.PREDICTIONS`` (+ a metrics.json in the evaluation layout). Seconds on CPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llara.data.schema import EVAL, read_table
from llara.evaluate.aggregate import aggregate_tables
from llara.evaluate.blocks import rank_block
from llara.evaluate.run import PREDICTIONS
from llara.io import write_json, write_parquet
from llara.metrics.ranking import target_ranks
from llara.provenance import provenance


def seqrec_predictions(model_path: str | Path, items_path: str | Path, split_paths: dict[str, str | Path],
                       predictions_path: str | Path, metrics_path: str | Path | None = None, *, seed: int = 0,
                       n_resamples: int = 1000, alpha: float = 0.05, meta: dict[str, Any] | None = None,
                       threads: int | None = None, train_seed: int | None = None) -> dict:
    """Rank every stored candidate set of each split with the saved backbone; write predictions (+ metrics).

    ``seed`` seeds the bootstraps; ``train_seed`` (the backbone's training seed) is recorded with the
    one-run ``aggregate`` block (llara.evaluate.aggregate).
    """
    import torch

    from llara.seqrec import candidate_scores, load_model, load_n_items, load_split

    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    if not Path(model_path).exists():
        raise FileNotFoundError(f"seqrec model {model_path} does not exist (the seqrec stage's rule builds it)")
    model = load_model(model_path)
    n_items = load_n_items(items_path)
    if model.n_items != n_items:
        raise ValueError(f"{model_path} was trained on {model.n_items} items but {items_path} holds {n_items}")
    pieces, splits = [], {}
    for split, path in split_paths.items():
        table = read_table(path, EVAL)
        data = load_split(path, split, n_items, model.max_len)
        scores = candidate_scores(model, data)  # [rows, K, C]
        cands = data.candidate_sets.numpy()
        targets = data.targets.numpy()
        n, k, _ = scores.shape
        ranks = np.stack([target_ranks(scores[:, s], cands[:, s], targets) for s in range(k)], axis=1)
        users = table.column("user_id").to_pylist()
        for s in range(k):
            sc = scores[:, s].astype(np.float64)
            top = cands[np.arange(n), s, sc.argmax(axis=1)]
            correct = ranks[:, s] == 0
            pieces.append(pa.table({
                "split": [split] * n, "mode": ["rank"] * n, "candidate_set": [s] * n, "row": list(range(n)),
                "user_id": users, "target": targets, "candidates": list(cands[:, s]), "output": pa.nulls(n, pa.string()),
                "predicted": top, "valid": np.ones(n, bool), "correct": correct, "valid_literal": np.ones(n, bool),
                "correct_literal": correct, "n_named": pa.nulls(n, pa.int32()),
                "target_rank": ranks[:, s].astype(np.int32), "scores": list(sc),
            }, schema=PREDICTIONS))
        splits[split] = {"n": n, "rank": rank_block(ranks, list(range(k)), seed=seed, n_resamples=n_resamples, alpha=alpha)}
    table = pa.concat_tables(pieces)
    write_parquet(table, predictions_path, PREDICTIONS)
    agg = aggregate_tables({train_seed: table}, list(splits), ["rank"], seed=seed, n_resamples=n_resamples, alpha=alpha)
    metrics = {**(meta or {}), "candidate_sets": int(k), "modes": ["rank"], "splits": splits,
               "train_seed": train_seed, "seeds": [train_seed], "aggregate": agg,
               "provenance": provenance({}, {"model": model_path, "items": items_path,
                                             **{f"{s}_split": p for s, p in split_paths.items()}},
                                        seed, wall_time_s=time.perf_counter() - t0)}
    if metrics_path is not None:
        write_json(metrics, metrics_path)
    return metrics
