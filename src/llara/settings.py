"""One validation for every entry point: the config schema plus the rules that span several keys.

Snakemake (the Snakefile), the ``llara`` CLI and the Python API call the same two functions:

- :func:`validate_config` checks a whole config (the Snakefile, before any job runs), fills the
  schema's defaults in place and applies the cross-key rules;
- :func:`check_settings` checks the sections a stage is given (``{"data": {...}}``,
  ``{"seqrec": {"sasrec": {...}}}``, ...) the same way, so a stage called from Python or the CLI
  refuses what the Snakefile would have refused, before it touches any output.

The schema is ``workflow/schemas/config.schema.yaml`` (shipped in the package as
``llara/config.schema.yaml``, a link to it). Errors are :class:`ConfigError`, one line naming the config key.

Both functions also

- refuse an unknown key at any level, the top level included, naming it and the nearest known key;
- bound their work before the schema runs: a config that expands to more than :data:`MAX_VALUES`
  values, nests deeper than :data:`MAX_DEPTH` levels or contains itself (YAML anchors and aliases:
  a few hundred bytes can repeat one node billions of times) is refused in time linear in the bound;
- normalise in place what the schema accepts in two spellings: a whole-number float where an integer
  is wanted (``max_history: 10.0``, ``--set hidden_size=64.0``) becomes that integer, and a digit string
  where the schema marks integers as also given as strings (``seeds``: ``--config 'seeds=[42,43]'``
  reaches the config as strings) becomes an integer;
- read a pattern's ``$`` as the end of the value, as JSON Schema (ECMA-262) does, not as Python's
  "end or before a final newline", so ``"lastfm\\n"`` is no dataset name.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.resources
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from llara.errors import ConfigError  # defined below every stage; importable from here as before


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


# ------------------------------------------------------------------------------------------ work bound
MAX_VALUES = 100_000
"""The most values (mapping entries and list items, counted as the config expands) a config may hold.
The shipped config holds a few hundred; a YAML alias counts again each time it is used."""
MAX_DEPTH = 32
"""The deepest nesting a config may have (the schema's deepest key is 6 levels down)."""


def _check_size(config: Any) -> None:
    """Refuse, in at most :data:`MAX_VALUES` steps, a config too large, too deep or containing itself.

    YAML anchors and aliases make a small file expand to a huge tree (the loader shares the repeated
    node, so loading stays cheap; walking it, as the schema does, does not).

    Not guarded here: Snakemake merges each config file into its config with
    ``snakemake.utils.update_config`` before the Snakefile runs, and that merge copies every *mapping*
    it meets (aliases of lists it keeps shared). Nested mapping anchors therefore exhaust memory, and a
    mapping containing itself ends in a RecursionError, inside Snakemake, before this check can run.
    """
    seen = 0
    stack: list[tuple[Any, tuple]] = [(config, ())]
    on_path: dict[int, tuple] = {}  # id -> path of the containers being walked (a cycle repeats one)
    exits: list[tuple[int, int]] = []  # (stack height at entry, id) of open containers
    while stack:
        while exits and len(stack) <= exits[-1][0]:
            on_path.pop(exits.pop()[1], None)
        node, path = stack.pop()
        if not isinstance(node, (dict, list, tuple)):
            continue
        if id(node) in on_path:
            raise ConfigError(_key(path), f"contains itself (a YAML alias inside its own anchor, first at "
                                          f"{_key(on_path[id(node)]) or 'the top level'}); expected a finite tree")
        if len(path) >= MAX_DEPTH:
            raise ConfigError(_key(path), f"nested deeper than {MAX_DEPTH} levels; expected a shallow config")
        seen += len(node)
        if seen > MAX_VALUES:
            raise ConfigError(_key(path), f"the config expands to more than {MAX_VALUES} values (YAML anchors and "
                                          f"aliases repeat a node each time they are used); expected a small config")
        on_path[id(node)] = path
        exits.append((len(stack), id(node)))
        stack.extend((v, (*path, k)) for k, v in (node.items() if isinstance(node, dict) else enumerate(node)))


# --------------------------------------------------------------------------------------------- schema
_DIGITS = re.compile(r"[0-9]{1,20}")


def _normalised(value: Any, sub: Mapping[str, Any]) -> Any:
    """``value`` as the integer it spells where ``sub`` wants an integer (a whole-number float; a digit
    string where ``sub`` says ``x-digit-strings: true``), else unchanged."""
    types = sub.get("type")
    if "integer" not in ([types] if isinstance(types, str) else types or []):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if sub.get("x-digit-strings") and isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return value


def _ecma_pattern(pattern: str) -> str:
    """A JSON Schema (ECMA-262) pattern for Python's ``re``: a final ``$`` is the end of the value."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern


@functools.cache
def _validator_class():
    from jsonschema import Draft202012Validator, ValidationError, validators

    properties = Draft202012Validator.VALIDATORS["properties"]
    items = Draft202012Validator.VALIDATORS["items"]

    def set_defaults(validator, props, instance, subschema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if name in instance:
                    instance[name] = _normalised(instance[name], sub)
                elif "default" in sub:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from properties(validator, props, instance, subschema)

    def normalise_items(validator, item_schema, instance, subschema):
        if isinstance(instance, list) and isinstance(item_schema, dict):
            instance[:] = [_normalised(v, item_schema) for v in instance]
        yield from items(validator, item_schema, instance, subschema)

    def pattern(validator, patrn, instance, subschema):
        if validator.is_type(instance, "string") and not re.search(_ecma_pattern(patrn), instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    return validators.extend(Draft202012Validator, {"properties": set_defaults, "items": normalise_items,
                                                    "pattern": pattern})


def _key(path) -> str:
    return ".".join(str(p) for p in path)


def _unknown_key(parent: str, name: Any, known: list[str]) -> ConfigError:
    """The error for an unknown key ``name`` under ``parent``, naming the nearest known key."""
    near = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    listed = f"expected one of: {', '.join(known)}" if known else "no key is allowed here"
    return ConfigError(f"{parent}.{name}" if parent else str(name), f"unknown key{hint}; {listed}")


def _error_line(error) -> ConfigError:
    """One line for a jsonschema error, naming the dotted key."""
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted((k for k in error.instance if k not in allowed), key=str)
        return _unknown_key(key, extra[0], allowed)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return ConfigError(f"{key}.{missing}" if key else missing, "is required")
    if error.validator == "pattern" and error.schema == schema()["$defs"]["slug"]:
        return ConfigError(key, f"{error.instance!r} is not a safe name: use letters, digits, '.', '_', '-' "
                                f"(not first), at most 64 characters; it becomes part of a path")
    if error.validator == "pattern" and "x-expected" in error.schema:
        return ConfigError(key, f"expected {error.schema['x-expected']}, found {error.instance!r}")
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
    unknown = sorted((k for k in sections if k not in full["properties"]), key=str)
    if unknown:
        raise _unknown_key("", unknown[0], sorted(full["properties"]))
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
        if isinstance(mb, int) and mb and eff and eff % mb:
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

    Whole-number floats and (where the schema allows) digit strings given for integer keys become
    integers in place. Raises :class:`ConfigError` (one line naming the key). Returns ``config``.
    """
    _check_size(config)
    _check_schema(config, schema())
    _cross_checks(config)
    return config


def check_settings(sections: dict[str, Any]) -> dict[str, Any]:
    """Check the config sections one stage is given (e.g. ``{"data": {...}, "seed": 1}``) like
    :func:`validate_config` would, filling their defaults and normalising integers in place; sections not
    given are not required.
    """
    _check_size(sections)
    _check_schema(sections, _partial_schema(sections))
    _cross_checks(sections)
    return sections
