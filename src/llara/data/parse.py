"""Parsers for every raw source, each returning plain interaction/item tables with strict checks.

Malformed input fails with the file, the 1-based line and what was expected; ids missing from the
item table fail too, or are dropped (count logged) when ``unknown_ids="drop"``.
"""

from __future__ import annotations

import ast
import gzip
import logging
import re
import zipfile
from pathlib import Path

import polars as pl

from llara.errors import MalformedInputError  # defined below every stage; importable from here as before
from llara.text import short_repr

log = logging.getLogger("llara.data.parse")


def parse_delimited(text: str, name: str, sep: str, columns: dict[str, pl.DataType], header: bool = False,
                    min_fields: int | None = None) -> pl.DataFrame:
    """Split ``text`` into typed columns (the first ``len(columns)`` fields of each line).

    Every line must have exactly ``len(columns)`` fields (at least ``min_fields`` when given) and
    each field must cast to its dtype; otherwise MalformedInputError names ``name``, the line and the value.
    """
    lines = pl.Series("line", text.splitlines())
    offset = 2 if header else 1
    if header:
        lines = lines[1:]
    df = pl.DataFrame({"line": lines}).with_row_index("lineno", offset=offset).filter(pl.col("line").str.strip_chars() != "")
    df = df.with_columns(pl.col("line").str.split(sep).alias("fields"))
    n = len(columns)
    counts = df["fields"].list.len()
    bad = df.filter((counts < (min_fields or n)) | ((counts != n) if min_fields is None else pl.lit(False)))
    if bad.height:
        row = bad.row(0, named=True)
        raise MalformedInputError(
            f"{name}, line {row['lineno']}: expected {min_fields or n} {sep!r}-separated fields, found {len(row['fields'])}: {row['line'][:80]!r}")
    out = df.select("lineno", *[pl.col("fields").list.get(i).alias(c) for i, c in enumerate(columns)])
    for c, dtype in columns.items():
        if dtype == pl.String:
            continue
        cast = out[c].str.strip_chars().cast(dtype, strict=False)
        bad_rows = out.filter(cast.is_null())
        if bad_rows.height:
            row = bad_rows.row(0, named=True)
            raise MalformedInputError(f"{name}, line {row['lineno']}: column {c!r} expected {dtype}, found {short_repr(row[c])}")
        out = out.with_columns(cast.alias(c))
    return out


def _read_member(zip_path: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            return zf.read(member)
    except zipfile.BadZipFile as e:
        raise MalformedInputError(f"{zip_path}: not a valid zip archive (truncated or corrupt): {e}") from e
    except KeyError:
        raise MalformedInputError(f"{zip_path}: archive lacks member {member}") from None


_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


def clean_title(title: str) -> str:
    """Collapse whitespace and strip a trailing release year such as `` (1995)``."""
    return " ".join(_YEAR.sub("", title).split())


def movielens_items(zip_path: Path) -> pl.DataFrame:
    """``u.item`` (Latin-1, ``|``-separated, 24 fields): item_id = u.item id - 1, cleaned title."""
    text = _read_member(zip_path, "ml-100k/u.item").decode("latin-1")
    cols = {"source_id": pl.Int64, "title": pl.String} | {f"f{i}": pl.String for i in range(22)}
    df = parse_delimited(text, f"{zip_path}:ml-100k/u.item", "|", cols)
    return df.select(
        (pl.col("source_id") - 1).alias("item_id"),
        pl.col("title").map_elements(clean_title, return_dtype=pl.String),
        pl.col("source_id").cast(pl.String),
    ).sort("item_id")


def movielens_interactions(zip_path: Path) -> pl.DataFrame:
    """``u.data`` (tab-separated user, item, rating, unix time) with item ids shifted to 0-based."""
    text = _read_member(zip_path, "ml-100k/u.data").decode("ascii")
    df = parse_delimited(text, f"{zip_path}:ml-100k/u.data", "\t",
                         {"user": pl.Int64, "item": pl.Int64, "rating": pl.Int64, "time": pl.Int64})
    return df.select("lineno", pl.col("user"), (pl.col("item") - 1).alias("item"), pl.col("time"))


def hetrec_lastfm(zip_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """HetRec 2011 LastFM: artists.dat (id, name, url, picture) and the tag-assignment timestamps.

    An interaction is a (user, artist) pair at its first tag time; artists are renumbered 0..n-1.
    """
    artists_text = _read_member(zip_path, "artists.dat").decode("utf-8", errors="replace")
    artists = parse_delimited(artists_text, f"{zip_path}:artists.dat", "\t",
                              {"id": pl.Int64, "name": pl.String, "url": pl.String, "picture": pl.String},
                              header=True, min_fields=2)
    items = artists.sort("id").with_row_index("item_id").select(
        pl.col("item_id").cast(pl.Int64), pl.col("name").str.strip_chars().alias("title"), pl.col("id").cast(pl.String).alias("source_id"))
    tags_text = _read_member(zip_path, "user_taggedartists-timestamps.dat").decode("utf-8", errors="replace")
    tags = parse_delimited(tags_text, f"{zip_path}:user_taggedartists-timestamps.dat", "\t",
                           {"user": pl.Int64, "artist": pl.Int64, "tag": pl.Int64, "time": pl.Int64}, header=True)
    inter = (tags.group_by("user", "artist").agg(pl.col("time").min(), pl.col("lineno").min())
             .join(items.select(pl.col("source_id").cast(pl.Int64).alias("artist"), "item_id"), on="artist", how="left")
             .select("lineno", "user", pl.col("item_id").alias("item"), "time", "artist"))
    return items, inter


def _literal_lines(path: Path) -> list[tuple[int, dict]]:
    """Python-literal dict per line (the Steam dumps are not strict JSON); parsed without eval."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = ast.literal_eval(line)
            except (ValueError, SyntaxError) as e:
                raise MalformedInputError(f"{path}, line {i}: expected a Python-literal dict, could not parse: {e}") from None
            if not isinstance(obj, dict):
                raise MalformedInputError(f"{path}, line {i}: expected a dict, found {type(obj).__name__}")
            out.append((i, obj))
    return out


def steam_raw(reviews_path: Path, games_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """SASRec's Steam dumps: games (id, app_name/title) and reviews (username, product_id, date)."""
    games = {}
    for i, g in _literal_lines(games_path):
        if "id" not in g:
            continue  # a handful of game entries carry no id; they can never be reviewed items
        name = g.get("app_name") or g.get("title")
        if not name:
            raise MalformedInputError(f"{games_path}, line {i}: game {short_repr(g['id'])} has neither app_name nor title")
        games[str(g["id"])] = " ".join(str(name).split())
    items = pl.DataFrame({"source_id": list(games), "title": list(games.values())}).sort("source_id")
    items = items.with_row_index("item_id").with_columns(pl.col("item_id").cast(pl.Int64))
    rows = []
    for i, r in _literal_lines(reviews_path):
        for key in ("username", "product_id", "date"):
            if key not in r:
                raise MalformedInputError(f"{reviews_path}, line {i}: missing key {key!r}")
        rows.append((i, str(r["username"]), str(r["product_id"]), str(r["date"])))
    rev = pl.DataFrame(rows, schema={"lineno": pl.Int64, "username": pl.String, "product_id": pl.String, "date": pl.String}, orient="row")
    rev = rev.with_columns(pl.col("date").str.to_date(strict=False).alias("day"))
    bad = rev.filter(pl.col("day").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise MalformedInputError(f"{reviews_path}, line {row['lineno']}: date expected YYYY-MM-DD, found {short_repr(row['date'])}")
    users = rev.select(pl.col("username").unique().sort()).with_row_index("user")
    inter = (rev.join(users, on="username").join(items.select("source_id", "item_id"), left_on="product_id", right_on="source_id", how="left")
             .select("lineno", pl.col("user").cast(pl.Int64), pl.col("item_id").alias("item"),
                     pl.col("day").cast(pl.Int64).alias("time"), pl.col("product_id").alias("artist")))
    return items, inter


def check_known(inter: pl.DataFrame, name: str, unknown_ids: str) -> pl.DataFrame:
    """Rows whose ``item`` is null reference an id absent from the item table: fail, or drop and log."""
    unknown = inter.filter(pl.col("item").is_null())
    if unknown.height:
        row = unknown.row(0, named=True)
        raw = row.get("artist", "?")
        if unknown_ids != "drop":
            raise MalformedInputError(
                f"{name}, line {row['lineno']}: item id {raw} is not in the item table ({unknown.height} such rows); "
                f"set data.unknown_ids: drop to drop them")
        log.warning("%s: dropped %d interactions with item ids absent from the item table", name, unknown.height)
    return inter.filter(pl.col("item").is_not_null())


def llara_id2name(path: Path) -> pl.DataFrame:
    """LLaRA's ``id::name`` item list."""
    text = Path(path).read_text(encoding="utf-8")
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, name = line.partition("::")
        if not sep or not key.strip().lstrip("-").isdigit():
            raise MalformedInputError(f"{path}, line {i}: expected 'id::name', found {line[:80]!r}")
        if len(key.strip().lstrip("-")) > 18:  # int() refuses over 4300 digits; no item table is that long
            raise MalformedInputError(f"{path}, line {i}: expected an item id from 0 to the item count, found a "
                                      f"{len(key.strip())}-digit number")
        rows.append((int(key), " ".join(name.split()), key.strip()))
    df = pl.DataFrame(rows, schema={"item_id": pl.Int64, "title": pl.String, "source_id": pl.String}, orient="row").sort("item_id")
    if df["item_id"].to_list() != list(range(df.height)):
        raise MalformedInputError(f"{path}: item ids must be 0..{df.height - 1} without gaps")
    return df


__all__ = ["MalformedInputError", "parse_delimited", "clean_title", "movielens_items", "movielens_interactions",
           "hetrec_lastfm", "steam_raw", "check_known", "llara_id2name"]
