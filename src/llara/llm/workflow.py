"""Config -> inputs/params of the LLM-stage Snakemake rules (workflow/rules/llm.smk), as plain functions of
the config dict (unit-testable; the package never imports snakemake)."""

from __future__ import annotations

import os
from typing import Any

from llara.llm.prompts import default_templates_path
from llara.seeds import data_seed, train_root

SEQREC = ["sasrec", "gru4rec", "caser"]
TUNE_META = ("overrides", "variants")  # tune.* keys that are not TuneConfig fields


def llm_name(config: dict[str, Any]) -> str:
    """The base model folder name under resources/llm/ (config llm.name)."""
    try:
        return config["llm"]["name"]
    except KeyError:
        raise ValueError("config key llm.name is missing: it names the base model folder resources/llm/{name}/") from None


def templates_path(config: dict[str, Any]) -> str:
    """The prompt templates file: config llm.templates, or the packaged default (relative when under cwd)."""
    if config["llm"].get("templates"):
        return config["llm"]["templates"]
    path = str(default_templates_path())
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def prompts_path(dataset: str) -> str:
    """The dataset's own templates file (rule prompts): what tuning and zero-shot evaluation read."""
    return f"results/{dataset}/prompts.yaml"


def prompt_domain(config: dict[str, Any], dataset: str) -> str | dict[str, Any] | None:
    """Config ``datasets.<dataset>.domain``: a domain name, ``{noun, verb[, past]}`` words, or None
    (the templates file's ``datasets`` map: the built-in datasets' artist / movie / game prompts)."""
    try:
        entry = config["datasets"][dataset]
    except KeyError:
        raise ValueError(f"config key datasets.{dataset} is missing (configured: {sorted(config.get('datasets', {}))})") from None
    return entry.get("domain")


def base_slice(config: dict[str, Any], name: str) -> dict[str, Any]:
    """config llm without the keys that do not change the base model files (rule base_llm's params)."""
    if name != llm_name(config):
        raise ValueError(f"resources/llm/{name}: config llm.name is {llm_name(config)!r}; "
                         f"set llm.name to build another model")
    return {k: v for k, v in config["llm"].items() if k not in ("prompt_format", "templates")}


def repo_relative(path: str, repo: str | None) -> str:
    """A config path as given when it exists from the working directory; else relative to the repository.

    Lets ``snakemake -d elsewhere`` find the repository's own files (e.g. config/deepspeed/zero2.json).
    """
    if repo is None or os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(repo, path)


def tune_settings(config: dict[str, Any], dataset: str, variant: str | None = None, repo: str | None = None,
                  seed: int | None = None) -> dict[str, Any]:
    """The resolved TuneConfig dict: tune.* < tune.overrides.<dataset> < tune.variants.<variant>
    (+ seed, dataset, llm.prompt_format); ``repo`` resolves repository-relative paths; ``seed`` is the
    training seed (None: config ``seed``)."""
    tune = config["tune"]
    cfg = {k: v for k, v in tune.items() if k not in TUNE_META}
    layers = [tune.get("overrides", {}).get(dataset, {})]
    if variant is not None:
        if variant not in tune.get("variants", {}):
            raise ValueError(f"config key tune.variants.{variant} is missing (known: {sorted(tune.get('variants', {}))})")
        layers.append(tune["variants"][variant])
    for layer in layers:
        for k, v in layer.items():
            cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    cfg.update(dataset=dataset, seed=data_seed(config) if seed is None else int(seed), prompt_format=config["llm"].get("prompt_format", "auto"))
    cfg["deepspeed_config"] = repo_relative(cfg["deepspeed_config"], repo)
    return cfg


def tune_inputs(config: dict[str, Any], dataset: str, seqrec: str, variant: str | None = None,
                repo: str | None = None, seed: int | None = None) -> dict[str, str]:
    """Inputs of rules tune / tune_variant (and their per-seed forms): ``seed`` picks the backbone trained
    with that seed (llara.seeds.train_root; None: the only training seed)."""
    if seqrec not in SEQREC:
        raise ValueError(f"unknown backbone {seqrec!r}; expected one of {SEQREC}")
    return {
        "base": f"resources/llm/{llm_name(config)}",
        "item_table": f"results/{dataset}/data/items.parquet",
        "train": f"results/{dataset}/data/train.parquet",
        "valid": f"results/{dataset}/data/valid.parquet",  # the in-training probe's rows (tune.probe_every)
        "embeddings": f"{train_root(config, dataset, seqrec, seed)}/seqrec/item_embeddings.parquet",
        "templates": prompts_path(dataset),
        "deepspeed": tune_settings(config, dataset, variant, repo)["deepspeed_config"],
    }
