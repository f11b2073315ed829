"""Your own dataset (source: interactions): the same recipe as the built-in sources, the config checks,
and an error naming file, line and column for every kind of bad input (docs/own-data.md)."""

from __future__ import annotations

import csv
import logging
import zipfile
from pathlib import Path

import polars as pl
import pytest
from test_data_parse import ml_pins, write_ml_zip

from llara.data import datasets as dsets
from llara.data.titles import title_overlaps
from llara.data.parse import MalformedInputError
from llara.data.preprocess import DataConfig, build_items_and_rows, preprocess
from llara.io import sha256_file

SPLITS = ("items", "train", "valid", "test")
CFG = {"n_candidates": 10, "candidate_sets": 2}


def write_books(folder: Path, n_users: int = 30, n_items: int = 40, per_user: int = 12, iso_dates: bool = False) -> dict:
    """A small book log in the default layout: ratings.csv (user_id,item_id,rating,timestamp), items.csv
    (item_id,title; quoted titles with commas). Item ids are sparse (10, 20, ...) to check renumbering."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["River", "Stone", "Night", "Garden", "Winter", "Empire", "Mirror", "Harbor"]
    with open(folder / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "author"])
        for i in range(1, n_items + 1):
            w.writerow([i * 10, f"The {words[i % 8]} of {words[(i * 3) % 8]}, Volume {i}", "A. Writer"])
    with open(folder / "ratings.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "rating", "timestamp"])
        for u in range(1, n_users + 1):
            for t in range(per_user):
                ts = f"2024-{1 + t % 12:02d}-{1 + u % 28:02d}T10:00:00" if iso_dates else 1_700_000_000 + 3600 * t + u
                w.writerow([u, ((u * 7 + t * 3) % n_items + 1) * 10, 4, ts])
    return {"source": "interactions", "interactions": str(folder / "ratings.csv"), "items": str(folder / "items.csv"),
            "domain": {"noun": "book", "verb": "read"}}


def _out(tmp_path: Path, tag: str) -> dict[str, Path]:
    return {s: tmp_path / tag / f"{s}.parquet" for s in SPLITS}


def _build(entry: dict, **cfg) -> tuple[pl.DataFrame, dict]:
    return build_items_and_rows("mybooks", entry, None, DataConfig(**{**CFG, **cfg}), 0)


def _csv(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---- the recipe ---------------------------------------------------------------------------------------

def test_own_csv_gives_the_builtin_recipe_exactly(tmp_path):
    """ML-100K-shaped files written as two CSVs give byte-identical splits to the built-in raw source."""
    raw = tmp_path / "raw"
    raw.mkdir()
    zp = write_ml_zip(raw / "ml-100k.zip")
    builtin = preprocess("movielens", "raw", raw, _out(tmp_path, "builtin"), CFG, seed=3, extra_sha256=ml_pins(zp))
    items = pl.read_parquet(_out(tmp_path, "builtin")["items"])
    with zipfile.ZipFile(zp) as zf:
        data = zf.read("ml-100k/u.data").decode()
    own = tmp_path / "own"
    own.mkdir()
    with open(own / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["m", "name"])
        for sid, title in zip(items["source_id"], items["title"]):
            w.writerow([sid, title])
    rows = [line.split("\t") for line in data.splitlines() if line]
    _csv(own / "log.tsv", "u\tm\tr\tt\n" + "".join("\t".join(r) + "\n" for r in rows[::-1]))  # any row order
    entry = {"source": "interactions", "interactions": str(own / "log.tsv"), "items": str(own / "items.csv"),
             "columns": {"user": "u", "item": "m", "timestamp": "t", "title": "name"}, "domain": "movie"}
    counts = preprocess("mymovies", entry, None, _out(tmp_path, "own"), CFG, seed=3)
    assert counts == builtin
    for s in SPLITS:
        assert _out(tmp_path, "own")[s].read_bytes() == _out(tmp_path, "builtin")[s].read_bytes(), s


def test_books_csv_and_parquet(tmp_path):
    entry = write_books(tmp_path / "books")
    before = {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in (tmp_path / "books").iterdir()}
    counts = preprocess("mybooks", entry, None, _out(tmp_path, "csv"), CFG, seed=1)
    assert counts == {"items": 40, "train": 24 * 9, "valid": 3, "test": 3, "titles_changed": 0}
    items = pl.read_parquet(_out(tmp_path, "csv")["items"])
    assert items.row(0) == (0, "The Stone of Garden, Volume 1", "10") and items["item_id"].to_list() == list(range(40))
    # the user's folder is only read
    assert {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in (tmp_path / "books").iterdir()} == before
    # the same log as Parquet (integer columns) gives the same splits
    pl.read_csv(entry["interactions"]).write_parquet(tmp_path / "books.parquet")
    preprocess("mybooks", {**entry, "interactions": str(tmp_path / "books.parquet")}, None, _out(tmp_path, "pq"), CFG, seed=1)
    for s in SPLITS:
        assert _out(tmp_path, "pq")[s].read_bytes() == _out(tmp_path, "csv")[s].read_bytes(), s


def test_timestamp_forms_and_order(tmp_path):
    """ISO dates, a strftime pattern and no timestamp column (file order) all order each user's items."""
    f = tmp_path
    _csv(f / "items.csv", "item_id,title\n" + "".join(f"{i},Book {i}\n" for i in range(1, 31)))
    iso = "user_id,item_id,timestamp\n" + "".join(
        f"{u},{(u + 30 - t) % 30 + 1},2024-01-{t + 1:02d}T0{t % 10}:00:00Z\n" for u in range(20) for t in range(6))
    base = {"source": "interactions", "items": str(f / "items.csv"), "domain": "movie"}
    _, rows_iso = _build({**base, "interactions": _csv(f / "iso.csv", iso)})
    first = rows_iso["train"][1][0]
    # user u read items u+1, u, u-1, ... (mod 30) in date order
    u = rows_iso["train"][0][0]
    assert first == [(u + 30 - t) % 30 for t in range(3)]
    eu = iso.replace("T0", " ").replace(":00:00Z", "")
    eu = "\n".join(line if i == 0 else _to_eu(line) for i, line in enumerate(eu.splitlines())) + "\n"
    _, rows_eu = _build({**base, "interactions": _csv(f / "eu.csv", eu), "timestamp_format": "%d/%m/%Y %H:%M"})
    assert rows_eu == rows_iso
    no_time = "user_id,item_id\n" + "".join(f"{u},{(u + 30 - t) % 30 + 1}\n" for u in range(20) for t in range(6))
    _, rows_order = _build({**base, "interactions": _csv(f / "order.csv", no_time), "columns": {"timestamp": None}})
    assert rows_order == rows_iso


def _to_eu(line: str) -> str:
    u, i, ts = line.split(",")
    day, hour = ts.split(" ")
    y, m, d = day.split("-")
    return f"{u},{i},{d}/{m}/{y} {hour}:00"


# ---- bad input ----------------------------------------------------------------------------------------

@pytest.fixture
def books(tmp_path) -> dict:
    return write_books(tmp_path / "books")


def test_missing_columns(books, tmp_path):
    with pytest.raises(MalformedInputError, match=r"ratings\.csv, line 1 \(header\): missing column\(s\) 'when' "
                                                  r"\(datasets\.mybooks\.columns\.timestamp\); found columns \['user_id'"):
        _build({**books, "columns": {"timestamp": "when"}})
    semi = _csv(tmp_path / "semi.csv", "item_id;title\n1;A\n")
    with pytest.raises(MalformedInputError, match=r"semi\.csv, line 1 \(header\): missing column\(s\) 'item_id'.*"
                                                  r"is the separator ',' right"):
        _build({**books, "items": semi})
    with pytest.raises(FileNotFoundError, match=r"config datasets\.mybooks\.items: file .*nowhere\.csv does not exist"):
        _build({**books, "items": str(tmp_path / "nowhere.csv")})


def test_non_integer_and_unknown_ids(books, tmp_path):
    log = Path(books["interactions"]).read_text().splitlines()
    log[5] = "u7," + log[5].split(",", 1)[1]
    bad_user = _csv(tmp_path / "bad_user.csv", "\n".join(log) + "\n")
    with pytest.raises(MalformedInputError, match=r"bad_user\.csv, line 6, column 'user_id': expected an integer id, found 'u7'"):
        _build({**books, "interactions": bad_user})
    log = Path(books["interactions"]).read_text().splitlines()
    log[9] = "1,999,4,1700000000"
    unknown = _csv(tmp_path / "unknown.csv", "\n".join(log) + "\n")
    with pytest.raises(MalformedInputError, match=r"unknown\.csv, line 10, column 'item_id': item id 999 is not in "
                                                  r"the item table .*items\.csv \(1 such rows\)"):
        _build({**books, "interactions": unknown})
    items, rows = _build({**books, "interactions": unknown}, unknown_ids="drop")
    assert items.height == 40 and rows["train"][0]
    items_text = Path(books["items"]).read_text().replace("\n30,", "\n3x,", 1)
    with pytest.raises(MalformedInputError, match=r"items2\.csv, line 4, column 'item_id': expected an integer id, found '3x'"):
        _build({**books, "items": _csv(tmp_path / "items2.csv", items_text)})


def test_duplicate_ids_and_empty_titles(books, tmp_path):
    text = Path(books["items"]).read_text()
    dup = _csv(tmp_path / "dup.csv", text + '20,"Another Title",B. Writer\n')
    with pytest.raises(MalformedInputError, match=r"dup\.csv, line 42, column 'item_id': item id 20 appears again with "
                                                  r"title 'Another Title'; .*dup\.csv, line 3 gave it 'The Night of Mirror, Volume 2'"):
        _build({**books, "items": dup})
    same = _csv(tmp_path / "same.csv", text + '20,"The Night of  Mirror, Volume 2",B. Writer\n')  # same title: kept once
    assert _build({**books, "items": same})[0].height == 40
    # a quoted title spanning two lines shifts the line numbers of what follows; the error still names the right line
    lines = text.splitlines()
    lines[2] = '20,"The Night of Mirror,\nVolume 2",A. Writer'
    lines[6] = "60,   ,A. Writer"
    empty = _csv(tmp_path / "empty.csv", "\n".join(lines) + "\n")
    with pytest.raises(MalformedInputError, match=r"empty\.csv, line 8, column 'title': expected a non-empty title, found an empty field"):
        _build({**books, "items": empty})


def test_unparseable_timestamps(books, tmp_path):
    log = Path(books["interactions"]).read_text().splitlines()
    iso = [log[0]] + [",".join(r.split(",")[:3] + ["2024-03-01"]) for r in log[1:]]
    iso[20] = "2,40,4,yesterday"
    with pytest.raises(MalformedInputError, match=r"t\.csv, line 21, column 'timestamp': expected a Unix time, a number or "
                                                  r"an ISO 8601 date/time .*found 'yesterday'"):
        _build({**books, "interactions": _csv(tmp_path / "t.csv", "\n".join(iso) + "\n")})
    with pytest.raises(MalformedInputError, match=r"f\.csv, line 2, column 'timestamp': expected a date/time in the format '%d\.%m\.%Y'"):
        _build({**books, "interactions": _csv(tmp_path / "f.csv", "\n".join(iso[:3]) + "\n"), "timestamp_format": "%d.%m.%Y"})


def test_structure_encoding_and_pins(books, tmp_path):
    log = Path(books["interactions"]).read_text().splitlines()
    log[3] += ",extra"
    with pytest.raises(MalformedInputError, match=r"ragged\.csv, line 4: 5 ','-separated fields, but the header has 4"):
        _build({**books, "interactions": _csv(tmp_path / "ragged.csv", "\n".join(log) + "\n")})
    latin = tmp_path / "latin.csv"
    latin.write_bytes(Path(books["items"]).read_bytes().replace(b"Volume 7", b"Caf\xe9 7"))
    with pytest.raises(MalformedInputError, match=r"latin\.csv, line 8: not UTF-8 \(byte 0xe9\)"):
        _build({**books, "items": str(latin)})
    pin = sha256_file(books["items"])
    assert _build({**books, "sha256": {"items": pin}})[0].height == 40
    with pytest.raises(MalformedInputError, match=r"items\.csv: sha256 mismatch: expected 0{64} \(datasets\.mybooks\.sha256\.items\)"):
        _build({**books, "sha256": {"items": "0" * 64}})


def test_log_too_small_for_the_split(tmp_path):
    entry = write_books(tmp_path / "b", n_users=8)
    with pytest.raises(MalformedInputError, match=r"ratings\.csv: the log is too small for the split: 8 users, 8 of them "
                                                  r"with more than data\.min_history=3 distinct items; data\.split \[0\.8, 0\.1, 0\.1\] "
                                                  r"gives train 6, valid 0, test 2 users, so the valid split"):
        _build(entry)
    entry = write_books(tmp_path / "c", n_users=30, per_user=3)
    with pytest.raises(MalformedInputError, match="30 users, 0 of them with more than"):
        _build(entry)
    entry = write_books(tmp_path / "d", n_items=12)
    with pytest.raises(ValueError, match=r"valid split: row 0: only .* eligible negatives.*the item table has 12 items"):
        preprocess("mybooks", entry, None, _out(tmp_path, "d"), {"n_candidates": 10}, seed=0)


def test_nested_and_shared_titles_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="llara"):
        counts = title_overlaps(["Up", "Up in the Air", "Heat", "HEAT", "Heatwave", "Alien"], "items.csv")
    assert counts == {"shared_titles": 2, "nested_titles": 3}
    text = caplog.text
    assert "items.csv: 2 items share their title with another item (e.g. 'heat')" in text
    assert "items.csv: 3 items have a title nested in another item's title" in text and "'up' in 'up in the air'" in text


# ---- config checks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,entry,message", [
    ("My Books", {"source": "interactions"}, r"must match \^\[a-z0-9\]"),
    ("report", {"source": "interactions"}, "'report' is reserved"),
    ("lastfm", {"source": "interactions", "interactions": "a", "items": "b", "domain": "artist"}, "is a built-in dataset"),
    ("mybooks", {"source": "raw"}, "'mybooks' is not a built-in dataset.*source: interactions"),
    ("movielens", {"source": "csv"}, r"datasets\.movielens\.source: 'csv': expected one of \['llara', 'raw'\]"),
    ("movielens", {"source": "raw", "items": "x.csv"}, r"\['items'\] apply to source: interactions only"),
    ("mybooks", {"source": "interactions", "items": "b.csv", "domain": "x"}, r"datasets\.mybooks\.interactions is missing"),
    ("mybooks", {"source": "interactions", "interactions": "a", "items": "b"}, r"datasets\.mybooks\.domain is missing"),
    ("mybooks", {"source": "interactions", "interactions": "a", "items": "b", "domain": "x", "colums": {}}, r"unknown key\(s\) \['colums'\]"),
    ("mybooks", {"source": "interactions", "interactions": "a", "items": "b", "domain": "x", "columns": {"rating": "r"}},
     r"columns: unknown key\(s\) \['rating'\]"),
    ("mybooks", {"source": "interactions", "interactions": "a", "items": "b", "domain": "x", "sha256": {"items": "abc"}},
     r"sha256\.items: expected 64 lower-case hex digits"),
])
def test_dataset_config_errors(name, entry, message):
    with pytest.raises(dsets.DatasetConfigError, match=message):
        dsets.check_datasets({name: entry})


def test_snakemake_inputs_and_schema(tmp_path):
    import yaml
    from conftest import REPO
    from snakemake.utils import validate

    entry = {"source": "interactions", "interactions": "~/data/r.csv", "items": "/abs/items.csv", "domain": {"noun": "book", "verb": "read"}}
    assert dsets.preprocess_inputs("mybooks", entry) == {"interactions": str(Path.home() / "data/r.csv"), "item_table": "/abs/items.csv"}
    assert dsets.preprocess_inputs("lastfm", {"source": "llara", "domain": "artist"}) == {"raw": "resources/raw/lastfm/llara"}
    assert dsets.data_slice("lastfm", {"source": "llara", "domain": "movie"}) == "llara"  # wording is not a data param
    assert "domain" not in dsets.data_slice("mybooks", entry)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"]["mybooks"] = entry
    config["tune"]["overrides"] = {"mybooks": {"lr": 1e-4}}
    config["report"]["datasets"] = ["mybooks"]
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    for bad in ({"My-Books": entry}, {"report": entry}, {"mybooks": {**entry, "domain": {"noun": "book"}}},
                {"mybooks": {**entry, "sep": ";;"}}, {"mybooks": {**entry, "domain": {"noun": "bo{ok", "verb": "read"}}}):
        with pytest.raises(Exception):
            validate({**config, "datasets": bad}, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))


def test_cli_preprocess_own_dataset(tmp_path, capsys):
    """`llara preprocess NAME --dataset-config @entry.json` builds your dataset without Snakemake."""
    import json

    from llara.cli import main

    entry = write_books(tmp_path / "books")
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    assert main(["preprocess", "mybooks", "--dataset-config", f"@{tmp_path / 'entry.json'}", "--out", str(tmp_path / "data"),
                 "--data", json.dumps(CFG)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"items": 40, "train": 216, "valid": 3, "test": 3,
                                                                          "titles_changed": 0}
    assert (tmp_path / "data" / "test.parquet").is_file()
    assert main(["preprocess", "lastfm", "--out", str(tmp_path / "x")]) == 2  # an argument error: one line
    assert "--raw is required" in capsys.readouterr().err


def test_parquet_errors_name_the_row(books, tmp_path):
    log = pl.read_csv(books["interactions"], schema_overrides={"user_id": pl.String})
    log = log.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("anna")).otherwise(pl.col("user_id")).alias("user_id"))
    log.write_parquet(tmp_path / "log.parquet")
    with pytest.raises(MalformedInputError, match=r"log\.parquet, row 5, column 'user_id': expected an integer id, found 'anna'"):
        _build({**books, "interactions": str(tmp_path / "log.parquet")})
    log.drop("timestamp").write_parquet(tmp_path / "no_time.parquet")
    with pytest.raises(MalformedInputError, match=r"no_time\.parquet \(Parquet schema\): missing column\(s\) 'timestamp'"):
        _build({**books, "interactions": str(tmp_path / "no_time.parquet")})
