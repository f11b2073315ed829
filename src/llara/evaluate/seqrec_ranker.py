"""The seqrec backbone as a ranker, written in the evaluation's predictions format.

The seqrec stage's own metrics.json holds aggregate numbers only; pairing LLaRA with its backbone
on the same rows and candidate sets needs per-row outcomes, so this scores every stored candidate
set with the saved backbone (``llara.seqrec.load_model``) and writes rank-mode rows of
``llara.evaluate.predictions.PREDICTIONS`` (+ a metrics.json in the evaluation layout) through
``llara.evaluate.ranker_output``. Seconds on CPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from llara.data.schema import EVAL, read_table
from llara.evaluate.ranker_output import SplitScores, write_ranker_outputs


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
    splits = {}
    for split, path in split_paths.items():
        table = read_table(path, EVAL)
        data = load_split(path, split, n_items, model.max_len)
        splits[split] = SplitScores(candidate_scores(model, data), data.candidate_sets.numpy(),  # [rows, K, C]
                                    data.targets.numpy(), table.column("user_id").to_numpy(), str(path))
    return write_ranker_outputs(splits, predictions_path, metrics_path, seed=seed, n_resamples=n_resamples,
                                alpha=alpha, meta=meta, train_seed=train_seed, t0=t0,
                                inputs={"model": model_path, "items": items_path,
                                        **{f"{s}_split": p for s, p in split_paths.items()}})
