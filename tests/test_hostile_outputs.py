"""Hostile-input suite, class A (nothing lost): a user's file inside a folder output of the workflow.

Snakemake deletes a ``directory()`` output whole before it reruns its job, before any project code runs.
The Snakefile refuses to run at all while such a folder holds a file the project did not write
(``llara.owned_folders``), naming it; the file stays where it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import SHARED, run_snakemake
from llara.io import OutputInTheWayError, write_json
from llara.owned_folders import check_folder_outputs, matching_folders

needs_mirror = pytest.mark.skipif(not (SHARED / "datasets" / "llara" / "lastfm").is_dir(),
                                  reason="../shared/datasets absent")
SLUG_PATTERN = "resources/llm/{name,[A-Za-z0-9][A-Za-z0-9._-]{0,63}}"


def test_matching_folders_follow_the_wildcard_constraints(tmp_path):
    """Only existing folders whose every component matches (a constraint with braces included); files,
    links and names outside the constraint are not outputs and are never read."""
    for d in ("resources/llm/model-a", "resources/llm/_downloads", "resources/llm/.hidden"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "resources/llm/file.txt").write_text("x")
    os.symlink(tmp_path / "resources/llm/model-a", tmp_path / "resources/llm/linked")
    found = [p.relative_to(tmp_path).as_posix() for p in matching_folders(SLUG_PATTERN, tmp_path)]
    assert found == ["resources/llm/model-a"]
    nested = "results/{dataset,lastfm|movielens}/{seqrec,sasrec}/llara/adapter"
    (tmp_path / "results/lastfm/sasrec/llara/adapter").mkdir(parents=True)
    (tmp_path / "results/steam/sasrec/llara/adapter").mkdir(parents=True)
    assert [p.relative_to(tmp_path).as_posix() for p in matching_folders(nested, tmp_path)] == [
        "results/lastfm/sasrec/llara/adapter"]


def test_a_file_the_marker_does_not_list_stops_the_check(tmp_path):
    """Files listed in the folder's marker (or a marker above) pass, Snakemake's stamp passes; an extra file
    anywhere below, or a folder without a marker, is refused naming the file and the rule."""
    folder = tmp_path / "resources/llm/model-a"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "w.bin").write_bytes(b"1")
    (folder / ".snakemake_timestamp").write_text("")
    with pytest.raises(OutputInTheWayError, match=r"model-a/config.json: llara did not write it.*rule base_llm"):
        check_folder_outputs([("base_llm", SLUG_PATTERN)], tmp_path)
    write_json({"written_by": "llara", "files": {"config.json": "base_llm", "sub/w.bin": "base_llm"}},
               folder / ".llara-output.json")
    assert check_folder_outputs([("base_llm", SLUG_PATTERN)], tmp_path) == [folder]
    (folder / "sub" / "notes.txt").write_text("mine")
    with pytest.raises(OutputInTheWayError, match=r"resources/llm/model-a/sub/notes.txt: llara did not write it"):
        check_folder_outputs([("base_llm", SLUG_PATTERN)], tmp_path)
    assert (folder / "sub" / "notes.txt").read_text() == "mine"


@needs_mirror
def test_snakemake_refuses_to_rerun_a_download_folder_holding_a_user_file(tmp_path):
    """The issue's case: a notes.txt in resources/raw/lastfm/llara/, then a rerun of the download
    (``--forcerun``; a new pin does the same): refused before anything runs, dry runs included; the file and
    the download are kept. Once the file is moved out the rerun works."""
    env = {"LLARA_MIRROR": str(SHARED / "datasets")}
    folder = tmp_path / "resources/raw/lastfm/llara"
    run_snakemake(tmp_path, ["resources/raw/lastfm/llara"], env=env)
    before = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    assert "lastfm/id2name.txt" in "\n".join(before)
    (folder / "notes.txt").write_text("my notes")
    # the target goes before --forcerun, which takes several values (it would read the target as a rule)
    for extra in (["--forcerun", "download"], ["-n", "--forcerun", "download"]):
        proc = run_snakemake(tmp_path, [], "resources/raw/lastfm/llara", *extra, env=env, check=False)
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "resources/raw/lastfm/llara/notes.txt: llara did not write it" in out and "rule download" in out
        assert (folder / "notes.txt").read_text() == "my notes"
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == sorted(before + ["notes.txt"])
    (folder / "notes.txt").rename(tmp_path / "notes.txt")
    proc = run_snakemake(tmp_path, [], "resources/raw/lastfm/llara", "--forcerun", "download", env=env)
    assert "rule download" in proc.stderr and "1 of 1 steps (100%) done" in proc.stderr
    assert (folder / "llara" / "lastfm" / "id2name.txt").is_file() and not (tmp_path / "results").exists()
    assert Path(tmp_path / "notes.txt").read_text() == "my notes"
