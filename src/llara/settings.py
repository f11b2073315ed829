"""One validation for every entry point: the config schema plus the rules that span several keys.

Snakemake (the Snakefile), the ``llara`` CLI and the Python API call the same two functions:

- :func:`validate_config` checks a whole config (the Snakefile, before any job runs), fills the
  schema's defaults in place and applies the cross-key rules;
- :func:`check_settings` checks the sections a stage is given (``{"data": {...}}``,
  ``{"seqrec": {"sasrec": {...}}}``, ...) the same way, so a stage called from Python or the CLI
  refuses what the Snakefile would have refused, before it touches any output.

The schema is ``workflow/schemas/config.schema.yaml`` (shipped in the package as
``llara/config.schema.yaml``). Errors are :class:`ConfigError`, one line naming the config key.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import math
from collections.abc import Iterator, Mapping
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config value the schema or a cross-key rule refuses; ``key`` is its dotted config key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key {key}: {message}" if key else f"config: {message}")


@functools.cache
def schema() -> dict[str, Any]:
    """The config JSON schema (a fresh copy is not needed: callers never modify it)."""
    text = importlib.resources.files("llara").joinpath("config.schema.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _slug_regex() -> str:
    pattern = schema()["$defs"]["slug"]["pattern"]
    return pattern.removeprefix("^").removesuffix("$")


SLUG = _slug_regex()
"""Regex (no anchors) of every name that becomes a path: datasets, seqrec models, variants, llm.name.
Defined once in the schema (``$defs/slug``); the Snakemake wildcard constraints use it too."""


# --------------------------------------------------------------------------------------------- schema
@functools.cache
def _validator_class():
    from jsonschema import Draft202012Validator, validators

    properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, props, instance, subschema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from properties(validator, props, instance, subschema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})


def _key(path) -> str:
    return ".".join(str(p) for p in path)


def _error_line(error) -> ConfigError:
    """One line for a jsonschema error, naming the dotted key."""
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        name = f"{key}.{extra[0]}" if key else extra[0]
        hint = f"; expected one of {allowed}" if allowed else ""
        return ConfigError(name, f"unknown key{hint}")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return ConfigError(f"{key}.{missing}" if key else missing, "is required")
    if error.validator == "pattern" and error.schema == schema()["$defs"]["slug"]:
        return ConfigError(key, f"{error.instance!r} is not a safe name: use letters, digits, '.', '_', '-' "
                                f"(not first), at most 64 characters; it becomes part of a path")
    return ConfigError(key, error.message)


def _check_schema(config: dict[str, Any], root: dict[str, Any]) -> None:
    from jsonschema.exceptions import best_match

    validator = _validator_class()(root)
    errors = list(validator.iter_errors(config))
    if errors:
        # the first error met (jsonschema's relevance order), reported as one line
        raise _error_line(best_match(errors)) from None


def _partial_schema(sections: Mapping[str, Any]) -> dict[str, Any]:
    """The schema restricted to the top-level keys present in ``sections`` (no ``required``)."""
    full = schema()
    unknown = sorted(set(sections) - set(full["properties"]))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key; expected one of {sorted(full['properties'])}")
    return {"$defs": full["$defs"], "type": "object", "additionalProperties": False,
            "properties": {k: full["properties"][k] for k in sections}}


# ------------------------------------------------------------------------------------- cross-key rules
def _merged(base: Mapping[str, Any], *layers: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for layer in layers:
        for k, v in (layer or {}).items():
            out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _seqrec_slices(config: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(config key, resolved hyper-parameters) of every seqrec model and per-dataset override."""
    seqrec = config.get("seqrec") or {}
    for model, hp in seqrec.items():
        if model != "overrides":
            yield f"seqrec.{model}", dict(hp)
    for dataset, models in (seqrec.get("overrides") or {}).items():
        for model, hp in (models or {}).items():
            yield f"seqrec.overrides.{dataset}.{model}", _merged(seqrec.get(model) or {}, hp)


def _tune_slices(config: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(config key, resolved tune settings) for tune.*, each dataset override and each variant."""
    tune = config.get("tune")
    if tune is None:
        return
    base = {k: v for k, v in tune.items() if k not in ("overrides", "variants")}
    yield "tune", base
    overrides = tune.get("overrides") or {}
    for dataset, layer in overrides.items():
        yield f"tune.overrides.{dataset}", _merged(base, layer)
    for variant, layer in (tune.get("variants") or {}).items():
        yield f"tune.variants.{variant}", _merged(base, layer)
        for dataset, over in overrides.items():
            yield f"tune.variants.{variant}", _merged(base, over, layer)


def _known_item_counts(config: Mapping[str, Any]) -> dict[str, int]:
    """Item counts of the configured datasets whose sources fix them (LLaRA's splits, ML-100K)."""
    from llara.data.sources import KNOWN_ITEM_COUNTS

    out = {}
    for dataset, spec in (config.get("datasets") or {}).items():
        n = KNOWN_ITEM_COUNTS.get((dataset, (spec or {}).get("source")))
        if n is not None:
            out[dataset] = n
    return out


def _cross_checks(config: Mapping[str, Any]) -> None:
    """The rules no JSON schema can say; each runs only when the keys it needs are present."""
    data = config.get("data")
    if data is not None and "min_history" in data and "max_history" in data:
        if data["min_history"] > data["max_history"]:
            raise ConfigError("data.min_history", f"{data['min_history']} exceeds data.max_history = "
                                                  f"{data['max_history']}; no row could be kept")

    for key, hp in _seqrec_slices(config):
        if "n_heads" in hp and "hidden_size" in hp and hp["hidden_size"] % hp["n_heads"]:
            raise ConfigError(f"{key}.n_heads", f"hidden_size {hp['hidden_size']} is not divisible by "
                                                f"n_heads {hp['n_heads']}")

    for key, t in _tune_slices(config):
        mb, eff = t.get("micro_batch_size"), t.get("effective_batch_size")
        if mb and eff and eff % mb:
            raise ConfigError(f"{key}.effective_batch_size",
                              f"{eff} is not a multiple of micro_batch_size {mb}")
        lr = t.get("lr")
        for low in ("min_lr", "warmup_start_lr"):
            if lr is not None and t.get(low) is not None and t[low] > lr:
                raise ConfigError(f"{key}.{low}", f"{t[low]} exceeds the peak learning rate lr = {lr}")

    counts = _known_item_counts(config)
    max_history = (data or {}).get("max_history", 0)
    for dataset, n_items in counts.items():
        room = n_items - max_history  # the target and up to max_history history items are never negatives
        if data is not None and data.get("n_candidates", 0) > room:
            raise ConfigError("data.n_candidates", f"{data['n_candidates']} candidates need more items than "
                                                   f"{dataset} has ({n_items} items, histories of up to {max_history})")
        for key, t in _tune_slices(config):
            if t.get("n_candidates", 0) > room:
                raise ConfigError(f"{key}.n_candidates", f"{t['n_candidates']} candidates need more items than "
                                                         f"{dataset} has ({n_items} items)")

    ev = config.get("evaluate")
    if ev is not None:
        stored = (data or {}).get("candidate_sets")
        for method, k in (ev.get("candidate_sets") or {}).items():
            if stored is not None and k > stored:
                raise ConfigError(f"evaluate.candidate_sets.{method}",
                                  f"{k} exceeds data.candidate_sets = {stored} (the sets stored per row)")

    variants = (config.get("tune") or {}).get("variants")
    if variants is not None:
        for name in (ev or {}).get("ablation_representation") or {}:
            if name not in variants:
                raise ConfigError(f"evaluate.ablation_representation.{name}",
                                  f"no such ablation; tune.variants has {sorted(variants)}")
        for name in (config.get("report") or {}).get("ablations") or []:
            if name not in variants:
                raise ConfigError("report.ablations", f"{name!r} is not an ablation; tune.variants has {sorted(variants)}")
    datasets = config.get("datasets")
    if datasets is not None:
        from llara.data.datasets import check_datasets

        check_datasets(datasets)  # which names are built-in, which keys each source takes
        for name in (config.get("report") or {}).get("datasets") or []:
            if name not in datasets:
                raise ConfigError("report.datasets", f"{name!r} is not configured; datasets has {sorted(datasets)}")

    llm = config.get("llm")
    if llm is not None and llm.get("source") in ("local", "hub") and not llm.get("path"):
        raise ConfigError("llm.path", f"required when llm.source is {llm['source']!r} (a folder or a hub id)")

    pins = (config.get("download") or {}).get("extra_sha256") or {}
    if pins:
        from llara.data.sources import pinnable_paths

        known = pinnable_paths()
        for path in pins:
            if path not in known:
                raise ConfigError(f"download.extra_sha256.{path}",
                                  f"no such file; pinnable paths are {sorted(known)}")

    for key, value in _numbers(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"{value} is not a finite number")


def _numbers(obj: Any, path: tuple = ()) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, (*path, i))
    else:
        yield _key(path), obj


# ------------------------------------------------------------------------------------------ public API
def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check a whole config against the schema and the cross-key rules; fill defaults in place.

    Raises :class:`ConfigError` (one line naming the key). Returns ``config``.
    """
    _check_schema(config, schema())
    _cross_checks(config)
    return config


def check_settings(sections: dict[str, Any]) -> dict[str, Any]:
    """Check the config sections one stage is given (e.g. ``{"data": {...}, "seed": 1}``) like
    :func:`validate_config` would, filling their defaults in place; sections not given are not required.
    """
    _check_schema(sections, _partial_schema(sections))
    _cross_checks(sections)
    return sections
