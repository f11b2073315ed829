"""Config -> rule inputs/params for the evaluation rules (workflow/rules/evaluate.smk).

Pure functions of the validated config dict (no snakemake import), so the .smk files hold only rules
and the mapping is unit-testable.
"""

from __future__ import annotations

from typing import Any

SEQREC = ("sasrec", "gru4rec", "caser")
SETTING_KEYS = ("splits", "modes", "max_rows", "batch_size", "rank_batch_size", "max_new_tokens", "dtype",
                "first_line_only", "bootstrap")


def llm_name(config: dict[str, Any]) -> str:
    """The base model's folder name under resources/llm/ (config ``llm.name``)."""
    try:
        return str(config["llm"]["name"])
    except (KeyError, TypeError):
        raise ValueError("config key llm.name is missing: it names the base model folder resources/llm/{name}/") from None


def check_dataset(config: dict[str, Any], dataset: str) -> None:
    if dataset not in config.get("datasets", {}):
        raise ValueError(f"dataset {dataset!r} is not configured (config key datasets.{dataset}); "
                         f"configured: {sorted(config.get('datasets', {}))}")


def eval_settings(config: dict[str, Any], method: str, variant: str | None = None) -> dict[str, Any]:
    """The ``evaluate`` slice of one method (llara | zeroshot | ablation), with k and representation resolved."""
    ev = config["evaluate"]
    if method == "ablation":
        key = "ablations"
        tuned_with = (config.get("tune", {}).get("variants", {}).get(variant) or {}).get("representation")
        rep = ev["ablation_representation"].get(variant) or tuned_with or "hybrid"
    elif method == "llara":
        key, rep = method, ev["representation"]["llara"]
    elif method == "zeroshot":
        key, rep = method, "plain"  # the untuned model has no learned special tokens: bare titles
    else:
        raise ValueError(f"unknown evaluation method {method!r}; expected llara, zeroshot or ablation")
    k = ev["candidate_sets"][key]
    stored = config.get("data", {}).get("candidate_sets")
    if stored is not None and k > stored:
        raise ValueError(f"config evaluate.candidate_sets.{key} = {k} exceeds data.candidate_sets = {stored} "
                         "(the candidate sets stored per row)")
    return {**{name: ev[name] for name in SETTING_KEYS}, "k": k, "representation": rep}


def eval_inputs(config: dict[str, Any], kind: str, dataset: str, seqrec: str | None = None,
                variant: str | None = None) -> dict[str, str]:
    """Inputs of an LLM evaluation rule: base model folder, items, splits (+ the tuned model unless zero-shot)."""
    check_dataset(config, dataset)
    d = {"base": f"resources/llm/{llm_name(config)}", "item_table": f"results/{dataset}/data/items.parquet"}
    d.update({f"split_{s}": f"results/{dataset}/data/{s}.parquet" for s in config["evaluate"]["splits"]})
    if kind == "zeroshot":  # a tuned model evaluates with the templates stored in its projector file
        d["templates"] = f"results/{dataset}/prompts.yaml"
    else:
        if seqrec not in SEQREC:
            raise ValueError(f"unknown backbone {seqrec!r}; expected one of {SEQREC}")
        root = f"results/{dataset}/{seqrec}"
        tuned = f"{root}/llara" if kind == "llara" else f"{root}/ablations/{variant}/llara"
        d["adapter"] = f"{tuned}/adapter"
        d["projector"] = f"{tuned}/projector.safetensors"
        d["item_embeddings"] = f"{root}/seqrec/item_embeddings.parquet"
    return d


def seqrec_ranker_inputs(config: dict[str, Any], dataset: str, seqrec: str) -> dict[str, str]:
    """Inputs of rule evaluate_seqrec: the trained backbone, items and the evaluated splits."""
    check_dataset(config, dataset)
    return {"model": f"results/{dataset}/{seqrec}/seqrec/model.safetensors",
            "item_table": f"results/{dataset}/data/items.parquet",
            **{f"split_{s}": f"results/{dataset}/data/{s}.parquet" for s in config["evaluate"]["splits"]}}
