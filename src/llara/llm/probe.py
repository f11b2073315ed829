"""The in-training probe: rank-mode HR@1 and the candidate-restricted loss on a fixed slice of valid rows.

Every ``tune.probe_every`` optimizer steps (and before the first) the model being trained scores the stored
candidate set 0 of the first ``tune.probe_rows`` rows of ``valid.parquet`` with the same candidate scorer the
evaluation stage uses (``llara.llm.inference.score_candidates``), in the representation the run moves to.
Each probe is one row of ``probe.csv`` beside ``train_log.csv``, so every run leaves its own learning curve
on rows it never trains on (the test rows stay for reporting).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

PROBE_COLUMNS = ["step", "samples", "rows", "hr1", "hr5", "cand_loss", "mean_rank", "chance_hr1", "probe_s"]


def load_probe_rows(valid_path: str, n_rows: int, n_items: int) -> list[dict[str, Any]]:
    """The first ``n_rows`` rows of an eval split with their stored candidate set 0 (item ids checked)."""
    from llara.data.schema import EVAL, read_table

    t = read_table(valid_path, EVAL).slice(0, n_rows)
    rows = [{"history": h, "candidates": c, "target": g} for h, c, g in
            zip(t.column("history").to_pylist(), t.column("candidates").to_pylist(), t.column("target").to_pylist())]
    for r, row in enumerate(rows):
        ids = [*row["history"], *row["candidates"], row["target"]]
        if min(ids) < 0 or max(ids) >= n_items:
            raise ValueError(f"{valid_path}: row {r} holds item ids outside items.parquet's 0..{n_items - 1}")
        if row["candidates"].count(row["target"]) != 1:
            raise ValueError(f"{valid_path}: row {r}: the target is not exactly once among its stored candidates")
    return rows


def probe_metrics(scores: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, float]:
    """HR@1 / HR@5 (ties count against the target), the mean 0-based target rank and the candidate-restricted
    loss: the mean over rows of -log softmax(candidate log-likelihoods)[target]."""
    from llara.metrics.ranking import hit_at_k, target_ranks

    cands = np.array([r["candidates"] for r in rows])
    targets = np.array([r["target"] for r in rows])
    ranks = target_ranks(scores, cands, targets)
    s = scores - scores.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    cand_loss = -logp[cands == targets[:, None]]
    return {"hr1": float(hit_at_k(ranks, 1).mean()), "hr5": float(hit_at_k(ranks, 5).mean()),
            "cand_loss": float(cand_loss.mean()), "mean_rank": float(ranks.mean()),
            "chance_hr1": 1.0 / cands.shape[1]}


def run_probe(module, encoder, titles: list[str], rows: list[dict[str, Any]], representation: str,
              batch_size: int = 4) -> dict[str, float]:
    """Score ``rows`` with the model under training (eval mode, no gradients; its mode is restored)."""
    from llara.llm.inference import LlaraModel, score_candidates

    t0 = time.perf_counter()
    was_training = module.training
    module.eval()
    try:
        scores = score_candidates(LlaraModel(module, encoder, titles, zero_shot=False), rows, representation,
                                  batch_size=batch_size)
    finally:
        module.train(was_training)
    out = probe_metrics(scores, rows)
    out.update(rows=len(rows), probe_s=round(time.perf_counter() - t0, 2))
    return out
