"""Train a sequential recommender, evaluate it as a ranker on the stored candidates, write the artifacts.

Training: softmax cross-entropy over all items on each train row's next item, Adam, mini-batches
of a padded tensor built once, early stopping on valid HR@1 over the stored ``candidates``
(set 0), ties broken by the mean over sets, then by the valid cross-entropy over the candidates (a
saturated HR@1 must not keep an under-trained epoch). Deterministic on CPU for a seed and thread count.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from llara.io import atomic_path, check_replaceable, write_json
from llara.metrics.bootstrap import bootstrap_ci
from llara.metrics.ranking import hit_at_k, rank_metrics, target_ranks
from llara.provenance import provenance
from llara.seqrec.base import SeqRecModel
from llara.seqrec.data import Split, load_n_items, load_split
from llara.seqrec.registry import TRAIN_KEYS, build_model, resolve_hparams
from llara.seqrec.schema import item_embeddings_table

log = logging.getLogger("llara.seqrec")

FORMAT = "llara.seqrec/1"
KS = (1, 5)


# ----------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def candidate_scores(model: SeqRecModel, split: Split, batch_size: int = 1024) -> np.ndarray:
    """Scores ``[rows, K, n_candidates]`` of every stored candidate set (model in eval mode)."""
    if split.candidate_sets is None:
        raise ValueError(f"{split.path}: no candidate sets to score (a train split?)")
    was_training = model.training
    model.eval()
    out = [model.score(split.histories[i:i + batch_size], split.candidate_sets[i:i + batch_size])
           for i in range(0, len(split), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()


def split_ranks(model: SeqRecModel, split: Split) -> np.ndarray:
    """0-based rank of the target in each row and candidate set: ``[rows, K]``."""
    return _ranks(candidate_scores(model, split), split)


def _ranks(scores: np.ndarray, split: Split) -> np.ndarray:
    cands, targets = split.candidate_sets.numpy(), split.targets.numpy()
    return np.stack([target_ranks(scores[:, s], cands[:, s], targets) for s in range(scores.shape[1])], axis=1)


def ranking_report(ranks: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics of ``[rows, K]`` ranks: per set, mean/min/max over sets, bootstrap 95% CIs of HR@1."""
    per_set = [rank_metrics(ranks[:, s], KS) for s in range(ranks.shape[1])]
    keys = list(per_set[0])
    hit1 = hit_at_k(ranks, 1)  # [rows, K]
    return {
        "n": int(ranks.shape[0]),
        "n_candidate_sets": int(ranks.shape[1]),
        "valid_ratio": 1.0,  # a ranker always outputs one of the candidates
        "per_set": per_set,
        "mean": {k: float(np.mean([m[k] for m in per_set])) for k in keys},
        "min": {k: float(np.min([m[k] for m in per_set])) for k in keys},
        "max": {k: float(np.max([m[k] for m in per_set])) for k in keys},
        "hr@1_ci95_set0": list(bootstrap_ci(hit1[:, 0], n_resamples=n_resamples, seed=seed)),
        "hr@1_ci95_mean": list(bootstrap_ci(hit1.mean(axis=1), n_resamples=n_resamples, seed=seed)),
    }


def candidate_cross_entropy(scores: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> float:
    """Mean over rows and sets of -log softmax(scores over the candidates)[target]: ``scores`` and ``candidates``
    ``[rows, K, n_candidates]``, ``targets`` ``[rows]`` (each row's target is among its candidates)."""
    is_target = candidates == targets[:, None, None]
    if not is_target.any(axis=2).all():
        raise ValueError("candidate_cross_entropy: a row's target is not among its candidates")
    scores = scores.astype(np.float64)
    log_z = torch.logsumexp(torch.from_numpy(scores), dim=2).numpy()
    return float(np.mean(log_z - np.where(is_target, scores, -np.inf).max(axis=2)))


def valid_selection_key(model: SeqRecModel, valid: Split) -> tuple[float, float, float]:
    """The valid split's selection key, larger is better: (HR@1 on the stored ``candidates``, mean HR@1 over
    all sets, minus the candidate cross-entropy over all sets). On an easy valid split HR@1 saturates within a
    few epochs; the cross-entropy then still tells a well-fit epoch from the first one to reach the ceiling."""
    scores = candidate_scores(model, valid)
    hit1 = hit_at_k(_ranks(scores, valid), 1)
    ce = candidate_cross_entropy(scores, valid.candidate_sets.numpy(), valid.targets.numpy())
    return float(hit1[:, 0].mean()), float(hit1.mean()), -ce


# ------------------------------------------------------------------------------------------- training
def fit(model: SeqRecModel, train: Split, valid: Split, *, lr: float = 1e-3, weight_decay: float = 0.0,
        batch_size: int = 256, max_epochs: int = 100, patience: int = 10, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    """Train ``model`` in place; keep the weights of the epoch with the best valid HR@1 (set 0).

    Ties on HR@1 are broken by the mean valid HR@1 over all candidate sets, then by the lower valid
    cross-entropy over the candidates (:func:`valid_selection_key`), then by the earlier epoch. Stops
    after ``patience`` epochs without improvement of that key. Returns a training summary.
    """
    torch.manual_seed(seed)  # dropout
    order_rng = torch.Generator().manual_seed(seed)  # batch order
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(train)
    best: tuple[float, float, float] = (-1.0, -1.0, -np.inf)
    best_state, best_epoch, stale, epochs = None, 0, 0, []
    train_time = 0.0
    bar = tqdm(range(1, max_epochs + 1), desc=f"{model.name} epochs", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=order_rng)
        total = torch.zeros(())
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(model.score_all(train.histories[idx]), train.targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
        train_time += time.perf_counter() - t0
        key = valid_selection_key(model, valid)
        hr1, hr1_mean, neg_ce = key
        epochs.append({"epoch": epoch, "loss": round(float(total) / n, 6), "valid_hr@1": hr1,
                       "valid_hr@1_mean": round(hr1_mean, 6), "valid_candidate_ce": round(-neg_ce, 6),
                       "time_s": round(time.perf_counter() - t0, 3)})
        if key > best:
            best, best_epoch, stale = key, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        bar.set_postfix(loss=f"{float(total) / n:.4f}", valid_hr1=f"{hr1:.4f}", best=f"{best[0]:.4f}@{best_epoch}")
        log.info("%s epoch %d: loss %.4f, valid HR@1 %.4f (mean over sets %.4f, candidate CE %.4f), %.1f s",
                 model.name, epoch, float(total) / n, hr1, hr1_mean, -neg_ce, epochs[-1]["time_s"])
        if stale >= patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    n_epochs = len(epochs)
    summary = {
        "epochs_run": n_epochs,
        "best_epoch": best_epoch,
        "best_valid_hr@1": best[0],
        "stopped_early": n_epochs < max_epochs,
        "train_time_s": round(train_time, 3),
        "sequences_per_s": round(n * n_epochs / train_time, 1) if train_time > 0 else None,
        "epochs": epochs,
    }
    log.info("%s: trained %d epochs in %.1f s (%.0f sequences/s); best valid HR@1 %.4f at epoch %d",
             model.name, n_epochs, train_time, summary["sequences_per_s"] or 0, best[0], best_epoch)
    return summary


# ---------------------------------------------------------------------------------- save and reload
def model_metadata(model: SeqRecModel, hparams: dict[str, Any] | None = None, **extra: Any) -> dict[str, str]:
    """safetensors metadata (strings only): format, model name, n_items, hyper-parameters as JSON."""
    meta = {"format": FORMAT, "model": model.name, "n_items": str(model.n_items),
            "hparams": json.dumps(hparams if hparams is not None else model.hparams(), sort_keys=True)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def save_model(model: SeqRecModel, path: str | os.PathLike, hparams: dict[str, Any] | None = None) -> None:
    """Write the state dict and metadata to ``path`` (not atomic by itself: wrap in ``llara.io.atomic_path``)."""
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path),
              metadata=model_metadata(model, hparams))


def load_model(path: str | os.PathLike) -> SeqRecModel:
    """Rebuild a model saved by :func:`save_model` / :func:`run_seqrec` (in eval mode)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a llara seqrec model (metadata format {meta.get('format')!r}, "
                             f"expected {FORMAT!r})")
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = build_model(meta["model"], int(meta["n_items"]), json.loads(meta["hparams"]))
    model.load_state_dict(state)
    return model.eval()


# -------------------------------------------------------------------------------------- the stage
def run_seqrec(model_name: str, *, items: str | os.PathLike, train: str | os.PathLike, valid: str | os.PathLike,
               test: str | os.PathLike, out_model: str | os.PathLike, out_embeddings: str | os.PathLike,
               out_metrics: str | os.PathLike, hparams: dict[str, Any] | None = None, seed: int = 42,
               threads: int | None = None, dataset: str | None = None, progress: bool = True) -> dict[str, Any]:
    """The seqrec stage: train ``model_name`` on ``train``, select on ``valid``, evaluate on valid and test,
    and write model.safetensors, item_embeddings.parquet and metrics.json.

    The three outputs are written to temporary files and renamed into place only when all of them
    are complete, so an interrupted run leaves none of them. Returns the metrics dict.
    """
    t_start = time.perf_counter()
    merged = resolve_hparams(model_name, hparams)
    for out in (out_model, out_embeddings, out_metrics):  # before training: never replace what llara did not write
        check_replaceable(out)
    if threads:
        torch.set_num_threads(int(threads))
    width = int(merged["max_len"])
    n_items = load_n_items(items)
    splits = {name: load_split(path, name, n_items, width) for name, path in
              (("train", train), ("valid", valid), ("test", test))}
    log.info("%s on %s: %d items, %d train / %d valid / %d test rows, hyper-parameters %s", model_name,
             dataset or Path(train).parent, n_items, len(splits["train"]), len(splits["valid"]), len(splits["test"]),
             merged)

    torch.manual_seed(seed)
    model = build_model(model_name, n_items, merged)
    train_args = {k: merged[k] for k in TRAIN_KEYS}
    summary = fit(model, splits["train"], splits["valid"], seed=seed, progress=progress, **train_args)

    results = {split: ranking_report(split_ranks(model, splits[split]), n_resamples=1000, seed=seed)
               for split in ("valid", "test")}
    for split in ("valid", "test"):
        r = results[split]
        log.info("%s %s: HR@1 %.4f (95%% CI %.4f-%.4f), mean over %d sets %.4f [%.4f, %.4f]; HR@5 %.4f, NDCG@5 %.4f",
                 model_name, split, r["per_set"][0]["hr@1"], *r["hr@1_ci95_set0"], r["n_candidate_sets"],
                 r["mean"]["hr@1"], r["min"]["hr@1"], r["max"]["hr@1"], r["per_set"][0]["hr@5"],
                 r["per_set"][0]["ndcg@5"])

    inputs = {"items": items, "train": train, "valid": valid, "test": test}
    metrics = {
        "model": model_name,
        "dataset": dataset,
        "n_items": n_items,
        "hidden_size": model.hidden_size,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "valid": results["valid"],
        "test": results["test"],
        "training": summary,
        "provenance": provenance({"model": model_name, "hparams": merged}, {k: str(v) for k, v in inputs.items()},
                                 seed, device="cpu", wall_time_s=time.perf_counter() - t_start,
                                 threads=torch.get_num_threads()),
    }
    embeddings = item_embeddings_table(model.item_embeddings().detach().cpu().numpy())
    with atomic_path(out_model) as tmp_model, atomic_path(out_embeddings) as tmp_emb, \
            atomic_path(out_metrics) as tmp_metrics:
        save_model(model, tmp_model, merged)
        pq.write_table(embeddings, tmp_emb)
        write_json(metrics, tmp_metrics)
    log.info("%s: wrote %s, %s, %s", model_name, out_model, out_embeddings, out_metrics)
    return metrics
