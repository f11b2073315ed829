"""Reference scorers without an LLM, on the very rows and stored candidate sets the LLM is evaluated on.

What the behavioural signal alone gives, as baseline rows beside the rankers and LLaRA:

* ``popularity``: a candidate's score is how often it is a *target* in train.parquet (needs only the data);
* ``last_item``: the dot product of the backbone's embedding of the row's *last* history item with each
  candidate's embedding (``item_embeddings.parquet`` of any seqrec backbone).

Both write rank-mode rows of ``llara.evaluate.predictions.PREDICTIONS`` and a metrics.json in the evaluation
layout (``llara.evaluate.ranker_output``), so they pair with LLaRA via ``llara.evaluate.compare``.
Ties count against the target, as for every method here (``llara.metrics.ranking.target_ranks``);
popularity ties often, so metrics.json also records HR@1 with ties shared evenly (``ties``) for reference.
No torch: numpy on the Parquet tables, seconds on CPU. Command line: ``llara reference --help``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llara.cli_errors import stage_main
from llara.data.schema import EVAL, TRAIN, read_table
from llara.evaluate.ranker_output import SplitScores, check_outputs, write_ranker_outputs
from llara.llm.data import load_item_embeddings
from llara.seqrec.data import list_parts, load_n_items

KINDS = ("popularity", "last_item")
LABELS = {"popularity": "Popularity (train targets)", "last_item": "Last-item similarity"}


@dataclass
class EvalRows:
    """One evaluated split as arrays: ``last_item``, ``targets``, ``user_ids`` ``[rows]``, ``candidates``
    ``[rows, K, C]``; ``path`` the file."""

    path: str
    last_item: np.ndarray
    targets: np.ndarray
    user_ids: np.ndarray
    candidates: np.ndarray


def _exists(path: str | Path, what: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")


def _check_ids(values: np.ndarray, n_items: int, path: str, column: str) -> None:
    bad = np.flatnonzero((values < 0) | (values >= n_items))
    if bad.size:
        raise ValueError(f"{path}: column {column!r} holds item id {int(values[bad[0]])}, outside 0..{n_items - 1} "
                         "(the item table's ids)")


def load_eval_rows(path: str | Path, n_items: int) -> EvalRows:
    """Read an evaluated split (valid/test.parquet): last history item, target, user and the stored sets."""
    path = str(path)
    _exists(path, "split file")
    t = read_table(path, EVAL)
    hist, lengths = list_parts(t.column("history"))
    if (lengths == 0).any():
        raise ValueError(f"{path}: column 'history' row {int(np.flatnonzero(lengths == 0)[0])} is empty; "
                         "every row needs at least one history item")
    last = hist[np.cumsum(lengths) - 1]
    sets = t.column("candidate_sets").combine_chunks()
    set_counts = pc.list_value_length(sets).to_numpy(zero_copy_only=False)
    values, sizes = list_parts(pa.chunked_array([sets.flatten()]))
    if set_counts.min() != set_counts.max() or sizes.size == 0 or sizes.min() != sizes.max() or sizes.min() == 0:
        raise ValueError(f"{path}: column 'candidate_sets' must hold the same number of non-empty sets of the same "
                         f"size in every row; found {sorted(set(set_counts.tolist()))} sets of sizes "
                         f"{sorted(set(sizes.tolist()))}")
    targets = t.column("target").to_numpy()
    for name, v in (("history", hist), ("target", targets), ("candidate_sets", values)):
        _check_ids(v, n_items, path, name)
    cands = values.reshape(t.num_rows, int(set_counts[0]), int(sizes[0]))
    return EvalRows(path, last, targets, t.column("user_id").to_numpy(), cands)


def popularity_counts(train_path: str | Path, n_items: int) -> np.ndarray:
    """``[n_items]``: how often each item is the target of a row of train.parquet."""
    _exists(train_path, "train split")
    targets = read_table(train_path, TRAIN).column("target").to_numpy()
    _check_ids(targets, n_items, str(train_path), "target")
    return np.bincount(targets, minlength=n_items)


def popularity_scores(counts: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``[rows, K, C]`` train-target counts of the candidates."""
    return np.asarray(counts, dtype=np.float64)[candidates]


def last_item_scores(emb: np.ndarray, last_item: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``[rows, K, C]`` dot products of each row's last history item's embedding with its candidates'."""
    return np.einsum("rd,rkcd->rkc", emb[last_item], emb[candidates])


def ties_shared_hr1(scores: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """HR@1 per set with ties at the top shared evenly (a random tie-break's expectation), and how often the
    target ties with another candidate at the top; for comparison with the tie-against-the-target HR@1."""
    top = scores == scores.max(axis=2, keepdims=True)
    target_top = (top & (candidates == targets[:, None, None])).any(axis=2)
    n_top = top.sum(axis=2)
    per_set = np.where(target_top, 1.0 / n_top, 0.0).mean(axis=0)
    return {"hr@1_ties_shared": per_set.tolist(), "hr@1_ties_shared_mean": float(per_set.mean()),
            "target_tied_at_top": float((target_top & (n_top > 1)).mean())}


def reference_predictions(kind: str, items_path: str | Path, split_paths: dict[str, str | Path],
                          predictions_path: str | Path, metrics_path: str | Path | None = None, *,
                          train_path: str | Path | None = None, embeddings_path: str | Path | None = None,
                          seed: int = 0, n_resamples: int = 1000, alpha: float = 0.05,
                          meta: dict[str, Any] | None = None, train_seed: int | None = None) -> dict:
    """Score every stored candidate set of each split with the reference scorer ``kind``; write predictions
    (+ metrics.json). ``popularity`` needs ``train_path``, ``last_item`` ``embeddings_path``; ``seed`` seeds the
    bootstraps; ``train_seed`` (last_item: the backbone's training seed) is recorded with the aggregate block."""
    t0 = time.perf_counter()
    if kind not in KINDS:
        raise ValueError(f"unknown reference scorer {kind!r}; expected one of {KINDS}")
    need = {"popularity": ("train_path", train_path), "last_item": ("embeddings_path", embeddings_path)}[kind]
    if need[1] is None:
        raise ValueError(f"reference scorer {kind!r} needs {need[0]}")
    check_outputs(predictions_path, metrics_path)  # before any work
    _exists(items_path, "item table")
    n_items = load_n_items(items_path)
    if kind == "popularity":
        counts = popularity_counts(train_path, n_items)
        score = lambda r: popularity_scores(counts, r.candidates)  # noqa: E731
        inputs = {"items": items_path, "train_split": train_path}
    else:
        emb = load_item_embeddings(embeddings_path, n_items).astype(np.float64)
        score = lambda r: last_item_scores(emb, r.last_item, r.candidates)  # noqa: E731
        inputs = {"items": items_path, "item_embeddings": embeddings_path}
    splits, ties = {}, {}
    for split, path in split_paths.items():
        r = load_eval_rows(path, n_items)
        s = score(r)
        splits[split] = SplitScores(s, r.candidates, r.targets, r.user_ids, r.path)
        ties[split] = ties_shared_hr1(s, r.candidates, r.targets)
    return write_ranker_outputs(
        splits, predictions_path, metrics_path, seed=seed, n_resamples=n_resamples, alpha=alpha,
        meta={"method": "reference", "scorer": kind, **(meta or {})}, train_seed=train_seed, t0=t0,
        inputs={**inputs, **{f"{s}_split": p for s, p in split_paths.items()}}, config={"scorer": kind},
        extra={"ties": ties})


@stage_main("reference")
def main(argv: list[str]) -> None:
    """``llara reference DATA_DIR OUT_DIR --kind popularity|last_item [--embeddings FILE]``."""
    import argparse

    from llara.cli_errors import add_debug_argument, input_errors
    from llara.runlog import setup_logging

    p = argparse.ArgumentParser(
        prog="llara reference",
        description="no-LLM reference scorers on the stored candidate sets: popularity (train-target counts) or "
                    "last_item (dot product of the last history item's backbone embedding with each candidate's); "
                    "writes OUT_DIR/predictions.parquet and OUT_DIR/metrics.json in the evaluation's layout")
    p.add_argument("data_dir", type=Path, help="the data stage's folder: items.parquet, train.parquet and the splits")
    p.add_argument("out_dir", type=Path, help="folder for predictions.parquet and metrics.json")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--embeddings", type=Path, default=None,
                   help="last_item: a backbone's item_embeddings.parquet (results/{dataset}/{seqrec}/seqrec/)")
    p.add_argument("--splits", nargs="+", default=["test", "valid"], choices=["test", "valid"])
    p.add_argument("--dataset", default=None, help="recorded in metrics.json")
    p.add_argument("--seqrec", default=None, help="last_item: the backbone's name (recorded)")
    p.add_argument("--train-seed", type=int, default=None, help="last_item: the backbone's training seed (recorded)")
    p.add_argument("--seed", type=int, default=42, help="bootstrap seed")
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--log", type=Path, default=None)
    add_debug_argument(p)
    a = p.parse_args(argv)
    setup_logging(a.log)
    if a.kind == "last_item" and a.embeddings is None:
        p.error("--kind last_item needs --embeddings (a backbone's item_embeddings.parquet)")
    d = a.data_dir
    with input_errors():  # its checks of the data files raise ValueError naming the file
        reference_predictions(a.kind, d / "items.parquet", {s: d / f"{s}.parquet" for s in a.splits},
                              a.out_dir / "predictions.parquet", a.out_dir / "metrics.json",
                              train_path=d / "train.parquet", embeddings_path=a.embeddings, seed=a.seed,
                              n_resamples=a.n_resamples, alpha=a.alpha, train_seed=a.train_seed,
                              meta={"dataset": a.dataset, "seqrec": a.seqrec if a.kind == "last_item" else None})


if __name__ == "__main__":
    main()
