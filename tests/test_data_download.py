"""Download verification, safe pickle loading, and real Snakemake runs of the data stage."""

import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from conftest import SHARED, run_snakemake

from llara.data.download import ChecksumError, download_dataset
from llara.data.preprocess import DataConfig, build_items_and_rows
from llara.data.safe_pickle import UnsafePickleError, read_frame
from llara.io import sha256_file

needs_mirror = pytest.mark.skipif(not (SHARED / "datasets" / "ml-100k.zip").is_file(), reason="../shared/datasets absent")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "train_data.df"
    p.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(UnsafePickleError, match="refuses to load global"):
        read_frame(p, sha256_file(p))  # even a file whose sha256 the user pinned
    assert not marker.exists()
    with pytest.raises(ValueError, match="sha256 mismatch"):
        read_frame(p, "0" * 64)
    assert not marker.exists()


def test_llara_steam_split_with_user_pin(tmp_path):
    """Steam's released train split is not pinned in the repository: the user pins it, then it loads."""
    raw = tmp_path / "raw" / "llara" / "steam"
    raw.mkdir(parents=True)
    (raw / "id2name.txt").write_text("".join(f"{i}::Game {i}\n" for i in range(3581)))
    df = pd.DataFrame({"seq": [[1, 2, 3, 3581, 3581], [4, 5, 3581, 3581, 3581], [7, 8, 9, 10, 11]],
                       "len_seq": [3, 2, 5], "next": [4, 6, 12]})
    df.columns = pd.Index(list(df.columns), dtype=object)  # the released format (pandas 3 would use Arrow strings)
    for name in ("train_data.df", "Val_data.df", "Test_data.df"):
        df.to_pickle(raw / name)
    # the hand-made id2name.txt too: preprocess verifies every pinned file again (issue #29)
    pins = {f"llara/steam/{n}": sha256_file(raw / n) for n in ("train_data.df", "Val_data.df", "Test_data.df", "id2name.txt")}
    with pytest.raises(ValueError, match="no sha256 pinned"):
        build_items_and_rows("steam", "llara", tmp_path / "raw", DataConfig(), 0)
    items, rows = build_items_and_rows("steam", "llara", tmp_path / "raw", DataConfig(), 0, extra_sha256=pins)
    # the test pickles differ from the repository's pins for Val/Test, so those were overridden too
    assert items.height == 3581
    assert rows["train"][1] == [[1, 2, 3], [7, 8, 9, 10, 11]]  # len 2 row dropped, padding removed
    assert rows["train"][2] == [4, 12]


@needs_mirror
def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(SHARED / "datasets" / "llara" / "lastfm", mirror / "llara" / "lastfm")
    (mirror / "llara" / "lastfm" / "Val_data.df").chmod(0o644)
    val = mirror / "llara" / "lastfm" / "Val_data.df"
    data = bytearray(val.read_bytes())
    data[-20] ^= 1  # same size, other content
    val.write_bytes(bytes(data))
    out = tmp_path / "resources" / "raw" / "lastfm" / "llara"
    with pytest.raises(ChecksumError, match=r"Val_data\.df: sha256 mismatch: expected 92a1ddb6.*, found [0-9a-f]{64}"):
        download_dataset("lastfm", "llara", out, mirror=mirror)
    assert not out.exists() and not any(out.parent.iterdir())
    with open(val, "ab") as f:  # longer than its pinned size: the copy stops there
        f.write(b"tampered")
    with pytest.raises(ChecksumError, match=r"Val_data\.df: larger than 6690 bytes"):
        download_dataset("lastfm", "llara", out, mirror=mirror)
    assert not out.exists() and not any(out.parent.iterdir())


@needs_mirror
def test_download_truncated_zip(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = (SHARED / "datasets" / "ml-100k.zip").read_bytes()
    (mirror / "ml-100k.zip").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(ChecksumError, match=r"ml-100k\.zip: not a valid zip archive \(truncated or corrupt\)"):
        download_dataset("movielens", "raw", out, mirror=mirror)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match=r"ml-100k\.zip is missing"):
        download_dataset("movielens", "raw", out, mirror=tmp_path / "empty")


@needs_mirror
def test_snakemake_data_stage_real_mirror(tmp_path):
    """The real DAG of the data stage against ../shared/datasets: the counts of issue 2."""
    run_snakemake(tmp_path, ["results/lastfm/data/test.parquet", "results/movielens/data/test.parquet"],
                  env={"LLARA_MIRROR": str(SHARED / "datasets")})
    counts = {(d, s): pl.read_parquet(tmp_path / f"results/{d}/data/{s}.parquet").height
              for d in ("lastfm", "movielens") for s in ("items", "train", "valid", "test")}
    assert counts[("lastfm", "items")] == 4606
    assert counts[("lastfm", "train")] == 47872
    assert counts[("lastfm", "valid")] == counts[("lastfm", "test")] == 122
    assert counts[("movielens", "items")] == 1682
    assert (counts[("movielens", "valid")], counts[("movielens", "test")]) == (94, 95)
    test = pl.read_parquet(tmp_path / "results/lastfm/data/test.parquet")
    assert test["candidates"].list.len().unique().to_list() == [20]
    assert test["candidate_sets"].list.len().unique().to_list() == [5]
    assert (tmp_path / "logs/preprocess/lastfm.log").read_text().count("47872") == 1


@needs_mirror
def test_snakemake_corrupt_mirror(tmp_path):
    """A corrupt member in the mirror: the rule fails naming file and hashes; nothing is left behind."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(SHARED / "datasets" / "ml-100k.zip") as src, zipfile.ZipFile(mirror / "ml-100k.zip", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data.replace(b"Toy Story", b"Toy Storm") if info.filename.endswith("u.item") else data)
    work = tmp_path / "work"
    proc = run_snakemake(work, ["results/movielens/data/test.parquet"], env={"LLARA_MIRROR": str(mirror)}, check=False)
    assert proc.returncode != 0
    log = (work / "logs/download/movielens_raw.log").read_text()
    assert "member ml-100k/u.item: sha256 mismatch: expected 553841eb" in log
    assert not (work / "resources/raw/movielens/raw").exists()
    assert not list((work / "resources/raw/movielens").glob("*"))
    assert not (work / "results").exists()


# ------------------------------------------------------------------------- streamed, bounded, own pins
def _zip_with(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_archive_members_are_hashed_in_bounded_memory(tmp_path):
    """A 64 MiB member (a few KB compressed) is hashed in chunks: peak memory stays far below its size."""
    import hashlib
    import tracemalloc

    from llara.data.download import verify
    from llara.data.sources import Member, RemoteFile

    big = bytes(64 << 20)
    zp = _zip_with(tmp_path / "a.zip", {"big.dat": big})
    f = RemoteFile("a.zip", "https://example.invalid/a.zip", members={"big.dat": Member(hashlib.sha256(big).hexdigest(), len(big))})
    del big
    tracemalloc.start()
    try:
        verify(zp, f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak >> 20} MiB while hashing a 64 MiB member"


def test_member_sizes_are_bounded_by_their_pins(tmp_path):
    from llara.data.download import verify
    from llara.data.sources import Member, RemoteFile

    import hashlib

    data = b"x" * 1000
    zp = _zip_with(tmp_path / "a.zip", {"m.dat": data})
    good = hashlib.sha256(data).hexdigest()  # the sha256 is right; only the size lies
    verify(zp, RemoteFile("a.zip", "u", members={"m.dat": Member(good, 1000)}))
    with pytest.raises(ChecksumError, match=r"member m\.dat is 1000 bytes, its pin says 999"):
        verify(zp, RemoteFile("a.zip", "u", members={"m.dat": Member(good, 999)}))
    with pytest.raises(ChecksumError, match=r"lacks member other\.dat"):
        verify(zp, RemoteFile("a.zip", "u", members={"other.dat": Member(good, 1000)}))


def test_each_dataset_gets_only_its_own_pins():
    from llara.data.sources import pins_for

    extra = {"llara/steam/train_data.df": "a" * 64, "llara/lastfm/train_data.df": "b" * 64,
             "ml-100k.zip/ml-100k/u.data": "c" * 64, "hetrec2011-lastfm-2k.zip": "d" * 64}
    assert pins_for("lastfm", "llara", extra) == {"llara/lastfm/train_data.df": "b" * 64}
    assert pins_for("steam", "llara", extra) == {"llara/steam/train_data.df": "a" * 64}
    assert pins_for("movielens", "llara", extra) == {"ml-100k.zip/ml-100k/u.data": "c" * 64}
    assert pins_for("movielens", "raw", extra) == {"ml-100k.zip/ml-100k/u.data": "c" * 64}
    assert pins_for("lastfm", "raw", extra) == {"hetrec2011-lastfm-2k.zip": "d" * 64}


@needs_mirror
def test_pinning_one_dataset_reruns_nothing_of_another(tmp_path):
    """A Steam pin is not a param of LastFM's jobs (it reran LastFM's whole pipeline before)."""
    env = {"LLARA_MIRROR": str(SHARED / "datasets")}
    run_snakemake(tmp_path, ["resources/raw/lastfm/llara"], env=env)
    steam = 'download={"extra_sha256": {"llara/steam/train_data.df": "%s"}}' % ("0" * 64)
    proc = run_snakemake(tmp_path, [], "-n", "resources/raw/lastfm/llara", "--config", steam, env=env)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    pin = sha256_file(SHARED / "datasets" / "llara" / "lastfm" / "train_data.df")
    lastfm = 'download={"extra_sha256": {"llara/lastfm/train_data.df": "%s"}}' % pin
    proc = run_snakemake(tmp_path, [], "-n", "resources/raw/lastfm/llara", "--config", lastfm, env=env)
    out = proc.stdout + proc.stderr
    assert "Nothing to be done" not in out and "download" in out  # its own pin does rerun it
