"""Config -> the report rule's entries and inputs (workflow/rules/report.smk); no snakemake import."""

from __future__ import annotations

from typing import Any

from llara.evaluate.workflow import llm_name
from llara.report.paper import SEQREC_LABELS


def report_entries(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per (method, dataset) listed by config ``report`` (see llara.report.collect.Entry)."""
    rep = config["report"]
    entries: list[dict[str, Any]] = []
    for d in rep["datasets"]:
        if d not in config.get("datasets", {}):
            raise ValueError(f"config report.datasets lists {d!r}, which is not configured under datasets")
        for b in rep["baselines"]:
            root = f"results/{d}/{b}/seqrec"
            entries.append({"dataset": d, "kind": "seqrec", "label": SEQREC_LABELS[b], "seqrec": b,
                            "metrics": f"{root}/metrics.json", "predictions": f"{root}/ranker_predictions.parquet"})
        if rep["zeroshot"]:
            entries.append({"dataset": d, "kind": "zeroshot", "label": f"Zero-shot {llm_name(config)}",
                            "metrics": f"results/{d}/zeroshot/metrics.json",
                            "predictions": f"results/{d}/zeroshot/predictions.parquet"})
        for s in rep["llara"]:
            root = f"results/{d}/{s}"
            entries.append({"dataset": d, "kind": "llara", "label": f"LLaRA({SEQREC_LABELS[s]})", "seqrec": s,
                            "metrics": f"{root}/metrics.json", "predictions": f"{root}/predictions.parquet",
                            "train_log": f"{root}/llara/train_log.csv"})
            for v in rep["ablations"]:
                a = f"{root}/ablations/{v}"
                entries.append({"dataset": d, "kind": "ablation", "label": f"LLaRA({SEQREC_LABELS[s]}) {v}",
                                "seqrec": s, "variant": v, "metrics": f"{a}/metrics.json",
                                "predictions": f"{a}/predictions.parquet", "train_log": f"{a}/llara/train_log.csv"})
    return entries


def report_inputs(config: dict[str, Any]) -> list[str]:
    """Every file the report reads; ablation train logs are optional (plotted when present)."""
    files: list[str] = []
    for e in report_entries(config):
        files += [e["metrics"], e["predictions"]]
        if e["kind"] == "llara":
            files.append(e["train_log"])
    return files
