"""Config -> the report rule's entries and inputs (workflow/rules/report.smk); no snakemake import.

A trained method (seqrec backbone as ranker, LLaRA, ablation) lists one run per training seed
(config ``seeds``; llara.seeds): its per-seed predictions and train logs; its ``metrics`` is the
method-level file (in a seed sweep the aggregate over seeds, so the report depends on it). The
zero-shot LLM is untrained: one run. With config ``report.reference`` the no-LLM reference rows
(llara.evaluate.reference) join: popularity (untrained, one run per dataset) and last-item similarity
with each listed backbone's embeddings (one run per training seed, like the backbone's ranker row).
"""

from __future__ import annotations

from typing import Any

from llara.evaluate.reference import LABELS as REFERENCE_LABELS
from llara.evaluate.workflow import llm_name, method_files, popularity_files, seed_runs
from llara.report.paper import SEQREC_LABELS
from llara.seeds import train_root


def _trained(config: dict[str, Any], kind: str, d: str, s: str, variant: str | None = None) -> dict[str, Any]:
    runs = seed_runs(config, kind, d, s, variant)
    if kind in ("llara", "ablation"):
        sub = "llara" if kind == "llara" else f"ablations/{variant}/llara"
        for r in runs:
            r["train_log"] = f"{train_root(config, d, s, r['seed'])}/{sub}/train_log.csv"
    return {"metrics": method_files(kind, d, s, variant)["metrics"], "runs": runs}


def report_entries(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per (method, dataset) listed by config ``report`` (see llara.report.collect.Entry)."""
    rep = config["report"]
    entries: list[dict[str, Any]] = []
    for d in rep["datasets"]:
        if d not in config.get("datasets", {}):
            raise ValueError(f"config report.datasets lists {d!r}, which is not configured under datasets")
        for b in rep["baselines"]:
            entries.append({"dataset": d, "kind": "seqrec", "label": SEQREC_LABELS[b], "seqrec": b,
                            **_trained(config, "seqrec", d, b)})
        if rep.get("reference", True):
            entries.append({"dataset": d, "kind": "reference", "label": REFERENCE_LABELS["popularity"],
                            "variant": "popularity", **popularity_files(d)})
            for b in dict.fromkeys(rep["baselines"] + rep["llara"]):  # every backbone the report shows
                entries.append({"dataset": d, "kind": "reference", "variant": "last_item", "seqrec": b,
                                "label": f"{REFERENCE_LABELS['last_item']} ({SEQREC_LABELS[b]} emb.)",
                                **_trained(config, "last_item", d, b)})
        if rep["zeroshot"]:
            entries.append({"dataset": d, "kind": "zeroshot", "label": f"Zero-shot {llm_name(config)}",
                            "metrics": f"results/{d}/zeroshot/metrics.json",
                            "predictions": f"results/{d}/zeroshot/predictions.parquet"})
        for s in rep["llara"]:
            entries.append({"dataset": d, "kind": "llara", "label": f"LLaRA({SEQREC_LABELS[s]})", "seqrec": s,
                            **_trained(config, "llara", d, s)})
            for v in rep["ablations"]:
                entries.append({"dataset": d, "kind": "ablation", "label": f"LLaRA({SEQREC_LABELS[s]}) {v}",
                                "seqrec": s, "variant": v, **_trained(config, "ablation", d, s, v)})
    return entries


def report_inputs(config: dict[str, Any]) -> list[str]:
    """Every file the report reads: each method's metrics.json (the aggregate in a seed sweep), every run's
    predictions, and LLaRA's train logs (ablation train logs are optional: plotted when present)."""
    files: list[str] = []
    for e in report_entries(config):
        files.append(e["metrics"])
        if "runs" not in e:
            files.append(e["predictions"])
            continue
        for r in e["runs"]:
            files.append(r["predictions"])
            if e["kind"] == "llara":
                files.append(r["train_log"])
    return list(dict.fromkeys(files))
