"""Read every method's results into one normalised summary per (method, dataset).

A method trained with several seeds has several *runs* (one predictions file per training seed);
an untrained method (the zero-shot LLM) has one. Sources, in order of preference:

1. every run's ``predictions.parquet`` (evaluation layout): metrics are recomputed on exactly the
   candidate sets requested (the sets every compared method shares) and aggregated over seeds x
   sets (``llara.evaluate.aggregate``: mean, sd over seeds, min/max, row-bootstrap CI);
2. the method's ``metrics.json``: its ``aggregate`` block, or ``splits.{split}.{mode}`` (one run);
3. ``metrics.json`` of the seqrec stage (``{split}: {per_set, mean, min, max, hr@1_ci95_set0,
   hr@1_ci95_mean}``), normalised here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from llara.evaluate.aggregate import aggregate_outcomes, load_metrics
from llara.evaluate.compare import common_sets, outcome_matrix
from llara.metrics.bootstrap import ALPHA, N_RESAMPLES, aggregate_sets

KINDS = ("seqrec", "llara", "zeroshot", "ablation", "reference")
RANKERS = ("seqrec", "reference")  # no-LLM rows, always read in rank mode
RANK_KEYS = ("hr@1", "hr@5", "ndcg@5")


@dataclass
class Run:
    """One training seed's evaluation of a method (``seed`` None: an untrained method)."""

    seed: int | None
    predictions: str | None = None
    metrics: str | None = None
    train_log: str | None = None


@dataclass
class Entry:
    """One method on one dataset, as the report rule lists it.

    ``runs``: one dict per training seed (keys of :class:`Run`); None: a single run made of
    ``predictions``, ``metrics`` and ``train_log``. ``metrics`` is the method-level file (in a seed
    sweep the aggregate over seeds).
    """

    dataset: str
    kind: str                       # seqrec | llara | zeroshot | ablation | reference
    label: str                      # the table's row label
    metrics: str                    # metrics.json path
    predictions: str | None = None  # predictions.parquet path (per-row outcomes; enables pairing)
    seqrec: str | None = None
    variant: str | None = None      # ablation variant; reference: the scorer (popularity | last_item)
    train_log: str | None = None
    runs: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"report entry {self.label!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.runs is not None and not self.runs:
            raise ValueError(f"report entry {self.label!r}: 'runs' is empty")

    @property
    def mode_default(self) -> str:
        return "rank" if self.kind in RANKERS else "generate"

    @property
    def untrained(self) -> bool:
        """No training seed plays a part (the zero-shot LLM, the popularity reference)."""
        return self.kind == "zeroshot" or (self.kind == "reference" and self.seqrec is None)

    def run_list(self) -> list[Run]:
        """The entry's runs (one per training seed)."""
        if self.runs is None:
            return [Run(None, self.predictions, self.metrics, self.train_log)]
        return [r if isinstance(r, Run) else Run(**r) for r in self.runs]

    def has_predictions(self) -> bool:
        """Every run has a predictions file on disk (per-row outcomes: recomputation and pairing)."""
        return all(r.predictions and Path(r.predictions).exists() for r in self.run_list())

    def tables(self) -> dict:
        """``{training seed: predictions table}`` of every run."""
        return {r.seed: pq.read_table(r.predictions) for r in self.run_list()}


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "a number",
               float: "a number", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def read_entries(path: str | Path) -> list[Entry]:
    """The report entries file (``llara report OUT ENTRIES.json``): a JSON list of objects with the keys of
    :class:`Entry` (``runs``: objects with the keys of :class:`Run`). Anything else raises
    MalformedInputError naming the file, the entry and the key, what was expected and what was found."""
    import errno
    import json
    from dataclasses import MISSING, fields

    from llara.data.parse import MalformedInputError

    path = Path(path)
    expected = "a JSON list of report entries (objects with dataset, kind, label, metrics; llara.report.collect.Entry)"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"no such file; expected {expected}", str(path)) from None
    except UnicodeDecodeError as e:
        raise MalformedInputError(f"{path}: not UTF-8 text (byte {e.start}); expected {expected}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MalformedInputError(f"{path}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                                  f"expected {expected}") from None
    if not isinstance(data, list):
        raise MalformedInputError(f"{path}: expected {expected}, found {_json_type(data)}")
    if not data:
        raise MalformedInputError(f"{path}: the list is empty; expected at least one report entry")
    keys = {f.name: f for f in fields(Entry)}
    required = [k for k, f in keys.items() if f.default is MISSING and f.default_factory is MISSING]
    run_keys = [f.name for f in fields(Run)]
    entries = []
    for i, raw in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(raw, dict):
            raise MalformedInputError(f"{where}: expected an object, found {_json_type(raw)}")
        if isinstance(raw.get("label"), str):
            where += f" ({raw['label']!r})"
        missing = [k for k in required if k not in raw]
        if missing:
            raise MalformedInputError(f"{where}: missing key(s) {missing}; every entry has {required}")
        unknown = sorted(set(raw) - set(keys))
        if unknown:
            raise MalformedInputError(f"{where}: unknown key(s) {unknown}; expected keys among {list(keys)}")
        for k, v in raw.items():
            if k != "runs" and not (isinstance(v, str) or (v is None and k not in required)):
                want = "a string" if k in required else "a string or null"
                raise MalformedInputError(f"{where}, key {k!r}: expected {want}, found {_json_type(v)} {v!r}")
        if raw["kind"] not in KINDS:
            raise MalformedInputError(f"{where}, key 'kind': expected one of {list(KINDS)}, found {raw['kind']!r}")
        runs = raw.get("runs")
        if runs is not None and (not isinstance(runs, list) or not runs):
            raise MalformedInputError(f"{where}, key 'runs': expected a non-empty list of objects (one per "
                                      f"training seed) or null, found {_json_type(runs)} {runs!r}")
        for j, run in enumerate(runs or []):
            at = f"{where}, runs[{j}]"
            if not isinstance(run, dict):
                raise MalformedInputError(f"{at}: expected an object with keys among {run_keys}, found {_json_type(run)}")
            unknown = sorted(set(run) - set(run_keys))
            if unknown:
                raise MalformedInputError(f"{at}: unknown key(s) {unknown}; expected keys among {run_keys}")
            if "seed" not in run:
                raise MalformedInputError(f"{at}: missing key 'seed' (the training seed, or null for an untrained method)")
            if not (run["seed"] is None or (isinstance(run["seed"], int) and not isinstance(run["seed"], bool))):
                raise MalformedInputError(f"{at}, key 'seed': expected an integer or null, found "
                                          f"{_json_type(run['seed'])} {run['seed']!r}")
            for k in (k for k in run_keys if k != "seed"):
                if not (run.get(k) is None or isinstance(run[k], str)):
                    raise MalformedInputError(f"{at}, key {k!r}: expected a string or null, found "
                                              f"{_json_type(run[k])} {run[k]!r}")
        entries.append(Entry(**raw))
    return entries


@dataclass
class Summary:
    """Normalised numbers of one entry on one split (None where the source has no such number).

    Means are over training seeds x candidate sets; ``*_sd`` is the standard deviation over seeds
    (None with one run); min/max over single (seed, set) evaluations.
    """

    entry: Entry
    mode: str
    n: int | None = None
    sets: list[int] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=lambda: [None])
    valid_ratio: float | None = None
    valid_ratio_sd: float | None = None
    hr1: float | None = None
    hr1_ci: list[float] | None = None
    hr1_sd: float | None = None
    strict_hr1: float | None = None
    strict_hr1_ci: list[float] | None = None
    strict_hr1_sd: float | None = None
    hr1_min: float | None = None
    hr1_max: float | None = None
    per_seed: list[dict[str, Any]] = field(default_factory=list)  # {seed, valid_ratio, hr@1, strict_hr@1}
    rank: dict[str, Any] = field(default_factory=dict)  # rank-mode hr@1, hr@5, ndcg@5 (means) when available
    n_candidates: int | None = None
    source: str = ""

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def _metrics_sets(path: str, m: dict, split: str, mode: str) -> list[int]:
    if "splits" in m:
        blk = m["splits"].get(split, {}).get(mode)
        if blk is None:
            raise ValueError(f"{path}: no {split!r}/{mode!r} results")
        return list(blk.get("sets", range(blk.get("k", 1))))
    if "aggregate" in m:
        blk = m["aggregate"].get(split, {}).get(mode)
        if blk is None:
            raise ValueError(f"{path}: no {split!r}/{mode!r} results")
        return list(blk["sets"])
    blk = m.get(split)
    if blk is None:
        raise ValueError(f"{path}: no {split!r} results")
    return list(range(int(blk.get("n_candidate_sets", len(blk.get("per_set", [0]))))))


def evaluated_sets(entry: Entry, split: str, mode: str | None = None) -> list[int]:
    """The candidate-set ids every run of an entry was evaluated on for ``split``."""
    mode = mode or entry.mode_default
    if entry.has_predictions():
        return common_sets([(t, mode) for t in entry.tables().values()], split)
    return _metrics_sets(entry.metrics, load_metrics(entry.metrics), split, mode)


def _from_aggregate(entry: Entry, mode: str, agg: dict, rank: dict | None, source: str) -> Summary:
    mean, sd = agg["mean"], agg["sd"]
    per_seed = [{k: p.get(k) for k in ("seed", "valid_ratio", "hr@1", "strict_hr@1") if k in p} for p in agg["per_seed"]]
    strict = "strict_hr@1" if "strict_hr@1" in mean else "hr@1"  # a ranker's strict HR@1 is its HR@1
    for p in per_seed:
        p.setdefault("strict_hr@1", p.get("hr@1"))
    out = Summary(entry, mode, n=agg["n"], sets=list(agg["sets"]), seeds=list(agg["seeds"]),
                  valid_ratio=mean.get("valid_ratio"), valid_ratio_sd=sd.get("valid_ratio"), hr1=mean.get("hr@1"),
                  hr1_ci=mean.get("hr@1_ci"), hr1_sd=sd.get("hr@1"), strict_hr1=mean.get(strict),
                  strict_hr1_ci=mean.get(f"{strict}_ci"), strict_hr1_sd=sd.get(strict), hr1_min=agg["min"].get("hr@1"),
                  hr1_max=agg["max"].get("hr@1"), per_seed=per_seed, n_candidates=agg.get("n_candidates"),
                  source=source)
    if rank is not None:
        out.rank = {k: rank["mean"].get(k) for k in RANK_KEYS}
    return out


def _from_predictions(entry: Entry, split: str, mode: str, sets: list[int], seed: int, n_resamples: int,
                      alpha: float) -> Summary:
    tables = entry.tables()
    kw = dict(seed=seed, n_resamples=n_resamples, alpha=alpha)
    mats = {}
    for s, t in tables.items():
        try:
            mats[s] = outcome_matrix(t, split, mode, sets)
        except ValueError as e:
            run = next(r for r in entry.run_list() if r.seed == s)
            raise ValueError(f"{run.predictions}: {e}") from None
    agg = aggregate_outcomes(mats, mode, split, **kw)
    rank = agg if mode == "rank" else None
    if rank is None:  # the same model's rank-mode rows, when every run was also scored in rank mode on these sets
        try:
            rank = aggregate_outcomes({s: outcome_matrix(t, split, "rank", sets) for s, t in tables.items()},
                                      "rank", split, **kw)
        except ValueError:
            rank = None
    runs = entry.run_list()
    src = str(runs[0].predictions) + (f" and {len(runs) - 1} more seed(s)" if len(runs) > 1 else "")
    return _from_aggregate(entry, mode, agg, rank, src)


def _from_eval_metrics(entry: Entry, m: dict, split: str, mode: str) -> Summary:
    if "aggregate" in m:
        blk = m["aggregate"].get(split, {}).get(mode)
        if blk is None:
            raise ValueError(f"{entry.metrics}: no {split!r}/{mode!r} results (modes {list(m['aggregate'].get(split, {}))})")
        return _from_aggregate(entry, mode, blk, m["aggregate"][split].get("rank"), str(entry.metrics))
    blk = m["splits"].get(split, {}).get(mode)
    if blk is None:
        raise ValueError(f"{entry.metrics}: no {split!r}/{mode!r} results (modes {list(m['splits'].get(split, {}))})")
    mean = blk["mean"]
    out = Summary(entry, mode, n=blk.get("n"), sets=list(blk.get("sets", [])), valid_ratio=mean.get("valid_ratio"),
                  hr1=mean.get("hr@1"), hr1_ci=mean.get("hr@1_ci"), strict_hr1=mean.get("strict_hr@1"),
                  strict_hr1_ci=mean.get("strict_hr@1_ci"), hr1_min=blk.get("min", {}).get("hr@1"),
                  hr1_max=blk.get("max", {}).get("hr@1"), source=str(entry.metrics))
    rank = m["splits"][split].get("rank")
    if rank is not None:
        out.rank = {k: rank["mean"].get(k) for k in RANK_KEYS}
    return out


def _from_seqrec_metrics(entry: Entry, m: dict, split: str, sets: list[int] | None) -> Summary:
    blk = m.get(split)
    if not isinstance(blk, dict) or "per_set" not in blk:
        raise ValueError(f"{entry.metrics}: expected a {split!r} block with 'per_set' (seqrec layout) or a "
                         "'splits' / 'aggregate' block (evaluation layout)")
    per_set = blk["per_set"]
    k_all = len(per_set)
    sets = list(range(k_all)) if sets is None else [s for s in sets if s < k_all]
    if not sets:
        raise ValueError(f"{entry.metrics}: none of the requested candidate sets were evaluated ({k_all} stored)")
    hr = [per_set[s]["hr@1"] for s in sets]
    agg = aggregate_sets(hr)
    ci = None
    if sets == [0]:
        ci = blk.get("hr@1_ci95_set0")
    elif len(sets) == k_all:
        ci = blk.get("hr@1_ci95_mean")
    mean = lambda key: float(np.mean([per_set[s][key] for s in sets])) if key in per_set[0] else None  # noqa: E731
    seed = m.get("provenance", {}).get("seed")
    return Summary(entry, "rank", n=blk.get("n"), sets=sets, seeds=[seed], valid_ratio=float(blk.get("valid_ratio", 1.0)),
                   hr1=agg["mean"], hr1_ci=ci, strict_hr1=agg["mean"], strict_hr1_ci=ci, hr1_min=agg["min"],
                   hr1_max=agg["max"], rank={k: mean(k) for k in RANK_KEYS}, source=str(entry.metrics))


def summarize(entry: Entry, split: str = "test", mode: str | None = None, sets: list[int] | None = None,
              seed: int = 0, n_resamples: int = N_RESAMPLES, alpha: float = ALPHA) -> Summary:
    """The entry's numbers on ``split`` in ``mode`` (default: rank for seqrec, generate otherwise),
    over all its runs (training seeds).

    With per-row predictions, metrics are recomputed on exactly ``sets`` (None: the sets every run
    was evaluated on); otherwise they are read from the metrics file.
    """
    mode = mode or entry.mode_default
    if entry.has_predictions():
        if sets is None:
            sets = evaluated_sets(entry, split, mode)
        return _from_predictions(entry, split, mode, list(sets), seed, n_resamples, alpha)
    m = load_metrics(entry.metrics)
    if "splits" in m or "aggregate" in m:
        s = _from_eval_metrics(entry, m, split, mode)
        if sets is not None and s.sets and s.sets != list(sets):
            s.source += f" (sets {s.sets}; pairing sets {list(sets)} needs predictions)"
        return s
    return _from_seqrec_metrics(entry, m, split, sets)
