"""The report: the paper's Table 1 layout with our and the paper's numbers, paired differences, plots.

Every figure of ours is the mean over training seeds x candidate sets (one seed unless config
``seeds`` lists several), shown with the standard deviation over seeds, a 95% row-bootstrap
interval and the number of seeds and sets behind it; chance level (1/n and 5/n for n candidates)
stands beside every HR@1. Outputs (all written atomically):

* ``table.md``  - Table 1 layout (rows = methods incl. a chance row and, with config ``report.reference``,
  the no-LLM reference rows of llara.evaluate.reference, columns = datasets x
  {ValidRatio, HR@1, seeds x sets}; each cell ours and the paper's value), a details table
  (strict HR@1, min-max over seeds x sets, rank-mode metrics, chance HR@1 / HR@5, sources), the
  per-seed numbers, paired differences, and notes on the paper numbers.
* ``table.csv`` - the same Table 1 in machine-readable wide form.
* ``paired.csv`` - LLaRA minus each other method, and ablation variants against each other, on the
  same rows, candidate sets and seeds.
* ``hr1_ci.png``, ``hr1_seeds.png`` (per-seed spread), ``training.png`` - plots.
"""

from __future__ import annotations

import csv
import io
import logging
from itertools import combinations
from pathlib import Path
from typing import Any

from llara.evaluate.compare import paired_runs
from llara.io import atomic_path, check_replaceable
from llara.metrics.bootstrap import ALPHA, N_RESAMPLES
from llara.report import paper
from llara.report.collect import RANKERS, Entry, Summary, evaluated_sets, summarize
from llara.report.plots import plot_hr1, plot_seed_spread, plot_training

log = logging.getLogger("llara.report")

DATASET_LABELS = {"movielens": "MovieLens", "steam": "Steam", "lastfm": "LastFM"}
CHANCE_LABEL = "Chance (random candidate)"
OUTPUTS = ("table.md", "table.csv", "paired.csv", "hr1_ci.png", "hr1_seeds.png", "training.png")
_KIND_ORDER = {"chance": -1, "reference": 0, "seqrec": 1, "zeroshot": 2, "paper": 3, "ablation": 4, "llara": 5}
_SEQREC_ORDER = {"gru4rec": 0, "caser": 1, "sasrec": 2}
_PAPER_ORDER = {row: i for i, row in enumerate(paper.PAPER)}


def _row_key(label: str, info: dict) -> tuple:
    """The paper's row order: chance, no-LLM references (popularity first), rankers, other LLM methods,
    ablations, LLaRA (GRU4Rec, Caser, SASRec)."""
    kind = info["kind"]
    if kind == "paper":  # a paper-only row joins the group of its kind
        kind = "seqrec" if label in paper.SEQREC_LABELS.values() else ("llara" if label.startswith("LLaRA") else "paper")
    return (_KIND_ORDER[kind], _PAPER_ORDER.get(info["paper_row"] or "", 99),
            _SEQREC_ORDER.get(info["seqrec"] or "", -1 if kind == "reference" else 9), label)


def _fmt(x: float | None, nd: int = 4) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _sd(sd: float | None) -> str:
    return "" if sd is None else f" ± {sd:.4f}"


def _seed_list(seeds: list, untrained: bool = False) -> str:
    """Seeds as text; none known: "untrained" for the zero-shot model, else a dash."""
    seeds = [s for s in seeds if s is not None]
    return ", ".join(map(str, seeds)) if seeds else ("untrained" if untrained else "—")


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _common_sets(entries: list[Entry], split: str, llm_mode: str) -> list[int] | None:
    """The candidate sets every LLM entry of a dataset was evaluated on (None: no LLM entry)."""
    common = None
    for e in entries:
        if e.kind in RANKERS:
            continue
        try:
            s = set(evaluated_sets(e, split, llm_mode))
        except (FileNotFoundError, ValueError):
            continue
        common = s if common is None else common & s
    return None if common is None else sorted(common)


def _chance(summaries: dict[tuple[str, str], Summary], d: str) -> dict[str, float] | None:
    """Chance level of a dataset: a uniform random pick among its n candidates (HR@1 = 1/n, HR@5 = 5/n)."""
    ns = {s.n_candidates for (_, dd), s in summaries.items() if dd == d and s.n_candidates}
    if len(ns) > 1:
        log.warning("%s: methods were scored on different numbers of candidates %s", d, sorted(ns))
    if not ns:
        return None
    n = min(ns)
    return {"n_candidates": n, "hr@1": 1.0 / n, "hr@5": min(1.0, 5.0 / n)}


def _pairs(entries: list[Entry]) -> list[tuple[Entry, Entry]]:
    """LLaRA minus every other method; ablation variants of one backbone against each other."""
    out = [(a, b) for a in entries if a.kind == "llara" for b in entries if b is not a]
    abl = [e for e in entries if e.kind == "ablation"]
    out += [(a, b) for a, b in combinations(abl, 2) if a.seqrec == b.seqrec]
    return out


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
            mode = "rank" if e.kind in RANKERS else llm_mode
            summaries[(e.label, d)] = summarize(e, split, mode, sets, **kw)
    chance = {d: _chance(summaries, d) for d in datasets}

    # ---- rows of Table 1: chance, our methods (+ paper-only rows), in the paper's order
    labels: dict[str, dict] = {}
    if any(chance.values()):
        labels[CHANCE_LABEL] = {"kind": "chance", "seqrec": None, "variant": None, "paper_row": None}
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
            cell = {
                "valid_ratio": s.valid_ratio if s else None, "valid_ratio_sd": s.valid_ratio_sd if s else None,
                "hr1": s.hr1 if s else None, "hr1_sd": s.hr1_sd if s else None, "hr1_ci": s.hr1_ci if s else None,
                "strict_hr1": s.strict_hr1 if s else None, "strict_hr1_sd": s.strict_hr1_sd if s else None,
                "strict_hr1_ci": s.strict_hr1_ci if s else None, "hr1_min": s.hr1_min if s else None,
                "hr1_max": s.hr1_max if s else None, "k": len(s.sets) if s and s.sets else None,
                "n_seeds": s.n_seeds if s else None, "seeds": s.seeds if s else None,
                "n": s.n if s else None, "paper_valid_ratio": pv["valid_ratio"], "paper_hr1": pv["hr@1"],
            }
            if info["kind"] == "chance" and chance[d]:
                cell.update(valid_ratio=1.0, hr1=chance[d]["hr@1"], strict_hr1=chance[d]["hr@1"])
            row[d] = cell
        table_rows.append(row)

    # ---- paired differences on the same rows, candidate sets and training seeds
    paired = []
    for d in datasets:
        ds = [e for e in entries if e.dataset == d and e.has_predictions()]
        for a, b in _pairs(ds):
            for metric in ("hr@1", "strict_hr@1"):
                try:
                    r = paired_runs(a.tables(), b.tables(), split=split, mode_a=llm_mode,
                                    mode_b="rank" if b.kind in RANKERS else llm_mode, metric=metric,
                                    sets=sets_used[d], **kw)
                except ValueError as err:
                    log.warning("no paired comparison %s vs %s on %s: %s", a.label, b.label, d, err)
                    continue
                paired.append({"dataset": d, **{k: v for k, v in r.items() if k not in ("a", "b")},
                               "a": a.label, "b": b.label, "a_value": r["a"], "b_value": r["b"]})

    out.mkdir(parents=True, exist_ok=True)
    _write_text(_markdown(table_rows, summaries, paired, datasets, sets_used, chance, split, llm_mode, config),
                out / "table.md")
    _write_text(_csv(table_rows, datasets), out / "table.csv")
    _write_text(_paired_csv(paired), out / "paired.csv")
    lab = lambda d: DATASET_LABELS.get(d, d)  # noqa: E731
    plot_rows = [{"label": r["method"], "dataset": lab(d), "hr1": r[d]["hr1"], "hr1_ci": r[d]["hr1_ci"],
                  "paper_hr1": r[d]["paper_hr1"]} for r in table_rows if r["kind"] != "chance" for d in datasets]
    chance_hr1 = {lab(d): c["hr@1"] for d, c in chance.items() if c}
    with atomic_path(out / "hr1_ci.png") as tmp:
        plot_hr1(plot_rows, [lab(d) for d in datasets], tmp, chance=chance_hr1)
    spread = [{"label": lbl, "dataset": lab(d), "mean": s.hr1, "sd": s.hr1_sd,
               "per_seed": [(p["seed"], p.get("hr@1")) for p in s.per_seed]}
              for (lbl, d), s in summaries.items()]
    with atomic_path(out / "hr1_seeds.png") as tmp:
        plot_seed_spread(spread, [lab(d) for d in datasets], tmp, chance=chance_hr1)
    logs = {}
    for e in entries:
        runs = e.run_list()
        for r in runs:
            if r.train_log and Path(r.train_log).exists():
                logs[f"{e.label} / {lab(e.dataset)}" + (f" / seed {r.seed}" if len(runs) > 1 else "")] = r.train_log
    with atomic_path(out / "training.png") as tmp:
        plot_training(logs, tmp)
    return {"rows": table_rows, "paired": paired, "sets": sets_used, "chance": chance}


def _runs(c: dict) -> str:
    return "—" if c["n_seeds"] is None or c["k"] is None else f"{c['n_seeds']}×{c['k']}"


def _markdown(rows, summaries, paired, datasets, sets_used, chance, split, llm_mode, config) -> str:
    f = io.StringIO()
    w = lambda s="": f.write(s + "\n")  # noqa: E731
    lab = lambda d: DATASET_LABELS.get(d, d)  # noqa: E731
    w("# LLaRA reproduction: results beside the paper's Table 1")
    w()
    w(f"Split **{split}**; LLM methods in **{llm_mode}** mode (LLaRA's protocol: greedy answer, matched to the "
      "candidate titles, see docs/metrics.md), sequential recommenders as rankers of the same stored candidates. "
      "Each cell: ours, the mean over training seeds × candidate sets, ± the standard deviation over seeds "
      "(shown when there are several) [95% row-bootstrap CI] · paper value. *seeds×sets* counts the evaluations "
      "behind each figure. HR@1 is the paper's definition, correct / valid outputs. The chance row is a uniform "
      "random pick among the candidates (HR@1 = 1/n, HR@5 = 5/n). How to read this table: docs/metrics.md, "
      "section \"Reading the report\".")
    w()
    if any(r["kind"] == "reference" for r in rows):
        w("Reference rows (no LLM; the same rows and stored candidate sets, ties counted against the target): "
          "*Popularity (train targets)* ranks the candidates by how often each is a target in train.parquet; "
          "*Last-item similarity (X emb.)* by the dot product of backbone X's embedding of the row's last history "
          "item with each candidate's. They show what the behavioural signal alone gives.")
        w()
    seeds_by_d: dict[str, set] = {}
    for (_, d), s in summaries.items():
        seeds_by_d.setdefault(d, set()).update(x for x in s.seeds if x is not None)
    for d in datasets:
        s = sets_used[d]
        c = chance[d]
        ch = (f"; {c['n_candidates']} candidates per row: chance HR@1 {c['hr@1']:.4f}, HR@5 {c['hr@5']:.4f}"
              if c else "")
        seeds = sorted(seeds_by_d.get(d, ()))
        w(f"- {lab(d)}: candidate sets {s if s is not None else 'all stored'}; training seeds "
          f"{seeds if seeds else '—'}{ch}")
    w()
    head = ["Method"] + [f"{lab(d)} {m}" for d in datasets for m in ("ValidRatio", "HR@1", "seeds×sets")]
    w("| " + " | ".join(head) + " |")
    w("|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|")
    for r in rows:
        cells = [r["method"] + (f" (paper: {r['paper_row']})" if r["paper_row"] and r["paper_row"] != r["method"] else "")]
        for d in datasets:
            c = r[d]
            if r["kind"] == "chance":
                cells += [_fmt(c["valid_ratio"]), _fmt(c["hr1"]), "—"]
                continue
            vr = (_fmt(c["valid_ratio"]) + _sd(c["valid_ratio_sd"])
                  + (f" · {_fmt(c['paper_valid_ratio'])}" if c["paper_valid_ratio"] is not None else ""))
            hr = (_fmt(c["hr1"]) + _sd(c["hr1_sd"]) + _ci(c["hr1_ci"])
                  + (f" · {_fmt(c['paper_hr1'])}" if c["paper_hr1"] is not None else ""))
            cells += [vr, hr, _runs(c)]
        w("| " + " | ".join(cells) + " |")
    w()
    w("## Details")
    w()
    w("Means over seeds × sets ± sd over seeds [95% CI]; min-max over single (seed, set) evaluations; "
      "rank-mode metrics from candidate log-likelihoods (a ranker's own ranks for the sequential recommenders).")
    w()
    w("| Method | Dataset | rows | seeds | sets | ValidRatio | HR@1 ± sd [CI] | HR@1 min-max | strict HR@1 ± sd [CI] "
      "| rank HR@1 | rank HR@5 | rank NDCG@5 | chance HR@1 / HR@5 | source |")
    w("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for (lbl, d), s in summaries.items():
        c = chance[d]
        ch = f"{c['hr@1']:.4f} / {c['hr@5']:.4f}" if c else "—"
        w(f"| {lbl} | {lab(d)} | {s.n if s.n is not None else '—'} | {_seed_list(s.seeds, s.entry.untrained)} | {len(s.sets) or '—'} "
          f"| {_fmt(s.valid_ratio)} | {_fmt(s.hr1)}{_sd(s.hr1_sd)}{_ci(s.hr1_ci)} | {_fmt(s.hr1_min)}-{_fmt(s.hr1_max)} "
          f"| {_fmt(s.strict_hr1)}{_sd(s.strict_hr1_sd)}{_ci(s.strict_hr1_ci)} | {_fmt(s.rank.get('hr@1'))} "
          f"| {_fmt(s.rank.get('hr@5'))} | {_fmt(s.rank.get('ndcg@5'))} | {ch} | `{s.source}` |")
    if any(s.n_seeds > 1 for s in summaries.values()):
        w()
        w("## Per seed")
        w()
        w("Each training seed's numbers, averaged over the candidate sets (the spread behind ± sd; plot hr1_seeds.png).")
        w()
        w("| Method | Dataset | seed | ValidRatio | HR@1 | strict HR@1 | chance HR@1 |")
        w("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for (lbl, d), s in summaries.items():
            c = chance[d]
            for p in s.per_seed:
                w(f"| {lbl} | {lab(d)} | {_seed_list([p['seed']], s.entry.untrained)} "
                  f"| {_fmt(p.get('valid_ratio'))} | {_fmt(p.get('hr@1'))} | {_fmt(p.get('strict_hr@1'))} "
                  f"| {_fmt(c['hr@1'] if c else None)} |")
    w()
    w("## Paired differences (same rows, candidate sets and seeds)")
    w()
    if paired:
        w("A minus B, both computed on the same bootstrap row draws (each row keeps all its seeds and sets); "
          "seed S of A meets seed S of B (an untrained method meets every seed). *p*: two-sided share of "
          "resampled differences on the other side of zero.")
        w()
        w("| Dataset | A | B | metric | A | B | A - B [95% paired CI] | p | rows | sets | seeds | A - B per seed |")
        w("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
        for p in paired:
            per = ", ".join(f"{x['diff']:+.3f}" for x in p["per_seed"])
            w(f"| {lab(p['dataset'])} | {p['a']} | {p['b']} | {p['metric']} | {p['a_value']:.4f} "
              f"| {p['b_value']:.4f} | {p['diff']:+.4f}{_ci(p['ci'])} | {p['p_value']:.3f} | {p['n']} | {p['sets']} "
              f"| {_seed_list(p['seeds'])} | {per} |")
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
    per = ["valid_ratio", "valid_ratio_sd", "paper_valid_ratio", "hr1", "hr1_sd", "hr1_ci_lo", "hr1_ci_hi", "paper_hr1",
           "strict_hr1", "strict_hr1_sd", "strict_hr1_ci_lo", "strict_hr1_ci_hi", "hr1_min", "hr1_max", "n_seeds",
           "seeds", "k", "n"]
    fields += [f"{d}_{p}" for d in datasets for p in per]
    wr = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        out = {"method": r["method"], "kind": r["kind"], "paper_row": r["paper_row"]}
        for d in datasets:
            c = r[d]
            lo_hi = lambda key: c[key] or [None, None]  # noqa: E731
            vals = {"valid_ratio": c["valid_ratio"], "valid_ratio_sd": c["valid_ratio_sd"],
                    "paper_valid_ratio": c["paper_valid_ratio"], "hr1": c["hr1"], "hr1_sd": c["hr1_sd"],
                    "hr1_ci_lo": lo_hi("hr1_ci")[0], "hr1_ci_hi": lo_hi("hr1_ci")[1], "paper_hr1": c["paper_hr1"],
                    "strict_hr1": c["strict_hr1"], "strict_hr1_sd": c["strict_hr1_sd"],
                    "strict_hr1_ci_lo": lo_hi("strict_hr1_ci")[0], "strict_hr1_ci_hi": lo_hi("strict_hr1_ci")[1],
                    "hr1_min": c["hr1_min"], "hr1_max": c["hr1_max"], "n_seeds": c["n_seeds"],
                    "seeds": " ".join(str(s) for s in (c["seeds"] or []) if s is not None) or None,
                    "k": c["k"], "n": c["n"]}
            out.update({f"{d}_{k}": ("" if v is None else (round(v, 6) if isinstance(v, float) else v))
                        for k, v in vals.items()})
        wr.writerow(out)
    return f.getvalue()


def _paired_csv(paired) -> str:
    f = io.StringIO()
    fields = ["dataset", "a", "b", "metric", "split", "n", "sets", "seeds", "a_value", "b_value", "diff", "ci_lo",
              "ci_hi", "p_value", "diff_per_seed"]
    wr = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
    wr.writeheader()
    for p in paired:
        wr.writerow({"dataset": p["dataset"], "a": p["a"], "b": p["b"], "metric": p["metric"], "split": p["split"],
                     "n": p["n"], "sets": " ".join(map(str, p["sets"])), "seeds": " ".join(map(str, p["seeds"])),
                     "a_value": round(p["a_value"], 6), "b_value": round(p["b_value"], 6), "diff": round(p["diff"], 6),
                     "ci_lo": round(p["ci"][0], 6), "ci_hi": round(p["ci"][1], 6), "p_value": round(p["p_value"], 4),
                     "diff_per_seed": " ".join(f"{x['diff']:.6f}" for x in p["per_seed"])})
    return f.getvalue()
