"""Parsers of every raw source on small fixtures the tests write, and their error messages."""

import gzip
import zipfile
from pathlib import Path

import polars as pl
import pytest

from llara.data import parse
from llara.data.preprocess import DataConfig, build_items_and_rows, preprocess
from llara.data.schema import EVAL, ITEMS, TRAIN, read_table

GENRES = "|".join(["0"] * 19)


def write_ml_zip(path: Path, n_users=30, n_items=40, extra_data: str = "") -> Path:
    items = "".join(f"{i}|Movie {i} (199{i % 10})|01-Jan-1995||http://x|{GENRES}\n" for i in range(1, n_items + 1))
    items = items.replace("Movie 3 (1993)", "Caf\xe9 Movie (1993)")
    rows = []
    for u in range(1, n_users + 1):
        for t in range(12):
            rows.append(f"{u}\t{(u * 7 + t * 3) % n_items + 1}\t{1 + t % 5}\t{880000000 + t * 10 + u}")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-100k/u.item", items.encode("latin-1"))
        zf.writestr("ml-100k/u.data", "\n".join(rows) + "\n" + extra_data)
    return path


def ml_pins(zip_path: Path) -> dict[str, str]:
    """``download.extra_sha256`` pins of a fixture zip's members (preprocess verifies every pinned file again)."""
    from llara.io import sha256_bytes

    with zipfile.ZipFile(zip_path) as zf:
        return {f"ml-100k.zip/{m}": sha256_bytes(zf.read(m)) for m in ("ml-100k/u.data", "ml-100k/u.item")}


def test_parse_delimited_errors():
    cols = {"user": pl.Int64, "item": pl.Int64, "rating": pl.Int64, "time": pl.Int64}
    with pytest.raises(parse.MalformedInputError, match=r"u\.data, line 2: column 'rating' expected Int64, found 'x'"):
        parse.parse_delimited("1\t2\t3\t4\n1\t2\tx\t4\n", "u.data", "\t", cols)
    with pytest.raises(parse.MalformedInputError, match=r"u\.data, line 3: expected 4 '\\t'-separated fields, found 3"):
        parse.parse_delimited("1\t2\t3\t4\n1\t2\t3\t4\n1\t2\t3\n", "u.data", "\t", cols)


def test_movielens_raw(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pins = ml_pins(write_ml_zip(raw / "ml-100k.zip"))
    out = {s: tmp_path / f"{s}.parquet" for s in ("items", "train", "valid", "test")}
    cfg = {"n_candidates": 10, "candidate_sets": 2}
    counts = preprocess("movielens", "raw", raw, out, cfg, seed=1, extra_sha256=pins)
    assert counts["items"] == 40
    assert counts["valid"] == 3 and counts["test"] == 3  # 30 users split 24/3/3
    assert counts["train"] == 24 * (12 - 3)
    items = read_table(out["items"], ITEMS).to_pylist()
    assert items[0] == {"item_id": 0, "title": "Movie 1", "source_id": "1"}
    assert items[2]["title"] == "Caf\xe9 Movie"  # Latin-1 decoded, year stripped
    train = read_table(out["train"], TRAIN).to_pylist()
    assert all(3 <= len(r["history"]) <= 10 for r in train)
    test = read_table(out["test"], EVAL).to_pylist()
    for r in test:
        assert r["candidates"] == r["candidate_sets"][0] and len(r["candidate_sets"]) == 2
        assert r["target"] in r["candidates"] and not set(r["candidates"]) & set(r["history"])
    # train users and held-out users are disjoint
    assert not {r["user_id"] for r in train} & {r["user_id"] for r in test}
    # seeded: a second run gives identical tables
    out2 = {s: tmp_path / f"b_{s}.parquet" for s in out}
    preprocess("movielens", "raw", raw, out2, cfg, seed=1, extra_sha256=pins)
    assert all(Path(out[s]).read_bytes() == Path(out2[s]).read_bytes() for s in out)


def test_movielens_unknown_item(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pins = ml_pins(write_ml_zip(raw / "ml-100k.zip", extra_data="1\t999\t4\t881000000\n"))
    with pytest.raises(parse.MalformedInputError, match=r"u\.data, line 361: item id 999 is not in the item table"):
        build_items_and_rows("movielens", "raw", raw, DataConfig(), 0, extra_sha256=pins)
    items, rows = build_items_and_rows("movielens", "raw", raw, DataConfig(unknown_ids="drop"), 0, extra_sha256=pins)
    assert 998 not in {i for h in rows["train"][1] for i in h}


def test_hetrec_lastfm(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    artists = "id\tname\turl\tpictureURL\n" + "".join(f"{i}\tArtist {i}\thttp://a\thttp://p\n" for i in range(2, 32))
    tags = ["userID\tartistID\ttagID\ttimestamp"]
    for u in range(20):
        for t in range(8):
            a = 2 + (u + t * 3) % 30
            tags.append(f"{u}\t{a}\t{t}\t{1_200_000_000_000 + t * 1000}")
            tags.append(f"{u}\t{a}\t{t + 50}\t{1_300_000_000_000 + t}")  # a later tag of the same pair: ignored
    with zipfile.ZipFile(raw / "hetrec2011-lastfm-2k.zip", "w") as zf:
        zf.writestr("artists.dat", artists)
        zf.writestr("user_taggedartists-timestamps.dat", "\n".join(tags) + "\n")
    items, rows = build_items_and_rows("lastfm", "raw", raw, DataConfig(), 0)
    assert items.height == 30 and items["title"][0] == "Artist 2" and items["source_id"][0] == "2"
    n_rows = sum(len(rows[s][0]) for s in ("train", "valid", "test"))
    assert n_rows == 16 * 5 + 2 + 2  # 8 unique artists per user, 16/2/2 users
    first_train = rows["train"][1][0]
    assert first_train == [0, 3, 6]  # user 0's artists in time order, renumbered 0..n-1


def test_steam_raw(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with gzip.open(raw / "steam_games.json.gz", "wt") as f:
        for g in range(25):
            f.write(repr({"app_name": f"Game {g}", "id": str(100 + g), "price": 9.99}) + "\n")
        f.write(repr({"app_name": "No id"}) + "\n")
    with gzip.open(raw / "steam_reviews.json.gz", "wt") as f:
        for u in range(10):
            for t in range(6):
                f.write(repr({"username": f"user{u}", "product_id": str(100 + (u + t * 2) % 25),
                              "date": f"2017-01-{t + 1:02d}", "text": "it's 'fine'"}) + "\n")
    items, rows = build_items_and_rows("steam", "raw", raw, DataConfig(), 0)
    assert items.height == 25 and items.filter(pl.col("source_id") == "100")["title"][0] == "Game 0"
    assert len(rows["train"][0]) == 8 * 3
    with gzip.open(raw / "steam_reviews.json.gz", "at") as f:
        f.write("{'username': 'x', 'product_id': '100', 'date': 'yesterday'}\n")
    with pytest.raises(parse.MalformedInputError, match=r"steam_reviews\.json\.gz, line 61: date expected YYYY-MM-DD"):
        build_items_and_rows("steam", "raw", raw, DataConfig(), 0)


def test_id2name_errors(tmp_path):
    p = tmp_path / "id2name.txt"
    p.write_text("0::A\n1 B\n")
    with pytest.raises(parse.MalformedInputError, match=r"id2name\.txt, line 2: expected 'id::name'"):
        parse.llara_id2name(p)


def test_cli_download_and_preprocess(tmp_path, capsys):
    """The data stage is callable without Snakemake: `llara download` then `llara preprocess`."""
    import json

    from llara.cli import main
    from llara.io import sha256_bytes

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    zp = write_ml_zip(mirror / "ml-100k.zip")
    with zipfile.ZipFile(zp) as zf:
        pins = {f"ml-100k.zip/{m}": sha256_bytes(zf.read(m)) for m in ("ml-100k/u.data", "ml-100k/u.item")}
    raw = tmp_path / "raw"
    assert main(["download", "movielens", "--source", "raw", "--out", str(raw), "--mirror", str(mirror),
                 "--extra-sha256", json.dumps(pins)]) == 0
    assert (raw / "ml-100k.zip").is_file()
    assert main(["preprocess", "movielens", "--source", "raw", "--raw", str(raw), "--out", str(tmp_path / "data"),
                 "--data", '{"n_candidates": 10, "candidate_sets": 1}', "--extra-sha256", json.dumps(pins)]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts == {"items": 40, "train": 216, "valid": 3, "test": 3, "titles_changed": 0}
