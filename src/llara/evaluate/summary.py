"""The short summary a run ends with: ``summary.md`` beside a method's metrics.json, also printed.

One table per evaluation: HR@1 with its 95% interval, HR@1 over all rows and ValidRatio for each mode
(generate, rank) and split, the chance level 1/n beside them, and the backbone (the seqrec model LLaRA
reads) on the same split and candidate sets, from its training stage's ``seqrec/metrics.json``; then the
paths of metrics.json and of the report. :func:`render_summary` is a pure function of the metrics dicts;
:func:`write_summary` reads the files and writes ``summary.md`` atomically (rule ``evaluate``, and
``aggregate_seeds`` in a seed sweep). The figures are the ``aggregate`` block's (docs/metrics.md), so a
sweep's summary is over seeds x sets.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llara.evaluate.aggregate import load_metrics
from llara.io import atomic_path, check_replaceable

REPORT_TABLE = "results/report/table.md"  # rule report's table (workflow/rules/report.smk)
# display names of the backbones; the same as llara.report.paper.SEQREC_LABELS (a later stage: not imported)
BACKBONE_LABELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "caser": "Caser"}
NO_VALUE = "—"


def method_label(metrics: Mapping[str, Any]) -> str:
    """How the report names the method of ``metrics`` (``LLaRA(SASRec)``, ``Zero-shot tiny``, ...)."""
    seqrec = metrics.get("seqrec")
    backbone = BACKBONE_LABELS.get(seqrec, seqrec)
    method = metrics.get("method")
    if method == "llara":
        return f"LLaRA({backbone})"
    if method == "ablation":
        return f"LLaRA({backbone}) {metrics.get('variant')}"
    if method == "zeroshot":
        return f"Zero-shot {metrics.get('base_model')}"
    return str(method)


def _fmt(value: float | None) -> str:
    return NO_VALUE if value is None else f"{value:.4f}"


def _hr1_cell(value: float, ci: Sequence[float] | None, sd: float | None) -> str:
    text = _fmt(value) + (f" ± {sd:.4f}" if sd is not None else "")
    return text + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci is not None else f" [{NO_VALUE}]")


def backbone_hr1(backbone: Sequence[Mapping[str, Any]], split: str, sets: Sequence[int]) -> dict[str, Any] | None:
    """The backbone's HR@1 on ``split`` over candidate sets ``sets``, from its seqrec ``metrics.json`` (one per
    training seed): ``{"n", "hr@1", "ci", "sd", "n_seeds", "n_sets", "valid_ratio"}``, or None when a file lacks
    the split, the sets or a figure (the summary then says so; it never fails an evaluation over it). With one
    seed, the 95% interval the file stores for exactly these sets (set 0, or the mean over all its sets), else
    None; with several seeds the mean over seeds and their sd (ddof 1)."""
    if not backbone or not sets:
        return None
    per_seed, ns, ratios = [], set(), []
    try:
        for m in backbone:
            block = m.get(split)
            if not isinstance(block, Mapping) or len(block.get("per_set", [])) <= max(sets):
                return None
            per_seed.append(float(sum(block["per_set"][s]["hr@1"] for s in sets) / len(sets)))
            ns.add(block.get("n"))
            ratios.append(float(block.get("valid_ratio", 1.0)))
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return None
    ci = None
    if len(backbone) == 1:
        block = backbone[0][split]
        if list(sets) == list(range(len(block["per_set"]))):
            ci = block.get("hr@1_ci95_mean")
        elif list(sets) == [0]:
            ci = block.get("hr@1_ci95_set0")
        if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci)):
            ci = None
    return {"n": ns.pop() if len(ns) == 1 else None, "hr@1": sum(per_seed) / len(per_seed), "ci": ci,
            "sd": statistics.stdev(per_seed) if len(per_seed) > 1 else None, "n_seeds": len(per_seed),
            "n_sets": len(sets), "valid_ratio": sum(ratios) / len(ratios)}


def render_summary(metrics: Mapping[str, Any], metrics_path: str | Path,
                   backbone: Sequence[Mapping[str, Any]] = (), report_path: str | Path = REPORT_TABLE) -> str:
    """The summary of one method's ``metrics`` (its metrics.json, one run or a sweep's aggregate) as Markdown.

    ``backbone``: the backbone's seqrec ``metrics.json`` dicts, one per training seed (none: no backbone row).
    Rows: each split (test first) x mode of the ``aggregate`` block, then the backbone per split.
    """
    agg = metrics.get("aggregate") or {}
    if not agg:
        raise ValueError(f"{metrics_path}: no 'aggregate' block; expected an evaluation's metrics.json "
                         "(docs/metrics.md)")
    label = method_label(metrics)
    seqrec = metrics.get("seqrec")
    backbone_label = f"{BACKBONE_LABELS.get(seqrec, seqrec)} (backbone)"
    lines = [f"## {label} on {metrics.get('dataset')}", "",
             "| method | split | mode | rows | seeds×sets | HR@1 [95% CI] | HR@1 over all rows | ValidRatio "
             "| chance HR@1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    for split in sorted(agg, key=lambda s: (s != "test", s)):
        chance = None
        for mode, b in agg[split].items():
            mean, sd = b["mean"], b.get("sd") or {}
            chance = 1.0 / b["n_candidates"] if b.get("n_candidates") else None
            lines.append(f"| {label} | {split} | {mode} | {b['n']} | {b['n_seeds']}×{b['n_sets']} | "
                         f"{_hr1_cell(mean['hr@1'], mean.get('hr@1_ci'), sd.get('hr@1'))} | "
                         f"{_fmt(mean.get('strict_hr@1', mean['hr@1'] if mode == 'rank' else None))} | "
                         f"{_fmt(mean.get('valid_ratio'))} | {_fmt(chance)} |")
        sets = next(iter(agg[split].values()), {}).get("sets", [])
        bb = backbone_hr1(backbone, split, sets) if backbone else None
        if bb is not None:
            lines.append(f"| {backbone_label} | {split} | rank | {bb['n'] if bb['n'] is not None else NO_VALUE} | "
                         f"{bb['n_seeds']}×{bb['n_sets']} | {_hr1_cell(bb['hr@1'], bb['ci'], bb['sd'])} | "
                         f"{_fmt(bb['hr@1'])} | {_fmt(bb['valid_ratio'])} | {_fmt(chance)} |")
            rows = {b["n"] for b in agg[split].values()}
            if rows != {bb["n"]}:
                notes.append(f"The backbone's {split} figures are over all {bb['n']} rows of the split (its "
                             f"training stage's evaluation); {label}'s over {'/'.join(map(str, sorted(rows)))} "
                             "(config evaluate.max_rows).")
        elif backbone:
            notes.append(f"No backbone row for {split}: its metrics.json lacks the split or candidate sets {sets}.")
    lines += ["", "HR@1: the paper's correct / valid answers in generate mode (read it with ValidRatio); HR@1 over "
              "all rows: correct / rows, an invalid answer counts as a miss (comparable with a ranker's HR@1). "
              "[lo, hi]: 95% row bootstrap; ± sd over training seeds; seeds×sets: the evaluations behind a "
              "figure. Chance: a uniform pick among the n candidates (1/n).", *notes, "",
              f"- metrics: {metrics_path}",
              f"- report: {report_path} (every method, paired differences; build it with "
              f"`snakemake --cores 2 {report_path}`)"]
    return "\n".join(lines) + "\n"


def write_summary(metrics_path: str | Path, out_path: str | Path, backbone_paths: Sequence[str | Path] = (),
                  report_path: str | Path = REPORT_TABLE) -> str:
    """Render the summary of the metrics.json at ``metrics_path`` (with the backbone's seqrec metrics.json
    files ``backbone_paths``, one per training seed) and write it atomically to ``out_path``; returns the text."""
    check_replaceable(out_path)
    text = render_summary(load_metrics(metrics_path), metrics_path, [load_metrics(p) for p in backbone_paths], report_path)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return text
