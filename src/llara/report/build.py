"""The report: the paper's Table 1 layout with our and the paper's numbers, paired differences, plots.

Outputs (all written atomically):

* ``table.md``  - Table 1 layout (rows = methods, columns = datasets x {ValidRatio, HR@1}; each cell
  ours [95% CI] and the paper's value), a details table (strict HR@1, min-max over candidate sets,
  rank-mode metrics, sources), paired differences, and notes on the paper numbers.
* ``table.csv`` - the same Table 1 in machine-readable wide form.
* ``paired.csv`` - LLaRA minus each other method on the same rows and candidate sets.
* ``hr1_ci.png``, ``training.png`` - plots.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from llara.evaluate.compare import paired_difference
from llara.evaluate.stats import ALPHA, N_RESAMPLES
from llara.io import atomic_path, check_replaceable
from llara.report import paper
from llara.report.collect import Entry, Summary, evaluated_sets, summarize
from llara.report.plots import plot_hr1, plot_training

log = logging.getLogger("llara.report")

DATASET_LABELS = {"movielens": "MovieLens", "steam": "Steam", "lastfm": "LastFM"}
OUTPUTS = ("table.md", "table.csv", "paired.csv", "hr1_ci.png", "training.png")
_KIND_ORDER = {"seqrec": 0, "zeroshot": 1, "paper": 2, "ablation": 3, "llara": 4}
_SEQREC_ORDER = {"gru4rec": 0, "caser": 1, "sasrec": 2}
_PAPER_ORDER = {row: i for i, row in enumerate(paper.PAPER)}


def _row_key(label: str, info: dict) -> tuple:
    """The paper's row order: rankers, other LLM methods, ablations, LLaRA (backbones GRU4Rec, Caser, SASRec)."""
    kind = info["kind"]
    if kind == "paper":  # a paper-only row joins the group of its kind
        kind = "seqrec" if label in paper.SEQREC_LABELS.values() else ("llara" if label.startswith("LLaRA") else "paper")
    return (_KIND_ORDER[kind], _PAPER_ORDER.get(info["paper_row"] or "", 99),
            _SEQREC_ORDER.get(info["seqrec"] or "", 9), label)


def _fmt(x: float | None, nd: int = 4) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _common_sets(entries: list[Entry], split: str, llm_mode: str) -> list[int] | None:
    """The candidate sets every LLM entry of a dataset was evaluated on (None: no LLM entry)."""
    common = None
    for e in entries:
        if e.kind == "seqrec":
            continue
        try:
            s = set(evaluated_sets(e, split, llm_mode))
        except (FileNotFoundError, ValueError):
            continue
        common = s if common is None else common & s
    return None if common is None else sorted(common)


def build_report(entries: list[Entry | dict[str, Any]], out_dir: str | Path, *, split: str = "test",
                 llm_mode: str = "generate", paper_rows: bool = True, seed: int = 0,
                 n_resamples: int = N_RESAMPLES, alpha: float = ALPHA, config: dict | None = None) -> dict:
    """Build every report file in ``out_dir`` from the listed results. Returns the Table 1 rows."""
    entries = [e if isinstance(e, Entry) else Entry(**e) for e in entries]
    if not entries:
        raise ValueError("the report lists no results (config report: datasets/methods select nothing)")
    out = Path(out_dir)
    for name in OUTPUTS:  # before any work: never replace what llara did not write
        check_replaceable(out / name)
    datasets = [d for d in paper.DATASETS if any(e.dataset == d for e in entries)]
    datasets += sorted({e.dataset for e in entries} - set(datasets))
    summaries: dict[tuple[str, str], Summary] = {}
    sets_used: dict[str, list[int] | None] = {}
    kw = dict(seed=seed, n_resamples=n_resamples, alpha=alpha)
    for d in datasets:
        ds_entries = [e for e in entries if e.dataset == d]
        sets = _common_sets(ds_entries, split, llm_mode)
        sets_used[d] = sets
        for e in ds_entries:
            mode = "rank" if e.kind == "seqrec" else llm_mode
            summaries[(e.label, d)] = summarize(e, split, mode, sets, **kw)

    # ---- rows of Table 1: our methods (+ paper-only rows), in the paper's order
    labels: dict[str, dict] = {}
    for e in entries:
        labels.setdefault(e.label, {"kind": e.kind, "seqrec": e.seqrec, "variant": e.variant,
                                    "paper_row": paper.paper_row_for(e.kind, e.seqrec, e.variant)})
    if paper_rows:
        ours_paper = {v["paper_row"] for v in labels.values()}
        for row in paper.PAPER:
            if row not in ours_paper and row not in labels and any(
                    paper.paper_value(row, d, "hr@1") is not None for d in datasets):
                labels[row] = {"kind": "paper", "seqrec": None, "variant": None, "paper_row": row}
    order = sorted(labels, key=lambda lab: _row_key(lab, labels[lab]))
    table_rows = []
    for lab in order:
        info = labels[lab]
        row = {"method": lab, "kind": info["kind"], "paper_row": info["paper_row"] or ""}
        for d in datasets:
            s = summaries.get((lab, d))
            pv = {m: paper.paper_value(info["paper_row"], d, m) for m in ("valid_ratio", "hr@1")}
            row[d] = {
                "valid_ratio": s.valid_ratio if s else None, "hr1": s.hr1 if s else None,
                "hr1_ci": s.hr1_ci if s else None, "strict_hr1": s.strict_hr1 if s else None,
                "strict_hr1_ci": s.strict_hr1_ci if s else None, "hr1_min": s.hr1_min if s else None,
                "hr1_max": s.hr1_max if s else None, "k": len(s.sets) if s and s.sets else None,
                "n": s.n if s else None, "paper_valid_ratio": pv["valid_ratio"], "paper_hr1": pv["hr@1"],
            }
        table_rows.append(row)

    # ---- paired differences: each LLaRA entry minus every other entry with predictions, same dataset
    paired = []
    for d in datasets:
        ds = [e for e in entries if e.dataset == d and e.predictions and Path(e.predictions).exists()]
        for a in (e for e in ds if e.kind == "llara"):
            for b in ds:
                if b is a:
                    continue
                for metric in ("hr@1", "strict_hr@1"):
                    try:
                        r = paired_difference(pq.read_table(a.predictions), pq.read_table(b.predictions), split=split,
                                              mode_a=llm_mode, mode_b="rank" if b.kind == "seqrec" else llm_mode,
                                              metric=metric, sets=sets_used[d], **kw)
                    except ValueError as err:
                        log.warning("no paired comparison %s vs %s on %s: %s", a.label, b.label, d, err)
                        continue
                    paired.append({"dataset": d, **{k: v for k, v in r.items() if k not in ("a", "b")},
                                   "a": a.label, "b": b.label, "a_value": r["a"], "b_value": r["b"]})

    out.mkdir(parents=True, exist_ok=True)
    _write_text(_markdown(table_rows, summaries, paired, datasets, sets_used, split, llm_mode, config), out / "table.md")
    _write_text(_csv(table_rows, datasets), out / "table.csv")
    _write_text(_paired_csv(paired), out / "paired.csv")
    lab = lambda d: DATASET_LABELS.get(d, d)  # noqa: E731
    plot_rows = [{"label": r["method"], "dataset": lab(d), "hr1": r[d]["hr1"], "hr1_ci": r[d]["hr1_ci"],
                  "paper_hr1": r[d]["paper_hr1"]} for r in table_rows for d in datasets]
    with atomic_path(out / "hr1_ci.png") as tmp:
        plot_hr1(plot_rows, [lab(d) for d in datasets], tmp)
    logs = {f"{e.label} / {lab(e.dataset)}": e.train_log for e in entries if e.train_log and Path(e.train_log).exists()}
    with atomic_path(out / "training.png") as tmp:
        plot_training(logs, tmp)
    return {"rows": table_rows, "paired": paired, "sets": sets_used}


def _markdown(rows, summaries, paired, datasets, sets_used, split, llm_mode, config) -> str:
    f = io.StringIO()
    w = lambda s="": f.write(s + "\n")  # noqa: E731
    w("# LLaRA reproduction: results beside the paper's Table 1")
    w()
    w(f"Split **{split}**; LLM methods in **{llm_mode}** mode (LLaRA's protocol: greedy answer, matched to the "
      "candidate titles, see docs/metrics.md), sequential recommenders as rankers of the same stored candidates. "
      "Each cell: ours (mean over the evaluated candidate sets) [95% row-bootstrap CI] · paper value. "
      "HR@1 is the paper's definition, correct / valid outputs.")
    w()
    for d in datasets:
        s = sets_used[d]
        w(f"- {DATASET_LABELS.get(d, d)}: candidate sets {s if s is not None else 'all stored'}")
    w()
    head = ["Method"] + [f"{DATASET_LABELS.get(d, d)} {m}" for d in datasets for m in ("ValidRatio", "HR@1")]
    w("| " + " | ".join(head) + " |")
    w("|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|")
    for r in rows:
        cells = [r["method"] + (f" (paper: {r['paper_row']})" if r["paper_row"] and r["paper_row"] != r["method"] else "")]
        for d in datasets:
            c = r[d]
            vr = _fmt(c["valid_ratio"]) + (f" · {_fmt(c['paper_valid_ratio'])}" if c["paper_valid_ratio"] is not None else "")
            hr = _fmt(c["hr1"]) + _ci(c["hr1_ci"]) + (f" · {_fmt(c['paper_hr1'])}" if c["paper_hr1"] is not None else "")
            cells += [vr, hr]
        w("| " + " | ".join(cells) + " |")
    w()
    w("## Details")
    w()
    w("| Method | Dataset | rows | sets | ValidRatio | HR@1 [CI] | HR@1 min-max over sets | strict HR@1 [CI] "
      "| rank HR@1 | rank HR@5 | rank NDCG@5 | source |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for (lab, d), s in summaries.items():
        w(f"| {lab} | {DATASET_LABELS.get(d, d)} | {s.n if s.n is not None else '—'} | {len(s.sets) or '—'} "
          f"| {_fmt(s.valid_ratio)} | {_fmt(s.hr1)}{_ci(s.hr1_ci)} | {_fmt(s.hr1_min)}-{_fmt(s.hr1_max)} "
          f"| {_fmt(s.strict_hr1)}{_ci(s.strict_hr1_ci)} | {_fmt(s.rank.get('hr@1'))} | {_fmt(s.rank.get('hr@5'))} "
          f"| {_fmt(s.rank.get('ndcg@5'))} | `{s.source}` |")
    w()
    w("## Paired differences (same rows, same candidate sets)")
    w()
    if paired:
        w("| Dataset | A | B | metric | A | B | A - B [95% paired CI] | p | rows | sets |")
        w("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for p in paired:
            w(f"| {DATASET_LABELS.get(p['dataset'], p['dataset'])} | {p['a']} | {p['b']} | {p['metric']} | {p['a_value']:.4f} "
              f"| {p['b_value']:.4f} | {p['diff']:+.4f}{_ci(p['ci'])} | {p['p_value']:.3f} | {p['n']} | {p['sets']} |")
    else:
        w("No pair of methods with per-row predictions on the same dataset.")
    w()
    w("## Paper numbers")
    w()
    w(f"Paper column: {paper.PAPER_SOURCE}. A dash means the cell was not verified from a primary source "
      "and is deliberately left empty.")
    for row, note in paper.PAPER_NOTES.items():
        if any(r["paper_row"] == row or r["method"] == row for r in rows):
            w(f"- {row}: {note}")
    w()
    w(f"For reference, the authors' post-publication numbers ({paper.README_SOURCE}):")
    w()
    w("| Method | " + " | ".join(f"{DATASET_LABELS[d]} ValidRatio | {DATASET_LABELS[d]} HR@1" for d in paper.DATASETS) + " |")
    w("| --- |" + " ---: |" * (2 * len(paper.DATASETS)))
    for row, vals in paper.README_2024_07.items():
        w(f"| {row} | " + " | ".join(f"{_fmt(vals[d]['valid_ratio'])} | {_fmt(vals[d]['hr@1'])}" for d in paper.DATASETS) + " |")
    if config:
        w()
        w("Report configuration: `" + ", ".join(f"{k}={v}" for k, v in config.items()) + "`")
    return f.getvalue()


def _csv(rows, datasets) -> str:
    f = io.StringIO()
    fields = ["method", "kind", "paper_row"]
    per = ["valid_ratio", "paper_valid_ratio", "hr1", "hr1_ci_lo", "hr1_ci_hi", "paper_hr1", "strict_hr1",
           "strict_hr1_ci_lo", "strict_hr1_ci_hi", "hr1_min", "hr1_max", "k", "n"]
    fields += [f"{d}_{p}" for d in datasets for p in per]
    wr = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        out = {"method": r["method"], "kind": r["kind"], "paper_row": r["paper_row"]}
        for d in datasets:
            c = r[d]
            vals = {"valid_ratio": c["valid_ratio"], "paper_valid_ratio": c["paper_valid_ratio"], "hr1": c["hr1"],
                    "hr1_ci_lo": (c["hr1_ci"] or [None, None])[0], "hr1_ci_hi": (c["hr1_ci"] or [None, None])[1],
                    "paper_hr1": c["paper_hr1"], "strict_hr1": c["strict_hr1"],
                    "strict_hr1_ci_lo": (c["strict_hr1_ci"] or [None, None])[0],
                    "strict_hr1_ci_hi": (c["strict_hr1_ci"] or [None, None])[1],
                    "hr1_min": c["hr1_min"], "hr1_max": c["hr1_max"], "k": c["k"], "n": c["n"]}
            out.update({f"{d}_{k}": ("" if v is None else (round(v, 6) if isinstance(v, float) else v))
                        for k, v in vals.items()})
        wr.writerow(out)
    return f.getvalue()


def _paired_csv(paired) -> str:
    f = io.StringIO()
    fields = ["dataset", "a", "b", "metric", "split", "n", "sets", "a_value", "b_value", "diff", "ci_lo", "ci_hi", "p_value"]
    wr = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
    wr.writeheader()
    for p in paired:
        wr.writerow({"dataset": p["dataset"], "a": p["a"], "b": p["b"], "metric": p["metric"], "split": p["split"],
                     "n": p["n"], "sets": " ".join(map(str, p["sets"])), "a_value": round(p["a_value"], 6),
                     "b_value": round(p["b_value"], 6), "diff": round(p["diff"], 6), "ci_lo": round(p["ci"][0], 6),
                     "ci_hi": round(p["ci"][1], 6), "p_value": round(p["p_value"], 4)})
    return f.getvalue()
