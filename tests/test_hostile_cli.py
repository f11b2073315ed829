"""Part of the hostile-input suite, class D (issue #29): an expected error ends in one line, not a traceback.

Every ``llara`` subcommand turns an expected error (a missing or malformed file, a checksum, a bad setting)
into one line on stderr naming the file or key, exit status 2; ``--debug`` adds the traceback; a bug keeps
its traceback. One test per defect found, plus a parametrised check of every subcommand on a missing input
file, and what Snakemake really does after a kill (docs/guarantees.md, "How an interrupted run recovers").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, SHARED, run_snakemake

from llara.cli import _FORWARD
from llara.cli import main as cli_main

needs_lastfm = pytest.mark.skipif(not (SHARED / "datasets" / "llara" / "lastfm" / "train_data.df").is_file(),
                                  reason="../shared/datasets absent")


def _llara(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``llara ARGV`` in a fresh interpreter (the console script's entry point)."""
    return subprocess.run([sys.executable, "-m", "llara.cli", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def _one_line(proc: subprocess.CompletedProcess[str], stage: str) -> str:
    """The single stderr line of a failed stage (exit status 2, no traceback)."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-3000:]
    assert err.startswith(f"llara {stage}: error: "), err
    return err


def _inproc(argv: list[str], capsys) -> tuple[int, str]:
    """``llara ARGV`` in this process: (exit status, stderr)."""
    try:
        rc = cli_main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    return rc, capsys.readouterr().err.strip()


# ------------------------------------------------------------------ preprocess: a pickle failing its pin
@needs_lastfm
def test_preprocess_sha256_mismatch_is_one_line(tmp_path):
    """A released pickle whose sha256 differs from its pin: the message came under a full traceback, exit 1."""
    raw = tmp_path / "raw" / "llara" / "lastfm"
    shutil.copytree(SHARED / "datasets" / "llara" / "lastfm", raw)
    bad = raw / "train_data.df"
    bad.chmod(0o644)
    with bad.open("ab") as f:
        f.write(b"x")
    proc = _llara("preprocess", "lastfm", "--raw", tmp_path / "raw", "--out", tmp_path / "out")
    err = _one_line(proc, "preprocess")
    assert str(bad) in err and "sha256 mismatch" in err and "expected" in err and "found" in err
    assert not (tmp_path / "out").exists()
    debug = _llara("--debug", "preprocess", "lastfm", "--raw", tmp_path / "raw", "--out", tmp_path / "out")
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == err


def test_preprocess_unpinned_pickle_is_one_line(tmp_path, capsys):
    """A pickle the user added with no pin (Steam's train split is not pinned): refused in one line."""
    import pandas as pd

    raw = tmp_path / "raw" / "llara" / "steam"
    raw.mkdir(parents=True)
    (raw / "id2name.txt").write_text("".join(f"{i}::Game {i}\n" for i in range(3581)))
    pd.DataFrame({"seq": [[1, 2, 3]], "len_seq": [3], "next": [4]}).to_pickle(raw / "train_data.df")
    rc, err = _inproc(["preprocess", "steam", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err[-2000:]
    assert "train_data.df" in err and "no sha256" in err


# ------------------------------------------------------------------ report: the entries file
def test_report_entries_not_json_is_one_line_naming_the_file(tmp_path):
    """A non-JSON entries file: a JSONDecodeError traceback naming no file."""
    entries = tmp_path / "entries.json"
    entries.write_text("[{'dataset': 'lastfm'}]")  # Python, not JSON
    err = _one_line(_llara("report", tmp_path / "out", entries), "report")
    assert f"{entries}: not valid JSON at line 1, column 3" in err and "expected a JSON list of report entries" in err
    assert not (tmp_path / "out").exists()


ENTRY = {"dataset": "lastfm", "kind": "seqrec", "label": "SASRec", "metrics": "m.json"}


@pytest.mark.parametrize("content,message", [
    ({"entries": [ENTRY]}, "expected a JSON list of report entries (objects with dataset, kind, label, metrics; "
                           "llara.report.collect.Entry), found an object"),
    ([], "the list is empty; expected at least one report entry"),
    (["SASRec"], "entry 0: expected an object, found a string"),
    ([{**ENTRY, "lable": "x"}], "entry 0 ('SASRec'): unknown key(s) ['lable']; expected keys among"),  # TypeError
    ([{k: v for k, v in ENTRY.items() if k != "metrics"}], "entry 0 ('SASRec'): missing key(s) ['metrics']"),
    ([ENTRY, {**ENTRY, "kind": "bert"}], "entry 1 ('SASRec'), key 'kind': expected one of ['seqrec', "),
    ([{**ENTRY, "metrics": 3}], "entry 0 ('SASRec'), key 'metrics': expected a string, found a number 3"),
    ([{**ENTRY, "seqrec": ["sasrec"]}], "key 'seqrec': expected a string or null, found a list"),
    ([{**ENTRY, "runs": []}], "key 'runs': expected a non-empty list of objects (one per training seed) or null"),
    ([{**ENTRY, "runs": [{"seed": "42"}]}], "runs[0], key 'seed': expected an integer or null, found a string '42'"),
    ([{**ENTRY, "runs": [{"seed": 1, "predictions": "p", "log": "x"}]}], "runs[0]: unknown key(s) ['log']"),
])
def test_report_entries_of_the_wrong_shape_are_one_line(content, message, tmp_path, capsys):
    """Entries of the wrong shape: a TypeError/ValueError traceback from Entry(**e) or build_report."""
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps(content))
    rc, err = _inproc(["report", str(tmp_path / "out"), str(entries)], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err[-2000:]
    assert err.startswith(f"llara report: error: {entries}: ") and message in err, err


def test_report_reads_a_well_formed_entries_file(tmp_path):
    from llara.report.collect import Entry, read_entries

    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps([ENTRY, {**ENTRY, "kind": "llara", "label": "LLaRA", "seqrec": None,
                                           "runs": [{"seed": 42, "predictions": "p.parquet", "metrics": "m.json"}]}]))
    got = read_entries(entries)
    assert got == [Entry(**ENTRY), Entry("lastfm", "llara", "LLaRA", "m.json",
                                         runs=[{"seed": 42, "predictions": "p.parquet", "metrics": "m.json"}])]
    assert got[1].run_list()[0].seed == 42


# ------------------------------------------------------------------ --log: no folders created anywhere
def test_log_in_a_missing_folder_is_refused_and_nothing_created(tmp_path, capsys):
    """`llara --log /some/new/dir/f` created the folders; now one line names the path, exit 2, nothing made."""
    log = tmp_path / "new" / "dir" / "f.log"
    err = _one_line(_llara("--log", log, "download", "lastfm", "--out", tmp_path / "o", "--mirror", tmp_path / "m"),
                    "download")
    assert f"{log}: the log file's folder {log.parent} must exist, found nothing there" in err
    assert sorted(os.listdir(tmp_path)) == []
    for argv in (["--log", str(log), "compare", "a.parquet", "b.parquet"],  # forwarded as the stage's --log
                 ["report", str(tmp_path / "out"), "e.json", "--log", str(log)]):
        rc, err = _inproc(argv, capsys)
        assert rc == 2 and len(err.splitlines()) == 1 and str(log) in err, err
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("stage", list(_FORWARD))
def test_global_log_reaches_every_forwarded_stage(stage, tmp_path, capsys):
    """`llara --log F compare ...` was a usage error (compare had no --log); every stage now takes it and
    records its one-line error there."""
    log = tmp_path / f"{stage}.log"
    rc, err = _inproc(["--log", str(log), *map(str, _missing_input_argv(stage, tmp_path / "missing", tmp_path / "out"))],
                      capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"llara {stage}: error: "), err
    assert err in log.read_text()


def test_expected_error_is_recorded_in_the_log_file(tmp_path, capsys):
    """With --log in an existing folder, the one-line error is in the log too (the rule's log names the failure)."""
    log = tmp_path / "report.log"
    rc, err = _inproc(["--log", str(log), "report", str(tmp_path / "out"), str(tmp_path / "none.json")], capsys)
    assert rc == 2 and len(err.splitlines()) == 1
    assert err in log.read_text() and "Traceback" not in log.read_text()


# ------------------------------------------------------------------ tune: --config-json that is not JSON
def test_tune_config_json_not_json_is_an_argument_error(tmp_path, capsys):
    """`llara tune --config-json '{nope'`: a JSONDecodeError traceback; now argparse's one line, exit 2."""
    rc, err = _inproc(["tune", "--config-json", "{nope", "--base", "b", "--items", "i", "--train", "t",
                       "--embeddings", "e", "--out-dir", str(tmp_path / "o"), "--ckpt-dir", str(tmp_path / "c")], capsys)
    assert rc == 2 and "Traceback" not in err and "argument --config-json: not valid JSON" in err, err


# ------------------------------------------------------------------ aggregate: a per-seed metrics.json not JSON
def test_aggregate_metrics_not_json_is_one_line(tmp_path):
    """A corrupt per-seed metrics.json: load_metrics' ValueError (naming the file) came under a traceback."""
    metrics = tmp_path / "metrics.json"
    metrics.write_text("{nope")
    proc = _llara("aggregate", tmp_path / "agg.json", "--run", "42", tmp_path / "predictions.parquet", metrics)
    assert f"{metrics}: not valid JSON" in _one_line(proc, "aggregate")
    assert not (tmp_path / "agg.json").exists()


# ------------------------------------------------------------------ every subcommand: a missing input file
def _missing_input_argv(stage: str, m: Path, out: Path) -> list[str]:
    """Arguments for ``stage`` whose first input (under the missing folder ``m``) does not exist."""
    return {
        "download": ["download", "lastfm", "--out", out, "--mirror", m],
        "preprocess": ["preprocess", "lastfm", "--raw", m, "--out", out],
        "seqrec": ["seqrec", "sasrec", m, out],
        "base-llm": ["base-llm", "--config-json", json.dumps({"source": "local", "path": str(m)}), "--out", out],
        "tune": ["tune", "--config-json", "{}", "--base", m, "--items", m / "items.parquet", "--train",
                 m / "train.parquet", "--embeddings", m / "e.parquet", "--out-dir", out, "--ckpt-dir", out.parent / "c"],
        "evaluate": ["evaluate", m, m, out, "--dataset", "lastfm"],
        "aggregate": ["aggregate", out / "metrics.json", "--run", "42", m / "predictions.parquet", m / "metrics.json"],
        "reference": ["reference", m, out, "--kind", "popularity"],
        "compare": ["compare", m / "a.parquet", m / "b.parquet"],
        "report": ["report", out, m / "entries.json"],
    }[stage]


STAGES = ["download", "preprocess", *_FORWARD]


def test_every_subcommand_is_checked():
    assert sorted(STAGES) == sorted({"download", "preprocess", "seqrec", "base-llm", "tune", "evaluate", "aggregate",
                                     "reference", "compare", "report"})


@pytest.mark.parametrize("stage", STAGES)
def test_missing_input_file_is_one_line_exit_2(stage, tmp_path):
    """Each subcommand on a missing input: one line naming it, exit 2; --debug (given globally for half of the
    stages, to the stage for the others) prints the traceback above the same line."""
    m, out = tmp_path / "missing", tmp_path / "out"
    argv = _missing_input_argv(stage, m, out)
    err = _one_line(_llara(*argv), stage)
    assert str(m) in err, err
    assert not out.exists()
    debug_argv = ["--debug", *argv] if STAGES.index(stage) % 2 else [*argv, "--debug"]
    debug = _llara(*debug_argv)
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr, debug.stderr[-2000:]
    assert debug.stderr.strip().splitlines()[-1] == err


def test_a_stage_module_run_directly_is_one_line(tmp_path):
    """``python -m llara.evaluate.compare`` (as a workflow script calls a stage's main): the same one line, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "llara.evaluate.compare", str(tmp_path / "a.parquet"),
                           str(tmp_path / "b.parquet")], capture_output=True, text=True, timeout=300)
    assert f"{tmp_path / 'a.parquet'}: no such predictions file" in _one_line(proc, "compare")


# ------------------------------------------------------------------ the wrapper: expected errors vs bugs
def test_a_bug_keeps_its_traceback_and_debug_shows_an_expected_ones(capsys):
    from llara.cli_errors import StageFailed, run_stage
    from llara.settings import ConfigError

    def bug(argv):
        raise KeyError("internal")

    with pytest.raises(KeyError):
        run_stage("x", bug, [])

    def bad_setting(argv):
        raise ConfigError("seed", "expected an integer, found 'a'")

    with pytest.raises(StageFailed) as e:
        run_stage("x", bad_setting, [])
    assert e.value.code == 2 and capsys.readouterr().err == "llara x: error: config key seed: expected an integer, found 'a'\n"
    with pytest.raises(StageFailed):
        run_stage("x", bad_setting, ["--debug"])
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("llara x: error: config key seed: expected an integer, found 'a'\n")
    with pytest.raises(StageFailed):
        run_stage("x", bad_setting, ["--", "--debug"])  # a value after `--`, not the flag
    assert not capsys.readouterr().err.startswith("Traceback")


def test_value_error_is_expected_only_inside_input_errors(capsys):
    """A plain ValueError is a bug (traceback) unless raised in a call the stage marks as checking input."""
    from llara.cli_errors import InputError, StageFailed, input_errors, run_stage

    def unmarked(argv):
        raise ValueError("x.parquet: 3 rows, expected 4")

    def marked(argv):
        with input_errors():
            unmarked(argv)

    with pytest.raises(ValueError) as e:
        run_stage("x", unmarked, [])
    assert not isinstance(e.value, InputError)
    with pytest.raises(StageFailed):
        run_stage("x", marked, [])
    assert capsys.readouterr().err == "llara x: error: x.parquet: 3 rows, expected 4\n"
    with pytest.raises(KeyError), input_errors():  # other types pass through untouched
        raise KeyError("bug")


# ------------------------------------------------------------------ Snakemake: a failed run's note
def test_failed_run_names_the_job_log_and_the_rerun_flags(tmp_path):
    """After a failed job the summary says which log to read and which flags an interrupted run needs."""
    (tmp_path / "mirror").mkdir()
    proc = run_snakemake(tmp_path / "wd", ["resources/raw/movielens/raw"], env={"LLARA_MIRROR": str(tmp_path / "mirror")},
                         check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    job_log = tmp_path / "wd" / "logs" / "download" / "movielens_raw.log"
    assert f"Read the log of each failed job: {job_log}" in out, out[-3000:]
    assert "ml-100k.zip is missing" in job_log.read_text()
    assert re.search(r"Snakemake's log of the whole run: \S+/\.snakemake/log/\S+\.snakemake\.log", out)
    assert "--rerun-incomplete" in out and "--unlock" in out


def test_failed_run_note_without_a_snakemake_log():
    from llara.runlog import failed_run_note

    note = failed_run_note([])
    assert "log of each failed job" not in note and "--rerun-incomplete" in note and "--unlock" in note


# ------------------------------------------------------------------ Snakemake: after a kill
KILLED_DAG = """
rule all:
    input: "b.txt"

rule a:
    output: "a.txt"
    shell: "echo partial > {output}; touch started; sleep 60; echo done >> {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "cp {input} {output}"
"""


def _snakemake(wd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args], cwd=wd, capture_output=True,
                          text=True, timeout=300)


def test_after_a_kill_snakemake_needs_unlock_and_rerun_incomplete(tmp_path):
    """What docs/guarantees.md says of a killed run: Snakemake does not rerun by itself. A kill -9 of Snakemake
    and its job (a lost machine) while the job had written part of an output leaves the lock and the
    incomplete mark: a plain rerun refuses (incomplete files), --rerun-incomplete refuses (the lock), --unlock
    only unlocks, then --rerun-incomplete reruns the job."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent(KILLED_DAG))
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1"], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the job did not start"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its job, as a power loss would
        proc.wait()
    assert (tmp_path / "a.txt").read_text() == "partial\n"

    plain = _snakemake(tmp_path)
    assert plain.returncode != 0 and "IncompleteFilesException" in plain.stderr
    assert "rerun your command with the --rerun-incomplete flag" in plain.stderr
    locked = _snakemake(tmp_path, "--rerun-incomplete")
    assert locked.returncode != 0 and "LockException" in locked.stderr
    assert "Directory cannot be locked" in locked.stderr and "removed with the --unlock argument" in locked.stderr
    unlock = _snakemake(tmp_path, "--unlock")
    assert unlock.returncode == 0 and "Unlocked working directory" in unlock.stdout + unlock.stderr
    assert (tmp_path / "a.txt").read_text() == "partial\n"  # --unlock runs nothing
    (tmp_path / "Snakefile").write_text(textwrap.dedent(KILLED_DAG).replace("sleep 60; ", ""))
    rerun = _snakemake(tmp_path, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (tmp_path / "b.txt").read_text() == "partial\ndone\n"


def test_guarantees_doc_says_what_a_rerun_needs():
    """docs/guarantees.md claimed that Snakemake reruns a killed job by itself, and that input errors exit 1."""
    doc = (REPO / "docs" / "guarantees.md").read_text()
    section = doc.split("## How an interrupted run recovers", 1)[1].split("\n## ", 1)[0]
    assert "--unlock" in section and "--rerun-incomplete" in section and "LockException" in section
    assert "Snakemake marks the job incomplete and reruns it" not in section
    assert "1 for bad input data" not in doc and "exit status 2" in doc
