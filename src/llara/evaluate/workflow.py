"""Config -> rule inputs/params for the evaluation rules (workflow/rules/evaluate.smk).

Pure functions of the validated config dict (no snakemake import), so the .smk files hold only rules
and the mapping is unit-testable.
"""

from __future__ import annotations

from typing import Any

from llara.seeds import eval_root, train_root, train_seeds

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
                variant: str | None = None, seed: int | None = None) -> dict[str, str]:
    """Inputs of an LLM evaluation rule: base model folder, items, splits (+ the tuned model unless zero-shot;
    for ``llara`` also ``backbone_metrics``, the backbone's own metrics.json for the run's summary.md: the job
    that writes the item embeddings, an input already, writes it too, so it adds no job).

    ``seed``: the training seed whose tuned model and backbone are evaluated (None: the only one).
    """
    check_dataset(config, dataset)
    d = {"base": f"resources/llm/{llm_name(config)}", "item_table": f"results/{dataset}/data/items.parquet"}
    d.update({f"split_{s}": f"results/{dataset}/data/{s}.parquet" for s in config["evaluate"]["splits"]})
    if kind == "zeroshot":  # a tuned model evaluates with the templates stored in its projector file
        d["templates"] = f"results/{dataset}/prompts.yaml"
    else:
        if seqrec not in SEQREC:
            raise ValueError(f"unknown backbone {seqrec!r}; expected one of {SEQREC}")
        root = train_root(config, dataset, seqrec, seed)
        tuned = f"{root}/llara" if kind == "llara" else f"{root}/ablations/{variant}/llara"
        d["adapter"] = f"{tuned}/adapter"
        d["projector"] = f"{tuned}/projector.safetensors"
        d["item_embeddings"] = f"{root}/seqrec/item_embeddings.parquet"
        if kind == "llara":
            d["backbone_metrics"] = f"{root}/seqrec/metrics.json"
    return d


def backbone_inputs(config: dict[str, Any], dataset: str, seqrec: str) -> dict[str, str]:
    """``{"backbone_seed<S>": the backbone's own metrics.json (seqrec stage) trained with seed S}`` in seed order:
    the backbone row of a sweep's summary.md (rule aggregate_seeds). Each is written by the job that writes that
    seed's item embeddings, upstream of the seed's evaluation already, so it adds no job."""
    check_dataset(config, dataset)
    if seqrec not in SEQREC:
        raise ValueError(f"unknown backbone {seqrec!r}; expected one of {SEQREC}")
    return {f"backbone_seed{s}": f"{train_root(config, dataset, seqrec, s)}/seqrec/metrics.json"
            for s in train_seeds(config)}


def seqrec_ranker_inputs(config: dict[str, Any], dataset: str, seqrec: str, seed: int | None = None) -> dict[str, str]:
    """Inputs of rule evaluate_seqrec: the backbone trained with ``seed``, items and the evaluated splits."""
    check_dataset(config, dataset)
    return {"model": f"{train_root(config, dataset, seqrec, seed)}/seqrec/model.safetensors",
            "item_table": f"results/{dataset}/data/items.parquet",
            **{f"split_{s}": f"results/{dataset}/data/{s}.parquet" for s in config["evaluate"]["splits"]}}


def reference_inputs(config: dict[str, Any], dataset: str, kind: str, seqrec: str | None = None,
                     seed: int | None = None) -> dict[str, str]:
    """Inputs of the reference rules (llara.evaluate.reference): items, the evaluated splits and train.parquet
    (``popularity``) or the item embeddings of the backbone ``seqrec`` trained with ``seed`` (``last_item``)."""
    check_dataset(config, dataset)
    data = f"results/{dataset}/data"
    d = {"item_table": f"{data}/items.parquet",
         **{f"split_{s}": f"{data}/{s}.parquet" for s in config["evaluate"]["splits"]}}
    if kind == "popularity":
        return {**d, "train": f"{data}/train.parquet"}
    if kind != "last_item":
        raise ValueError(f"unknown reference scorer {kind!r}; expected popularity or last_item")
    if seqrec not in SEQREC:
        raise ValueError(f"unknown backbone {seqrec!r}; expected one of {SEQREC}")
    return {**d, "embeddings": f"{train_root(config, dataset, seqrec, seed)}/seqrec/item_embeddings.parquet"}


def popularity_files(dataset: str) -> dict[str, str]:
    """The popularity reference's ``predictions`` and ``metrics`` (untrained: one run, seeds play no part)."""
    root = f"results/{dataset}/reference/popularity"
    return {"predictions": f"{root}/predictions.parquet", "metrics": f"{root}/metrics.json"}


RUN_FILES = {  # kind -> (sub-folder of a seed's evaluation folder, predictions file, metrics file)
    "llara": ("", "predictions.parquet", "metrics.json"),
    "ablation": ("/ablations/{variant}", "predictions.parquet", "metrics.json"),
    "seqrec": ("/seqrec", "ranker_predictions.parquet", "ranker_metrics.json"),
    "last_item": ("/reference/last_item", "predictions.parquet", "metrics.json"),  # follows the backbone's seed
}


def method_files(kind: str, dataset: str, seqrec: str, variant: str | None = None) -> dict[str, str]:
    """The method-level ``predictions`` and ``metrics`` paths of a trained method (llara | ablation | seqrec |
    last_item, the backbone-embedding reference):
    the one-seed files, or in a seed sweep the aggregate metrics.json (its predictions are per seed)."""
    sub, pred, met = RUN_FILES[kind]
    root = f"results/{dataset}/{seqrec}" + sub.format(variant=variant)
    return {"predictions": f"{root}/{pred}", "metrics": f"{root}/{met}"}


def seed_runs(config: dict[str, Any], kind: str, dataset: str, seqrec: str, variant: str | None = None) -> list[dict]:
    """One dict per training seed (``seed``, ``predictions``, ``metrics``): where each seed's evaluation of a
    trained method (llara | ablation | seqrec | last_item) lives (llara.seeds.eval_root)."""
    if kind not in RUN_FILES:
        raise ValueError(f"unknown trained method {kind!r}; expected one of {sorted(RUN_FILES)}")
    check_dataset(config, dataset)
    sub, pred, met = RUN_FILES[kind]
    out = []
    for s in train_seeds(config):
        root = eval_root(config, dataset, seqrec, s) + sub.format(variant=variant)
        out.append({"seed": s, "predictions": f"{root}/{pred}", "metrics": f"{root}/{met}"})
    return out


def seed_run_inputs(config: dict[str, Any], kind: str, dataset: str, seqrec: str, variant: str | None = None) -> dict[str, str]:
    """Inputs of the aggregation rules: every seed's predictions and metrics files."""
    return {f"seed{r['seed']}_{k}": r[k] for r in seed_runs(config, kind, dataset, seqrec, variant)
            for k in ("predictions", "metrics")}

