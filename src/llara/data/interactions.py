"""Read a user's own interaction log and item table (``source: interactions``) with strict checks.

Both files are CSV/TSV with a header line, or Parquet. Every problem is reported with the file, the
line (Parquet: the 1-based row) and the column: a missing column, an id that is not an integer, an
item id absent from the item table, one item id with two different titles, an empty title, a
timestamp that does not parse. Titles nested in other titles are a warning with a count. The files
are opened for reading only.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import polars as pl

from llara.data.datasets import UserFiles
from llara.data.parse import MalformedInputError
from llara.io import sha256_file
from llara.text import short_repr

log = logging.getLogger("llara.data.interactions")

PARQUET = (".parquet", ".pq")
_TSV = (".tsv", ".tab", ".inter", ".item")


class ChecksumMismatch(MalformedInputError):
    """A user file whose sha256 differs from its pin in ``datasets.<name>.sha256``."""


def verify_pin(path: Path, pin: str | None, key: str) -> str:
    """Hash ``path``; fail when it differs from ``pin`` (config ``key``); log the hash when nothing is pinned."""
    found = sha256_file(path)
    if pin is not None and found != pin:
        raise ChecksumMismatch(f"{path}: sha256 mismatch: expected {pin} ({key}), found {found}")
    if pin is None:
        log.info("%s: sha256 %s (pin it as %s to detect changes)", path, found, key)
    return found


class _Where:
    """Turns a 0-based record index of a file into ``"FILE, line N"`` (``row N`` for Parquet)."""

    def __init__(self, path: Path, sep: str | None):
        self.path, self.sep, self._lines = path, sep, None

    def __call__(self, record: int) -> str:
        if self.sep is None:
            return f"{self.path}, row {record + 1}"
        if self._lines is None:  # computed on the first error only: the line each record starts on
            self._lines = []
            with open(self.path, newline="", encoding="utf-8", errors="replace") as f:
                reader = csv.reader(f, delimiter=self.sep)
                start = 1
                for _ in reader:
                    self._lines.append(start)
                    start = reader.line_num + 1
        # record 0 is the header line
        return f"{self.path}, line {self._lines[record + 1] if record + 1 < len(self._lines) else record + 2}"


def _sep(path: Path, sep: str | None) -> str | None:
    if path.suffix.lower() in PARQUET:
        return None
    return sep or ("\t" if path.suffix.lower() in _TSV else ",")


def _bad_encoding(path: Path) -> str | None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return (f"{path}, line {line}: not UTF-8 (byte 0x{data[e.start]:02x}); convert the file, e.g. "
                f"iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}")
    return None


def _ragged(path: Path, sep: str) -> str | None:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, [])
        start = 2
        for fields in reader:
            if fields and len(fields) > len(header):
                return (f"{path}, line {start}: {len(fields)} {sep!r}-separated fields, but the header has "
                        f"{len(header)} ({header}); quote fields that contain the separator")
            start = reader.line_num + 1
    return None


def _exists(path: Path, key: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"config {key}: file {path} does not exist (relative paths are taken from the "
                                f"directory Snakemake runs in)")


def read_frame(path: Path, sep: str | None, columns: dict[str, str | None], key: str) -> tuple[pl.DataFrame, _Where]:
    """Read the needed ``columns`` (role -> column name) of a CSV/TSV/Parquet file.

    CSV fields are read as text (checked and converted by the callers); blank lines are skipped. Raises
    FileNotFoundError naming the config ``key`` and MalformedInputError naming the file and line.
    """
    _exists(path, key)
    sep = _sep(path, sep)
    try:
        if sep is None:
            df = pl.read_parquet(path)
        else:
            df = pl.read_csv(path, separator=sep, infer_schema=False, quote_char='"')
    except pl.exceptions.NoDataError:
        raise MalformedInputError(f"{path}: the file is empty; expected a header line and data") from None
    except (pl.exceptions.PolarsError, OSError) as e:
        if sep is not None:
            raise MalformedInputError(_bad_encoding(path) or _ragged(path, sep) or f"{path}: could not be read: {e}") from None
        raise MalformedInputError(f"{path}: could not be read as Parquet: {e}") from None
    wanted = {role: col for role, col in columns.items() if col is not None}
    missing = [f"{col!r} ({key.rsplit('.', 1)[0]}.columns.{role})" for role, col in wanted.items() if col not in df.columns]
    if missing:
        where = f"{path}, line 1 (header)" if sep is not None else f"{path} (Parquet schema)"
        hint = "" if sep is None or len(df.columns) > 1 else f"; is the separator {sep!r} right (config {key.rsplit('.', 1)[0]}.sep)?"
        raise MalformedInputError(f"{where}: missing column(s) {', '.join(missing)}; found columns {df.columns}{hint}")
    if sep is None:
        _check_types(df, path, wanted)
    df = df.select(**{role: pl.col(col) for role, col in wanted.items()}).with_row_index("record")
    if sep is not None:  # a blank line reads as a row of nulls
        df = df.filter(~pl.all_horizontal(pl.exclude("record").is_null()))
    return df, _Where(path, sep)


def _is_text(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum)


# what a Parquet column of each role may hold: (test, what is expected)
_TYPES = {
    "user": (lambda t: t.is_integer() or t.is_float() or t.is_decimal() or _is_text(t), "integer ids"),
    "item": (lambda t: t.is_integer() or t.is_float() or t.is_decimal() or _is_text(t), "integer ids"),
    "title": (lambda t: _is_text(t) or t.is_numeric(), "text titles"),
    "timestamp": (lambda t: t.is_numeric() or t in (pl.Date, pl.Null) or isinstance(t, pl.Datetime) or _is_text(t),
                  "timestamps (numbers, dates, date-times or text)"),
}


def _check_types(df: pl.DataFrame, path: Path, wanted: dict[str, str]) -> None:
    """A Parquet column of a type its role cannot hold (a list, a struct, binary data, ...) fails naming it."""
    for role, col in wanted.items():
        ok, what = _TYPES[role]
        dtype = df.schema[col]
        if not ok(dtype):
            raise MalformedInputError(f"{path}, column {col!r}: expected {what}, found Parquet type {dtype}")


def _fail_first(bad: pl.DataFrame, where: _Where, column: str, message: str, role: str) -> None:
    if bad.height:
        row = bad.row(0, named=True)
        value = row[role]
        found = "an empty field" if value is None or str(value).strip() == "" else short_repr(value)
        raise MalformedInputError(f"{where(row['record'])}, column {column!r}: {message}, found {found}"
                                  + (f" ({bad.height} such rows)" if bad.height > 1 else ""))


def int_ids(df: pl.DataFrame, role: str, column: str, where: _Where) -> pl.Series:
    """The column as Int64; MalformedInputError at the first value that is not an integer."""
    s = df[role]
    if s.dtype.is_integer():
        _fail_first(df.filter(pl.col(role).is_null()), where, column, "expected an integer id", role)
        return s.cast(pl.Int64)
    text = s.cast(pl.String).str.strip_chars()
    ids = text.cast(pl.Int64, strict=False)
    if s.dtype.is_float() or s.dtype.is_decimal():  # 12.0 is id 12; 12.5, NaN, inf or beyond int64 are not ids
        ids = pl.Series(role, [int(x) if x is not None and float(x).is_integer() and abs(float(x)) < 2 ** 63 else None
                               for x in s.to_list()], pl.Int64)
    _fail_first(df.filter(ids.is_null()), where, column, "expected an integer id", role)
    return ids


def timestamps(df: pl.DataFrame, column: str | None, fmt: str | None, where: _Where) -> pl.Series:
    """Sortable times: integers or numbers as given, dates/date-times (ISO 8601, or ``fmt``) as microseconds."""
    if column is None:
        return df["record"].cast(pl.Int64).alias("time")
    s = df["timestamp"]
    hint = "set timestamp_format (a strftime pattern such as '%d/%m/%Y %H:%M') for other date formats"
    if s.dtype.is_numeric():
        _fail_first(df.filter(s.is_null() | s.is_nan() if s.dtype.is_float() else s.is_null()), where, column,
                    "expected a timestamp", "timestamp")
        return s.alias("time")
    if s.dtype in (pl.Datetime, pl.Date):
        _fail_first(df.filter(s.is_null()), where, column, "expected a timestamp", "timestamp")
        return s.cast(pl.Datetime("us")).dt.epoch("us").alias("time")
    text = s.cast(pl.String).str.strip_chars()
    if fmt is not None:
        parsed = text.str.strptime(pl.Datetime("us"), fmt, strict=False)
        _fail_first(df.filter(parsed.is_null()), where, column, f"expected a date/time in the format {fmt!r}", "timestamp")
        return parsed.dt.epoch("us").alias("time")
    as_int = text.cast(pl.Int64, strict=False)
    if as_int.null_count() == 0:
        return as_int.alias("time")
    as_float = text.cast(pl.Float64, strict=False)
    if as_float.null_count() == 0 and not as_float.is_nan().any():
        return as_float.alias("time")
    parsed = text.str.to_datetime(strict=False, time_unit="us")
    if parsed.dtype.time_zone is not None:
        parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    _fail_first(df.filter(parsed.is_null()), where, column,
                f"expected a Unix time, a number or an ISO 8601 date/time (e.g. 2024-05-17 or 2024-05-17T13:45:00); {hint}",
                "timestamp")
    return parsed.dt.epoch("us").alias("time")


def read_items(f: UserFiles) -> pl.DataFrame:
    """The item table: ``item_id`` 0..n-1 in ascending order of the user's ids, cleaned ``title``, ``source_id``."""
    _exists(f.items, f.key("items"))
    verify_pin(f.items, f.sha256.get("items"), f.key("sha256.items"))
    cols = {"item": f.columns["item"], "title": f.columns["title"]}
    df, where = read_frame(f.items, f.sep, cols, f.key("items"))
    ids = int_ids(df, "item", cols["item"], where)
    titles = df["title"].cast(pl.String).str.replace_all(r"\s+", " ").str.strip_chars()
    df = df.with_columns(ids.alias("item"), titles.alias("title"))
    _fail_first(df.filter(pl.col("title").is_null() | (pl.col("title") == "")), where, cols["title"],
                "expected a non-empty title", "title")
    clash = (df.group_by("item").agg(pl.col("title").n_unique().alias("n"), pl.col("record"), pl.col("title"))
             .filter(pl.col("n") > 1).sort(pl.col("record").list.first()))
    if clash.height:
        r = clash.row(0, named=True)
        second = next(i for i, t in enumerate(r["title"]) if t != r["title"][0])
        raise MalformedInputError(
            f"{where(r['record'][second])}, column {cols['item']!r}: item id {r['item']} appears again with title "
            f"{short_repr(r['title'][second])}; {where(r['record'][0])} gave it {short_repr(r['title'][0])} "
            f"({clash.height} item ids have differing titles); one title per item id")
    items = df.unique("item", keep="first", maintain_order=True).sort("item")
    if items.height < 2:
        raise MalformedInputError(f"{f.items}: {items.height} item(s); a recommendation needs many more")
    return items.with_row_index("item_id").select(
        pl.col("item_id").cast(pl.Int64), "title", pl.col("item").cast(pl.String).alias("source_id"))


def read_interactions(f: UserFiles, items: pl.DataFrame, unknown_ids: str = "error") -> pl.DataFrame:
    """The log as ``user, item, time, artist`` (``item``: the new item id; ``artist``: the user's item id),
    sorted by time so that a repeated (user, item) pair counts at its first time. An item id absent from
    the item table fails naming its line, or is dropped (count logged) with ``unknown_ids="drop"``."""
    _exists(f.interactions, f.key("interactions"))
    verify_pin(f.interactions, f.sha256.get("interactions"), f.key("sha256.interactions"))
    cols = {"user": f.columns["user"], "item": f.columns["item"], "timestamp": f.columns["timestamp"]}
    df, where = read_frame(f.interactions, f.sep, cols, f.key("interactions"))
    if df.height == 0:
        raise MalformedInputError(f"{f.interactions}: no interactions (only a header line)")
    users = int_ids(df, "user", cols["user"], where)
    raw_items = int_ids(df, "item", cols["item"], where)
    time = timestamps(df, cols["timestamp"], f.timestamp_format, where)
    df = df.select("record", users.alias("user"), raw_items.alias("artist"), time)
    lookup = items.select(pl.col("source_id").cast(pl.Int64).alias("artist"), pl.col("item_id").alias("item"))
    out = df.join(lookup, on="artist", how="left", maintain_order="left")
    unknown = out.filter(pl.col("item").is_null())
    if unknown.height:
        row = unknown.row(0, named=True)
        if unknown_ids != "drop":
            raise MalformedInputError(
                f"{where(row['record'])}, column {cols['item']!r}: item id {row['artist']} is not in the item table "
                f"{f.items} ({unknown.height} such rows); add it there, or set data.unknown_ids: drop to drop such rows")
        log.warning("%s: dropped %d interactions whose item id is not in %s (data.unknown_ids: drop)",
                    f.interactions, unknown.height, f.items)
        out = out.filter(pl.col("item").is_not_null())
    return out.sort("time", maintain_order=True).select("user", "item", "time", "artist")
