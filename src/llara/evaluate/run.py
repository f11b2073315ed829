"""Evaluation orchestration: generate and rank modes over the first k stored candidate sets.

Writes ``predictions.parquet`` (one row per split x mode x candidate set x test row, schema
:data:`~llara.evaluate.predictions.PREDICTIONS`) and ``metrics.json`` (layout in docs/metrics.md) atomically.

Entry points:

* :func:`evaluate_engine` - any :class:`~llara.evaluate.engine.Engine` (a fake one in tests).
* :func:`evaluate_llm` - loads the base LLM (+ adapter and projector) through
  ``llara.llm.inference`` and calls :func:`evaluate_engine`; used by the Snakemake rules.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llara.data.schema import EVAL, ITEMS, read_table
from llara.evaluate.aggregate import aggregate_tables
from llara.evaluate.blocks import generate_block, rank_block
from llara.evaluate.engine import Engine, LlaraEngine
from llara.evaluate.matching import RULE_NAME, score_outputs
from llara.evaluate.predictions import PREDICTIONS, read_predictions  # noqa: F401 (both importable from here as before)
from llara.io import check_replaceable, write_json, write_parquet
from llara.metrics.ranking import target_ranks
from llara.provenance import provenance

log = logging.getLogger("llara.evaluate")

MODES = ("generate", "rank")
SPLITS = ("test", "valid")


def load_titles(items_path: str | Path) -> dict[int, str]:
    """item_id -> title from items.parquet (schema-checked)."""
    items = read_table(items_path, ITEMS)
    return dict(zip(items.column("item_id").to_pylist(), items.column("title").to_pylist()))


def load_split(path: str | Path, k: int, max_rows: int | None = None) -> pa.Table:
    """Read an eval split, keep ``max_rows`` rows, and check its first ``k`` candidate sets.

    Raises ValueError naming the file when the split is empty, holds fewer than ``k`` sets, or a
    row's candidate set lacks its target (or holds it twice).
    """
    table = read_table(path, EVAL)  # raises on an empty table
    if max_rows is not None:
        if max_rows < 1:
            raise ValueError(f"config evaluate.max_rows must be >= 1 or null, got {max_rows}")
        table = table.slice(0, max_rows)
    sets = table.column("candidate_sets").to_pylist()
    targets = table.column("target").to_pylist()
    n_sets = min(len(s) for s in sets)
    if n_sets < k:
        raise ValueError(f"{path}: rows hold {n_sets} candidate set(s), but {k} are requested "
                         f"(config evaluate.candidate_sets); rebuild the data with data.candidate_sets >= {k}")
    for r, (row_sets, tgt) in enumerate(zip(sets, targets)):
        for s in range(k):
            c = row_sets[s].count(tgt)
            if c != 1:
                raise ValueError(f"{path}: row {r} (target {tgt}), candidate set {s}: the target occurs {c} times "
                                 "among the candidates, expected exactly once")
    return table


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def _progress(iterable, desc: str, total: int, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="chunk", leave=False)


def evaluate_split(engine: Engine, table: pa.Table, titles: dict[int, str], split: str, k: int,
                   modes: Sequence[str] = MODES, first_line_only: bool = True, chunk_rows: int = 32,
                   seed: int = 0, n_resamples: int = 1000, alpha: float = 0.05,
                   progress: bool = True) -> tuple[pa.Table, dict[str, dict], dict[str, dict]]:
    """Run each mode on the first ``k`` candidate sets of one split.

    Returns ``(predictions, blocks, timing)``: the predictions rows, ``{mode: metrics block}`` and
    ``{mode: {"rows", "seconds", "rows_per_s"}}`` (rows = model calls, i.e. rows x sets). When both modes
    run and the engine has ``generate_and_score``, each chunk's prompts are run once for both modes; the
    call's time is split between the modes as the engine reports it (``last_seconds``; else evenly).
    """
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown evaluation mode(s) {bad} in config evaluate.modes; expected a subset of {list(MODES)}")
    n = table.num_rows
    if n == 0:
        raise ValueError(f"split {split!r} is empty; nothing to evaluate")
    users = table.column("user_id").to_pylist()
    targets = table.column("target").to_pylist()
    histories = table.column("history").to_pylist()
    cand_sets = table.column("candidate_sets").to_pylist()
    pieces: list[pa.Table] = []
    blocks: dict[str, dict] = {}
    timing: dict[str, dict] = {}
    chunks = _chunks(n, chunk_rows)
    seconds = {mode: 0.0 for mode in modes}
    outputs_of: dict[int, list[str]] = {}        # candidate set -> generated answers
    scores_of: dict[int, np.ndarray] = {}        # candidate set -> candidate scores

    def check_generated(got, sl):
        if len(got) != sl.stop - sl.start:
            raise RuntimeError(f"generate returned {len(got)} outputs for {sl.stop - sl.start} rows")

    def check_scores(sc, sl, cands):
        if sc.shape != (sl.stop - sl.start, len(cands[sl.start])):
            raise RuntimeError(f"score returned shape {sc.shape} for {sl.stop - sl.start} rows x {len(cands[sl.start])} candidates")

    def rows_of(s):
        cands = [cs[s] for cs in cand_sets]
        return cands, [{"history": h, "candidates": c} for h, c in zip(histories, cands)]

    shared = "generate" in modes and "rank" in modes and callable(getattr(engine, "generate_and_score", None))
    if shared:
        for s in range(k):
            cands, rows = rows_of(s)
            outputs: list[str] = []
            scores = []
            for sl in _progress(chunks, f"{split} generate+rank set {s}", len(chunks), progress):
                t0 = time.perf_counter()
                got, sc = engine.generate_and_score(rows[sl])
                dt = time.perf_counter() - t0
                sc = np.asarray(sc, dtype=np.float64)
                check_generated(got, sl)
                check_scores(sc, sl, cands)
                outputs.extend(got)
                scores.append(sc)
                split_s = getattr(engine, "last_seconds", None) or {}
                g, r = float(split_s.get("generate", 0.0)), float(split_s.get("rank", 0.0))
                share = g / (g + r) if g + r > 0 else 0.5
                seconds["generate"] += dt * share
                seconds["rank"] += dt * (1 - share)
            outputs_of[s], scores_of[s] = outputs, np.concatenate(scores)
    for mode in modes:
        per_set = []
        for s in range(k):
            cands, rows = rows_of(s)
            if mode == "generate":
                if s in outputs_of:
                    outputs = outputs_of[s]
                else:
                    t0 = time.perf_counter()
                    outputs = []
                    for sl in _progress(chunks, f"{split} generate set {s}", len(chunks), progress):
                        got = engine.generate(rows[sl])
                        check_generated(got, sl)
                        outputs.extend(got)
                    seconds[mode] += time.perf_counter() - t0
                o = score_outputs(outputs, cands, targets, titles, first_line_only=first_line_only)
                per_set.append(o)
                pieces.append(pa.table({
                    "split": [split] * n, "mode": [mode] * n, "candidate_set": [s] * n, "row": list(range(n)),
                    "user_id": users, "target": targets, "candidates": cands, "output": outputs,
                    "predicted": o.predicted, "valid": o.valid, "correct": o.correct,
                    "valid_literal": o.valid_literal, "correct_literal": o.correct_literal,
                    "n_named": o.n_named.astype(np.int32), "target_rank": pa.nulls(n, pa.int32()),
                    "scores": pa.nulls(n, pa.list_(pa.float64())),
                }, schema=PREDICTIONS))
                log.info("%s generate set %d: valid %d/%d, correct %d", split, s, int(o.valid.sum()), n, int(o.correct.sum()))
            else:
                if s in scores_of:
                    sc = scores_of[s]
                else:
                    t0 = time.perf_counter()
                    scores = []
                    for sl in _progress(chunks, f"{split} rank set {s}", len(chunks), progress):
                        got_sc = np.asarray(engine.score(rows[sl]), dtype=np.float64)
                        check_scores(got_sc, sl, cands)
                        scores.append(got_sc)
                    seconds[mode] += time.perf_counter() - t0
                    sc = np.concatenate(scores)
                if not np.all(np.isfinite(sc)):
                    raise RuntimeError(f"{split} rank set {s}: the model returned non-finite candidate scores")
                cand_arr = np.asarray(cands, dtype=np.int64)
                ranks = target_ranks(sc, cand_arr, np.asarray(targets))
                per_set.append(ranks)
                correct = ranks == 0
                # the top-scored candidate; a tie at the top counts against the target (as target_ranks)
                is_tgt = cand_arr == np.asarray(targets)[:, None]
                top = cand_arr[np.arange(n), np.where(correct[:, None] | ~is_tgt, sc, -np.inf).argmax(axis=1)]
                pieces.append(pa.table({
                    "split": [split] * n, "mode": [mode] * n, "candidate_set": [s] * n, "row": list(range(n)),
                    "user_id": users, "target": targets, "candidates": cands, "output": pa.nulls(n, pa.string()),
                    "predicted": top, "valid": np.ones(n, bool), "correct": correct,
                    "valid_literal": np.ones(n, bool), "correct_literal": correct,
                    "n_named": pa.nulls(n, pa.int32()), "target_rank": ranks.astype(np.int32), "scores": list(sc),
                }, schema=PREDICTIONS))
                log.info("%s rank set %d: hr@1 %.4f", split, s, float(correct.mean()))
        stats = dict(seed=seed, n_resamples=n_resamples, alpha=alpha)
        if mode == "generate":
            col = lambda attr: np.stack([getattr(o, attr) for o in per_set], axis=1)  # noqa: E731
            blocks[mode] = generate_block(col("valid"), col("correct"), list(range(k)), col("valid_literal"),
                                          col("correct_literal"), col("n_named"), **stats)
        else:
            blocks[mode] = rank_block(np.stack(per_set, axis=1), list(range(k)), **stats)
        timing[mode] = {"rows": n * k, "seconds": round(seconds[mode], 3),
                        "rows_per_s": round(n * k / max(seconds[mode], 1e-9), 4)}
        blocks[mode]["rows_per_s"] = timing[mode]["rows_per_s"]
    return pa.concat_tables(pieces), blocks, timing


def evaluate_engine(engine: Engine, items_path: str | Path, split_paths: dict[str, str | Path],
                    predictions_path: str | Path, metrics_path: str | Path, *, k: int = 1,
                    modes: Sequence[str] = MODES, max_rows: int | None = None, first_line_only: bool = True,
                    chunk_rows: int = 32, seed: int = 0, n_resamples: int = 1000, alpha: float = 0.05,
                    meta: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
                    inputs: dict[str, str | Path] | None = None, progress: bool = True,
                    train_seed: int | None = None) -> dict:
    """Evaluate ``engine`` on each split in ``split_paths`` and write predictions and metrics.

    ``meta`` (method, dataset, seqrec, representation...) is stored at the top of metrics.json,
    ``config`` and ``inputs`` go to the provenance block; ``train_seed`` is the seed the model was
    trained with (None: untrained), recorded with the file's one-run ``aggregate`` block
    (llara.evaluate.aggregate). ``seed`` seeds the bootstraps. Returns the metrics dict.
    """
    t_start = time.perf_counter()
    if k < 1:
        raise ValueError(f"config evaluate.candidate_sets must be >= 1, got {k}")
    if not split_paths:
        raise ValueError("no splits to evaluate (config evaluate.splits is empty)")
    titles = load_titles(items_path)
    tables = {split: load_split(path, k, max_rows) for split, path in split_paths.items()}  # check all first
    preds, splits, rates = [], {}, {}
    for split, table in tables.items():
        p, blocks, timing = evaluate_split(engine, table, titles, split, k, modes, first_line_only, chunk_rows,
                                           seed, n_resamples, alpha, progress)
        preds.append(p)
        splits[split] = {"n": table.num_rows, **blocks}
        rates[split] = {m: t["rows_per_s"] for m, t in timing.items()}
    table = pa.concat_tables(preds)
    write_parquet(table, predictions_path, PREDICTIONS)
    agg = aggregate_tables({train_seed: table}, list(tables), list(modes), seed=seed, n_resamples=n_resamples,
                           alpha=alpha)
    all_inputs = {"items": items_path, **{f"{s}_split": p for s, p in split_paths.items()}, **(inputs or {})}
    metrics = {
        **(meta or {}),
        "metric_rule": RULE_NAME,
        "candidate_sets": k,
        "modes": list(modes),
        "splits": splits,
        "train_seed": train_seed,
        "seeds": [train_seed],
        "aggregate": agg,
        "provenance": provenance(config or {}, all_inputs, seed, device=str(getattr(engine, "device", "cpu")),
                                 wall_time_s=time.perf_counter() - t_start, rows_per_s=rates),
    }
    write_json(metrics, metrics_path)
    return metrics


def evaluate_llm(base_dir: str | Path, items_path: str | Path, split_paths: dict[str, str | Path],
                 predictions_path: str | Path, metrics_path: str | Path, *, dataset: str,
                 method: str = "llara", seqrec: str | None = None, variant: str | None = None,
                 adapter_dir: str | Path | None = None, projector_path: str | Path | None = None,
                 item_embeddings_path: str | Path | None = None, representation: str = "hybrid",
                 k: int = 1, modes: Sequence[str] = MODES, max_rows: int | None = None, batch_size: int = 8,
                 rank_batch_size: int = 4, max_new_tokens: int = 32, dtype: str = "float32",
                 first_line_only: bool = True, seed: int = 0, n_resamples: int = 1000, alpha: float = 0.05,
                 config: dict[str, Any] | None = None, threads: int | None = None, progress: bool = True,
                 templates_path: str | Path | None = None, train_seed: int | None = None) -> dict:
    """Load a tuned LLaRA model (or the zero-shot base model when ``adapter_dir`` is None) and evaluate it.

    ``templates_path``: the prompt templates file (the dataset's ``results/{dataset}/prompts.yaml``); a tuned
    model uses the templates stored at training time when it is None.

    Raises FileNotFoundError naming the missing artefact when the requested dataset/backbone has no
    tuned model (adapter folder or projector file absent).
    """
    for out in (predictions_path, metrics_path):  # before any work: never replace what llara did not write
        check_replaceable(out)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    tuned = adapter_dir is not None or projector_path is not None
    if tuned:
        where = f"dataset {dataset!r}, backbone {seqrec!r}" + (f", variant {variant!r}" if variant else "")
        for name, p in (("LoRA adapter folder", adapter_dir), ("projector", projector_path)):
            if p is None or not Path(p).exists():
                raise FileNotFoundError(f"no tuned model for {where}: the {name} {p} does not exist "
                                        "(build it with the LLM stage's tune rule first)")
    if not Path(base_dir).is_dir():
        raise FileNotFoundError(f"base model folder {base_dir} does not exist (rule base_llm builds it)")
    engine = LlaraEngine.load(base_dir, items_path, item_embeddings_path=item_embeddings_path, adapter_dir=adapter_dir,
                              projector_path=projector_path, dataset=dataset, dtype=dtype, templates_path=templates_path,
                              representation=representation, batch_size=batch_size, rank_batch_size=rank_batch_size,
                              max_new_tokens=max_new_tokens)
    meta = {"method": method, "dataset": dataset, "seqrec": seqrec, "variant": variant,
            "base_model": Path(base_dir).name, "representation": representation}
    inputs: dict[str, str | Path] = {}
    if projector_path is not None:
        inputs["projector"] = projector_path
    if item_embeddings_path is not None:
        inputs["item_embeddings"] = item_embeddings_path
    if templates_path is not None:
        inputs["templates"] = templates_path
    if adapter_dir is not None:
        inputs.update({f"adapter/{f.name}": f for f in sorted(Path(adapter_dir).iterdir()) if f.is_file()})
    # the base model's config and tokenizer files (its weights are identified by the base_llm rule's
    # own provenance; hashing 13 GB of Llama-2 weights on every evaluation is not worth it)
    inputs.update({f"base/{f.name}": f for f in sorted(Path(base_dir).iterdir())
                   if f.is_file() and f.suffix in (".json", ".model", ".txt")})
    return evaluate_engine(engine, items_path, split_paths, predictions_path, metrics_path, k=k, modes=modes,
                           max_rows=max_rows, first_line_only=first_line_only, chunk_rows=max(batch_size, rank_batch_size) * 4,
                           seed=seed, n_resamples=n_resamples, alpha=alpha, meta=meta, config=config, inputs=inputs,
                           progress=progress, train_seed=train_seed)


def evaluate_from_settings(settings: dict[str, Any], *, base_dir: str | Path, items_path: str | Path,
                           split_paths: dict[str, str | Path], predictions_path: str | Path,
                           metrics_path: str | Path, dataset: str, method: str, seqrec: str | None = None,
                           variant: str | None = None, adapter_dir: str | Path | None = None,
                           projector_path: str | Path | None = None, item_embeddings_path: str | Path | None = None,
                           seed: int = 0, threads: int | None = None, progress: bool = True,
                           templates_path: str | Path | None = None, train_seed: int | None = None) -> dict:
    """:func:`evaluate_llm` driven by one method's resolved ``evaluate`` config slice (the rules' params).

    ``settings`` keys: splits, modes, k, max_rows, batch_size, rank_batch_size, max_new_tokens, dtype,
    first_line_only, representation, bootstrap {n_resamples, alpha}. Unknown or missing keys fail.
    """
    need = {"splits", "modes", "k", "max_rows", "batch_size", "rank_batch_size", "max_new_tokens", "dtype",
            "first_line_only", "representation", "bootstrap"}
    missing, extra = need - set(settings), set(settings) - need
    if missing or extra:
        raise ValueError(f"evaluation settings: missing {sorted(missing)}, unknown {sorted(extra)}")
    from llara.evaluate.workflow import SETTING_KEYS
    from llara.settings import check_settings

    # the config schema's types and bounds, as for a Snakemake run (k is evaluate.candidate_sets.<method>)
    check_settings({"evaluate": {**{k: copy.deepcopy(settings[k]) for k in SETTING_KEYS},
                                 "candidate_sets": {"llara": settings["k"]}}})
    s = settings
    unknown = [x for x in s["splits"] if x not in split_paths]
    if unknown:
        raise ValueError(f"config evaluate.splits names {unknown}, but no input file was given for them")
    return evaluate_llm(base_dir, items_path, {x: split_paths[x] for x in s["splits"]}, predictions_path,
                        metrics_path, dataset=dataset, method=method, seqrec=seqrec, variant=variant,
                        adapter_dir=adapter_dir, projector_path=projector_path,
                        item_embeddings_path=item_embeddings_path, representation=s["representation"], k=s["k"],
                        modes=s["modes"], max_rows=s["max_rows"], batch_size=s["batch_size"],
                        rank_batch_size=s["rank_batch_size"], max_new_tokens=s["max_new_tokens"], dtype=s["dtype"],
                        first_line_only=s["first_line_only"], seed=seed, n_resamples=s["bootstrap"]["n_resamples"],
                        alpha=s["bootstrap"]["alpha"], config=s, threads=threads, progress=progress,
                        templates_path=templates_path, train_seed=train_seed)
