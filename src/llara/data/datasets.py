"""The datasets a config may name: the three built-in ones and any ``source: interactions`` dataset.

A built-in dataset (``lastfm``, ``movielens``, ``steam``) reads pinned downloads (``llara.data.sources``)
with source ``llara`` or ``raw``. Any other name is the user's own dataset, declared in the config alone::

    datasets:
      mybooks:
        source: interactions
        interactions: data/mybooks/ratings.csv   # or .tsv / .parquet
        items: data/mybooks/items.csv
        columns: {user: user_id, item: item_id, timestamp: timestamp, title: title}   # the defaults
        domain: {noun: book, verb: read}
        sha256: {interactions: <hex>, items: <hex>}  # optional pins

This module checks one entry of config ``datasets`` (the same checks for Snakemake, the CLI and Python)
and says which files the data stage reads for it. The user's files are only ever read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llara.data.sources import SOURCES
from llara.errors import ConfigError

BUILTIN: dict[str, tuple[str, ...]] = {}
for _d, _s in SOURCES:
    BUILTIN.setdefault(_d, ())
    BUILTIN[_d] += (_s,)
USER_SOURCE = "interactions"
RESERVED = ("report",)  # results/report/ holds the report, so no dataset may be called that
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_NAME = re.compile(NAME_PATTERN)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_COLUMNS = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "title": "title"}
_USER_KEYS = {"interactions", "items", "columns", "sep", "timestamp_format", "sha256"}
_COMMON_KEYS = {"source", "domain"}


class DatasetConfigError(ConfigError):
    """An entry of config ``datasets`` that cannot be used; the message names the key."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)
        self.key = "datasets"


@dataclass(frozen=True)
class UserFiles:
    """The files and layout of a ``source: interactions`` dataset (paths as the config gives them)."""

    name: str
    interactions: Path
    items: Path
    columns: dict[str, str | None] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    sep: str | None = None
    timestamp_format: str | None = None
    sha256: dict[str, str] = field(default_factory=dict)

    def key(self, what: str) -> str:
        """The config key of one setting, for error messages (``datasets.mybooks.items``)."""
        return f"datasets.{self.name}.{what}"


def check_name(name: str) -> None:
    """Dataset names are path components of every artifact: a safe slug, and not a reserved folder."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DatasetConfigError(f"config datasets.{name}: dataset names must match {NAME_PATTERN} "
                                 "(lower-case letters, digits, '_' and '-'; they become folder names)")
    if name in RESERVED:
        raise DatasetConfigError(f"config datasets.{name}: {name!r} is reserved (results/{name}/ is not a dataset folder)")


def check_dataset(name: str, entry: Mapping[str, Any], need_domain: bool = True) -> str:
    """Check one entry of config ``datasets`` and return its source; raise DatasetConfigError naming the key.

    ``need_domain=False`` accepts a user's entry without its prompt wording (what the data stage sees)."""
    check_name(name)
    if not isinstance(entry, Mapping) or "source" not in entry:
        raise DatasetConfigError(f"config datasets.{name}.source is missing: expected llara or raw for the built-in "
                                 f"datasets {sorted(BUILTIN)}, interactions for your own data")
    source = entry["source"]
    if source == USER_SOURCE:
        if name in BUILTIN:
            raise DatasetConfigError(
                f"config datasets.{name}.source: interactions: {name!r} is a built-in dataset (the report shows the "
                f"paper's numbers beside it); give your own data another name, e.g. my_{name}")
        unknown = set(entry) - _USER_KEYS - _COMMON_KEYS
        if unknown:
            raise DatasetConfigError(f"config datasets.{name}: unknown key(s) {sorted(unknown)}; "
                                     f"allowed: {sorted(_USER_KEYS | _COMMON_KEYS)}")
        user_files(name, entry)
        if need_domain and not entry.get("domain"):
            raise DatasetConfigError(f"config datasets.{name}.domain is missing: the prompt wording, e.g. "
                                     "{noun: book, verb: read}, or the name of a domain of the templates file (movie)")
        return source
    if name not in BUILTIN:
        raise DatasetConfigError(
            f"config datasets.{name}.source: {source!r}: {name!r} is not a built-in dataset ({sorted(BUILTIN)}); "
            f"declare your own data with source: interactions (docs/own-data.md)")
    if source not in BUILTIN[name]:
        raise DatasetConfigError(f"config datasets.{name}.source: {source!r}: expected one of {sorted(BUILTIN[name])}")
    extra = set(entry) - _COMMON_KEYS
    if extra:
        raise DatasetConfigError(f"config datasets.{name}: key(s) {sorted(extra)} apply to source: interactions only")
    return source


def check_datasets(datasets: Mapping[str, Any]) -> None:
    """Check every entry of config ``datasets`` (Snakemake calls this before building the DAG)."""
    if not datasets:
        raise DatasetConfigError("config datasets is empty: configure at least one dataset")
    for name, entry in datasets.items():
        check_dataset(name, entry)


def _path(name: str, entry: Mapping[str, Any], key: str) -> Path:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DatasetConfigError(f"config datasets.{name}.{key} is missing: the path of your {key} file "
                                 "(.csv, .tsv or .parquet; relative to the directory Snakemake runs in, or absolute)")
    return Path(os.path.expanduser(value))


def user_files(name: str, entry: Mapping[str, Any]) -> UserFiles:
    """The resolved settings of a ``source: interactions`` entry (defaults filled in)."""
    columns = dict(DEFAULT_COLUMNS)
    given = entry.get("columns") or {}
    unknown = set(given) - set(DEFAULT_COLUMNS)
    if unknown:
        raise DatasetConfigError(f"config datasets.{name}.columns: unknown key(s) {sorted(unknown)}; "
                                 f"allowed: {sorted(DEFAULT_COLUMNS)}")
    columns.update(given)
    for role, col in columns.items():
        if col is None and role == "timestamp":
            continue  # no timestamp column: the file's row order is the time order
        if not isinstance(col, str) or not col:
            raise DatasetConfigError(f"config datasets.{name}.columns.{role}: expected a column name, found {col!r}")
    sep = entry.get("sep")
    if sep is not None and (not isinstance(sep, str) or len(sep.encode("utf-8")) != 1 or sep in "\"\r\n\0"):
        raise DatasetConfigError(f"config datasets.{name}.sep: expected one ASCII character (e.g. ',' or '\\t'; "
                                 f"not a quote, CR, LF or NUL), found {sep!r}")
    pins = dict(entry.get("sha256") or {})
    for key, pin in pins.items():
        if key not in ("interactions", "items"):
            raise DatasetConfigError(f"config datasets.{name}.sha256.{key}: unknown file; pin 'interactions' and/or 'items'")
        if not isinstance(pin, str) or not SHA256.match(pin):
            raise DatasetConfigError(f"config datasets.{name}.sha256.{key}: expected 64 lower-case hex digits, found {pin!r}")
    return UserFiles(name, _path(name, entry, "interactions"), _path(name, entry, "items"), columns, sep,
                     entry.get("timestamp_format"), pins)


def data_slice(name: str, entry: Mapping[str, Any]) -> str | dict[str, Any]:
    """What the data stage depends on: the source name of a built-in dataset, the whole file layout
    (without the prompt wording) of a user's dataset. Snakemake passes it as a param of rule preprocess."""
    source = check_dataset(name, entry, need_domain=False)
    if source != USER_SOURCE:
        return source
    return {k: v for k, v in entry.items() if k != "domain"}


def preprocess_inputs(name: str, entry: Mapping[str, Any]) -> dict[str, str]:
    """Input files of rule preprocess: the verified download folder, or the user's two files where they are."""
    source = check_dataset(name, entry, need_domain=False)
    if source != USER_SOURCE:
        return {"raw": f"resources/raw/{name}/{source}"}
    f = user_files(name, entry)
    return {"interactions": str(f.interactions), "item_table": str(f.items)}  # Snakemake reserves the name "items"


__all__ = ["BUILTIN", "USER_SOURCE", "RESERVED", "NAME_PATTERN", "DEFAULT_COLUMNS", "DatasetConfigError", "UserFiles",
           "check_name", "check_dataset", "check_datasets", "user_files", "data_slice", "preprocess_inputs"]
