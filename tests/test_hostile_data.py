"""Part of the hostile-input suite (issue #29): data that the data stage used to accept, mix, hang on or crash on.

* class A, trusted without a check: an interrupted ``llara preprocess --out`` left a mix of two runs that later
  stages read as complete (the four files are now one output set, refused by every reader until complete and
  unchanged); a raw folder the pipeline did not write was read as a verified download (every pinned file is
  verified again when it is read);
* class B, accepted silently: titles holding LLaRA's special-token strings (cleaned once, at preprocessing,
  for prompts and scoring alike, and counted; a title of tokens only is refused);
* class C, unbounded work: the title-overlap check was quadratic in a title's length (now linear, and titles
  are bounded by ``llara.text.MAX_TITLE_CHARS``);
* class D, crashes instead of a one-line error: a Parquet id column of list type, a pinned pickle holding a
  6000-digit id, ``--out`` at a dangling symbolic link (now refused before any work).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from conftest import SHARED
from test_data_own import write_books
from test_data_parse import ml_pins, write_ml_zip

from llara.data.download import ChecksumError
from llara.data.parse import MalformedInputError
from llara.data.preprocess import DataConfig, build_items_and_rows, preprocess
from llara.data.safe_pickle import PickleFormatError, load_llara_split
from llara.data.schema import ITEMS, SPLIT_SCHEMAS, read_table
from llara.io import MARKER, IncompleteOutputError, sha256_file
from llara.text import MAX_TITLE_CHARS, SPECIAL_TOKENS, short_repr

SPLITS = ("items", "train", "valid", "test")
SCHEMAS = {"items": ITEMS, **SPLIT_SCHEMAS}
CFG = {"n_candidates": 10, "candidate_sets": 2}
needs_mirror = pytest.mark.skipif(not (SHARED / "datasets" / "llara" / "lastfm").is_dir(), reason="../shared/datasets absent")


def _llara(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The ``llara`` command in a real subprocess."""
    return subprocess.run([sys.executable, "-m", "llara.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A failed command: non-zero exit, one line on stderr naming ``needles``, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode not in (0, -signal.SIGKILL), (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _items_csv(path: Path, titles: dict[int, str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title"])
        for i, t in titles.items():
            w.writerow([i, t])


def _books_titles(entry: dict) -> dict[int, str]:
    with open(entry["items"], newline="", encoding="utf-8") as f:
        return {int(r["item_id"]): r["title"] for r in csv.DictReader(f)}


# ================================================================================= A: interrupted outputs
class TestOutputSets:
    """The four preprocess files appear together or not at all, for every reader."""

    def test_a_killed_preprocess_never_leaves_a_set_that_reads_as_complete(self, tmp_path):
        from llara.llm.data import load_titles
        from llara.seqrec.data import load_n_items, load_split

        entry = write_books(tmp_path / "books")
        (tmp_path / "entry.json").write_text(json.dumps(entry))
        out = tmp_path / "data"
        out.mkdir()
        (out / "notes.txt").write_text("the user's own file")  # a folder shared with the user's files
        args = ["preprocess", "mybooks", "--dataset-config", f"@{tmp_path / 'entry.json'}", "--out", out,
                "--data", json.dumps(CFG)]
        first = _llara([*args, "--seed", "1"])
        assert first.returncode == 0, first.stderr[-3000:]
        old = {s: (out / f"{s}.parquet").read_bytes() for s in SPLITS}
        for s in SPLITS:
            read_table(out / f"{s}.parquet", SCHEMAS[s])  # a complete set reads
        for k in (0, 2, 4):  # killed before any file, between files (items+train new, valid/test old), before the seal
            killed = _llara([*args, "--seed", str(10 + k)], env={"LLARA_TEST_KILL_AFTER_FILES": str(k)})
            assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
            if k == 2:  # really a mix: a new train split next to the old valid split
                assert (out / "train.parquet").read_bytes() != old["train"]
                assert (out / "valid.parquet").read_bytes() == old["valid"]
            for s in SPLITS:
                with pytest.raises(IncompleteOutputError, match=rf"{s}\.parquet: stage 'preprocess' did not finish writing "
                                                                rf"items\.parquet, test\.parquet, train\.parquet, valid\.parquet"):
                    read_table(out / f"{s}.parquet", SCHEMAS[s])
            with pytest.raises(IncompleteOutputError, match=r"items\.parquet"):
                load_n_items(out / "items.parquet")  # seqrec
            with pytest.raises(IncompleteOutputError, match=r"train\.parquet"):
                load_split(out / "train.parquet", "train", 40, 10)
            with pytest.raises(IncompleteOutputError, match=r"items\.parquet"):
                load_titles(out / "items.parquet")  # tune, evaluate
        # a rerun completes the set; the user's file is untouched
        again = _llara([*args, "--seed", "1"])
        assert again.returncode == 0, again.stderr[-3000:]
        assert {s: (out / f"{s}.parquet").read_bytes() for s in SPLITS} == old
        for s in SPLITS:
            read_table(out / f"{s}.parquet", SCHEMAS[s])
        assert (out / "notes.txt").read_text() == "the user's own file"
        assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "notes.txt", *(f"{s}.parquet" for s in SPLITS)])

    def test_llara_seqrec_on_a_killed_set_is_one_line(self, tmp_path):
        """The CLI reports the refusal like any bad input (needs llara.io.IncompleteOutputError among the CLI's
        expected errors, llara.cli_errors.expected_errors)."""
        entry = write_books(tmp_path / "books")
        out = tmp_path / "data"
        args = ["preprocess", "mybooks", "--dataset-config", json.dumps(entry), "--out", out, "--data", json.dumps(CFG)]
        assert _llara([*args, "--seed", "1"]).returncode == 0
        killed = _llara([*args, "--seed", "2"], env={"LLARA_TEST_KILL_AFTER_FILES": "2"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        seqrec = _llara(["seqrec", "gru4rec", out, tmp_path / "gru4rec", "--set", "max_epochs=1", "--set", "hidden_size=8",
                         "--no-progress", "--threads", "1"])
        _one_line_error(seqrec, "items.parquet", "did not finish")
        assert not (tmp_path / "gru4rec" / "model.safetensors").exists()

    def test_a_set_file_replaced_afterwards_is_refused(self, tmp_path):
        entry = write_books(tmp_path / "books")
        a, b = tmp_path / "a", tmp_path / "b"
        preprocess("mybooks", entry, None, {s: a / f"{s}.parquet" for s in SPLITS}, CFG, seed=1)
        preprocess("mybooks", entry, None, {s: b / f"{s}.parquet" for s in SPLITS}, CFG, seed=2)
        shutil.copyfile(b / "train.parquet", a / "train.parquet")  # another run's split copied in
        with pytest.raises(IncompleteOutputError, match=r"a/train\.parquet: changed since stage 'preprocess' wrote it "
                                                        r"with items\.parquet, test\.parquet, valid\.parquet: expected sha256"):
            read_table(a / "train.parquet", SCHEMAS["train"])
        read_table(a / "items.parquet", ITEMS)  # the files that were not touched still read

    def test_a_partly_rewritten_set_refuses_the_rest(self, tmp_path):
        """Python callers may write a set into another set's folder under other names: a file shared with a later
        set belongs to that one, the earlier set's other files no longer read."""
        entry = write_books(tmp_path / "books")
        d = tmp_path / "d"
        preprocess("mybooks", entry, None, {s: d / f"{s}.parquet" for s in SPLITS}, CFG, seed=1)
        preprocess("mybooks", entry, None, {"items": d / "items.parquet", **{s: d / f"b_{s}.parquet" for s in SPLITS[1:]}},
                   CFG, seed=2)
        read_table(d / "items.parquet", ITEMS)
        read_table(d / "b_train.parquet", SCHEMAS["train"])
        with pytest.raises(IncompleteOutputError, match=r"d/train\.parquet: part of a set of stage 'preprocess' whose "
                                                        r"other files a later run replaced"):
            read_table(d / "train.parquet", SCHEMAS["train"])

    def test_the_synthetic_task_is_one_set_too(self, tmp_path):
        from llara.data.synthetic import write_genre_dataset

        kw = dict(n_items=40, n_genres=10, n_train=60, n_eval=12, n_candidates=5, candidate_sets=2)
        a = write_genre_dataset(tmp_path / "a", seed=1, **kw)
        b = write_genre_dataset(tmp_path / "b", seed=2, **kw)
        for s in SPLITS:
            read_table(a / f"{s}.parquet", SCHEMAS[s])
        shutil.copyfile(b / "valid.parquet", a / "valid.parquet")
        with pytest.raises(IncompleteOutputError, match=r"valid\.parquet: changed since stage 'synthetic' wrote it"):
            read_table(a / "valid.parquet", SCHEMAS["valid"])

    def test_files_outside_any_set_still_read(self, tiny_data):
        """What a user (or a test, or the synthetic task) writes as plain Parquet is read as before."""
        for s in SPLITS:
            assert read_table(tiny_data / f"{s}.parquet", SCHEMAS[s]).num_rows > 0


# ================================================================================ A: unverified raw folders
class TestRawFoldersVerifiedAgain:
    def test_an_edited_zip_member_is_refused(self, tmp_path):
        raw = tmp_path / "raw"
        raw.mkdir()
        pins = ml_pins(write_ml_zip(raw / "ml-100k.zip"))
        with zipfile.ZipFile(raw / "ml-100k.zip") as zf:
            members = {m: zf.read(m) for m in zf.namelist()}
        members["ml-100k/u.item"] = members["ml-100k/u.item"].replace(b"Movie 5 ", b"Edited 5 ")
        with zipfile.ZipFile(raw / "ml-100k.zip", "w") as zf:
            for m, data in members.items():
                zf.writestr(m, data)
        with pytest.raises(ChecksumError, match=r"ml-100k\.zip: member ml-100k/u\.item: sha256 mismatch: expected "
                                                r"[0-9a-f]{64}, found [0-9a-f]{64}; the raw folder must hold"):
            build_items_and_rows("movielens", "raw", raw, DataConfig(**CFG), 0, extra_sha256=pins)

    def test_a_missing_raw_file_is_one_line(self, tmp_path):
        (tmp_path / "raw").mkdir()
        proc = _llara(["preprocess", "movielens", "--source", "raw", "--raw", tmp_path / "raw", "--out", tmp_path / "out"])
        _one_line_error(proc, "ml-100k.zip: missing")
        assert not (tmp_path / "out").exists()

    @needs_mirror
    def test_a_hand_made_llara_folder_with_an_edited_id2name_is_refused(self, tmp_path):
        raw = tmp_path / "resources" / "raw" / "lastfm" / "llara"
        shutil.copytree(SHARED / "datasets" / "llara" / "lastfm", raw / "llara" / "lastfm")
        id2name = raw / "llara" / "lastfm" / "id2name.txt"
        id2name.chmod(0o644)
        id2name.write_text(id2name.read_text(encoding="utf-8").replace("::", "::Edited ", 1), encoding="utf-8")
        out = tmp_path / "results" / "lastfm" / "data"
        proc = _llara(["preprocess", "lastfm", "--raw", raw, "--out", out])
        _one_line_error(proc, "id2name.txt: sha256 mismatch: expected b608bcf1")
        assert not out.exists()


# ============================================================================ B: special-token titles
class TestTitles:
    def test_special_token_strings_are_cleaned_once_and_counted(self, tmp_path, caplog):
        from llara.evaluate.run import load_titles as scoring_titles
        from llara.llm.data import load_titles as prompt_titles
        from llara.llm.prompts import clean_title as prompt_clean

        entry = write_books(tmp_path / "books")
        titles = _books_titles(entry)
        titles[10] = "The River [PH] of Stone"
        titles[20] = "[HistoryEmb]Night\nGarden"
        titles[30] = "Mirror[CansEmb][ItemEmb]"
        titles[40] = "[Hist[PH]oryEmb] Harbor"  # removing one token must not leave another behind
        _items_csv(Path(entry["items"]), titles)
        out = {s: tmp_path / "data" / f"{s}.parquet" for s in SPLITS}
        with caplog.at_level(logging.WARNING, logger="llara"):
            counts = preprocess("mybooks", entry, None, out, CFG, seed=1)
        assert counts["titles_changed"] == 4
        assert "items.csv: 4 titles cleaned (LLaRA's special-token strings" in caplog.text
        got = dict(zip(*pl.read_parquet(out["items"]).select("source_id", "title").to_dict(as_series=False).values()))
        assert [got["10"], got["20"], got["30"], got["40"]] == ["The River of Stone", "Night Garden", "Mirror",
                                                                "[Hist oryEmb] Harbor"]
        assert not any(tok in t for t in got.values() for tok in SPECIAL_TOKENS)
        # prompts and scoring see the same strings
        by_id = scoring_titles(out["items"])
        assert prompt_titles(out["items"]) == [by_id[i] for i in range(len(by_id))]
        assert all(prompt_clean(t) == t for t in by_id.values())

    def test_the_cli_prints_the_count(self, tmp_path):
        entry = write_books(tmp_path / "books")
        titles = _books_titles(entry)
        titles[10] = "[PH] The River"
        _items_csv(Path(entry["items"]), titles)
        proc = _llara(["preprocess", "mybooks", "--dataset-config", json.dumps(entry), "--out", tmp_path / "d",
                       "--data", json.dumps(CFG)])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1])["titles_changed"] == 1

    def test_a_title_of_tokens_only_is_refused_naming_the_item(self, tmp_path):
        entry = write_books(tmp_path / "books")
        titles = _books_titles(entry)
        titles[70] = " [PH][ItemEmb] "
        _items_csv(Path(entry["items"]), titles)
        with pytest.raises(MalformedInputError, match=r"items\.csv, column 'title', item 70 \(item_id 6\): expected a title "
                                                      r"with text besides LLaRA's special-token strings .*found '\[PH\]\[ItemEmb\]'"):
            build_items_and_rows("mybooks", entry, None, DataConfig(**CFG), 0)

    def test_the_data_stage_knows_the_prompt_tokens(self):
        from llara.llm import prompts

        assert tuple(prompts.SPECIAL_TOKENS) == SPECIAL_TOKENS


# ======================================================================================= C: unbounded work
class TestTitleLength:
    def test_a_long_title_is_refused_before_any_overlap_check(self, tmp_path):
        entry = write_books(tmp_path / "books")
        titles = _books_titles(entry)
        titles[50] = "la " * 700_000  # 2 MB
        _items_csv(Path(entry["items"]), titles)
        with pytest.raises(MalformedInputError, match=rf"items\.csv, column 'title', item 50 \(item_id 4\): expected a "
                                                      rf"title of at most {MAX_TITLE_CHARS} characters, found 2099999"):
            build_items_and_rows("mybooks", entry, None, DataConfig(**CFG), 0)
        titles[50] = "x" * MAX_TITLE_CHARS  # at the limit: accepted
        _items_csv(Path(entry["items"]), titles)
        build_items_and_rows("mybooks", entry, None, DataConfig(**CFG), 0)

    def test_the_overlap_check_is_linear(self):
        """One 2 MB title, and 3,000 titles nested in each other (every one a substring of the next), finish in
        seconds; run in a subprocess with a time limit, since the quadratic check took minutes to hours."""
        code = textwrap.dedent("""
            import time
            from llara.data.titles import title_overlaps
            t = time.perf_counter()
            one = title_overlaps([f"title {i}" for i in range(300)] + ["zebra", "la " * 700_000 + "zebra"], "x")
            chain = title_overlaps(["ab" * k for k in range(1, 3001)] + ["b" + "ab" * 50], "y")
            print(one["nested_titles"], chain["nested_titles"], round(time.perf_counter() - t, 2))
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        one, chain, took = proc.stdout.split()
        assert int(one) == 29 + 1  # title 1..29 in title 10..299, and zebra in the long one
        assert int(chain) == 3000  # every "ab"*k is in "ab"*(k+1); "b" + "ab"*50 is in "ab"*51
        assert float(took) < 60

    def test_the_overlap_counts_match_a_brute_force_count(self):
        from llara.data.titles import title_overlaps
        from llara.text import normalize_title

        rng = random.Random(7)
        for _ in range(200):
            titles = ["".join(rng.choice("ab ") for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(1, 25))]
            norm = [normalize_title(t) for t in titles]
            uniq = set(norm)
            nested = {p for p in uniq if p and any(p != q and p in q for q in uniq)}
            assert title_overlaps(titles, "x") == {
                "shared_titles": sum(norm.count(t) for t in uniq if norm.count(t) > 1),
                "nested_titles": sum(norm.count(t) for t in nested)}


# ====================================================================================== D: crashes
class TestTypesAndHugeValues:
    def test_a_parquet_id_column_of_lists_names_file_and_column(self, tmp_path):
        entry = write_books(tmp_path / "books")
        items = pl.read_csv(entry["items"])
        items.with_columns(pl.col("item_id").map_elements(lambda i: [i], return_dtype=pl.List(pl.Int64))
                           ).write_parquet(tmp_path / "items.parquet")
        with pytest.raises(MalformedInputError, match=r"items\.parquet, column 'item_id': expected integer ids, found "
                                                      r"Parquet type List\(Int64\)"):
            build_items_and_rows("mybooks", {**entry, "items": str(tmp_path / "items.parquet")}, None, DataConfig(**CFG), 0)
        items.with_columns(pl.struct("title").alias("title")).write_parquet(tmp_path / "struct.parquet")
        with pytest.raises(MalformedInputError, match=r"struct\.parquet, column 'title': expected text titles, found "
                                                      r"Parquet type Struct"):
            build_items_and_rows("mybooks", {**entry, "items": str(tmp_path / "struct.parquet")}, None, DataConfig(**CFG), 0)
        log = pl.read_csv(entry["interactions"])
        log.with_columns(pl.col("timestamp").cast(pl.String).cast(pl.Binary)).write_parquet(tmp_path / "log.parquet")
        with pytest.raises(MalformedInputError, match=r"log\.parquet, column 'timestamp': expected timestamps"):
            build_items_and_rows("mybooks", {**entry, "interactions": str(tmp_path / "log.parquet")}, None,
                                 DataConfig(**CFG), 0)
        log.with_columns(pl.col("user_id").cast(pl.Float64) * 1e300).write_parquet(tmp_path / "huge.parquet")
        with pytest.raises(MalformedInputError, match=r"huge\.parquet, row 1, column 'user_id': expected an integer id, "
                                                      r"found 1e\+300"):
            build_items_and_rows("mybooks", {**entry, "interactions": str(tmp_path / "huge.parquet")}, None,
                                 DataConfig(**CFG), 0)

    def test_a_pinned_pickle_with_a_6000_digit_id_names_row_and_column(self, tmp_path):
        huge = 10 ** 6000
        for col, value, expected in (
                ("next", huge, "an item id that fits in 64 bits"),
                ("seq", [1, huge, 3], "an item id that fits in 64 bits"),
                ("len_seq", huge, r"an integer from 0 to len\(seq\) = 3")):
            df = pd.DataFrame({"seq": [[1, 2, 3], [4, 5, 6]], "len_seq": [3, 3], "next": [7, 8]})
            df[col] = df[col].astype(object)
            df.at[1, col] = value
            df.columns = pd.Index(list(df.columns), dtype=object)
            p = tmp_path / f"{col}.df"
            df.to_pickle(p)
            with pytest.raises(PickleFormatError, match=rf"{col}\.df, row 1, column '{col}': expected {expected}, "
                                                        rf"found .*<an integer of about 6001 digits>"):
                load_llara_split(p, sha256_file(p))

    def test_a_pinned_split_with_a_huge_id_through_the_cli(self, tmp_path):
        raw = tmp_path / "raw" / "llara" / "steam"
        raw.mkdir(parents=True)
        (raw / "id2name.txt").write_text("".join(f"{i}::Game {i}\n" for i in range(3581)))
        df = pd.DataFrame({"seq": [[1, 2, 3, 3581], [4, 5, 6, 7]], "len_seq": [3, 4], "next": [4, 8]})
        df["next"] = df["next"].astype(object)
        df.at[1, "next"] = 10 ** 6000
        df.columns = pd.Index(list(df.columns), dtype=object)
        for name in ("train_data.df", "Val_data.df", "Test_data.df"):
            df.to_pickle(raw / name)
        pins = {f"llara/steam/{n}": sha256_file(raw / n) for n in ("train_data.df", "Val_data.df", "Test_data.df", "id2name.txt")}
        proc = _llara(["preprocess", "steam", "--raw", tmp_path / "raw", "--out", tmp_path / "out",
                       "--extra-sha256", json.dumps(pins)])
        _one_line_error(proc, "train_data.df, row 1, column 'next'", "6001 digits")

    def test_an_id2name_line_with_a_6000_digit_id(self, tmp_path):
        from llara.data.parse import llara_id2name

        p = tmp_path / "id2name.txt"
        p.write_text("0::A\n" + "1" * 6000 + "::B\n")
        with pytest.raises(MalformedInputError, match=r"id2name\.txt, line 2: expected an item id .* found a 6000-digit number"):
            llara_id2name(p)

    def test_short_repr_never_fails(self):
        assert short_repr(10 ** 6000) == "<an integer of about 6001 digits>"
        assert "6001 digits" in short_repr([1, (2, 10 ** 6000)])
        assert len(short_repr("x" * 10 ** 6)) < 200


class TestOutputPaths:
    @pytest.mark.parametrize("kind", ["dangling link", "file"])
    def test_out_below_something_that_is_not_a_folder_fails_before_any_work(self, tmp_path, kind):
        out = tmp_path / "out"
        if kind == "dangling link":
            out.symlink_to(tmp_path / "nowhere")
        else:
            out.write_text("mine")
        # the raw folder does not even exist: the output path is checked first
        proc = _llara(["preprocess", "movielens", "--source", "raw", "--raw", tmp_path / "no-raw", "--out", out])
        line = _one_line_error(proc, str(out))
        assert ("a symbolic link to" in line and "which does not exist" in line) if kind == "dangling link" else \
            "not a folder" in line
        assert "no-raw" not in line
        assert not (tmp_path / "nowhere").exists()
        assert out.is_symlink() or out.read_text() == "mine"
