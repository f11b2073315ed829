"""Doc-tests: every command of README.md, docs/*.md and config/README.md is exercised (tests/doccommands.py
says how: Snakemake dry runs, argument parsing of the CLI and the scripts, an explicit list of what is
skipped and why), so a command that breaks, or a new one that is wrong, fails here naming its file and
line. Also `snakemake --lint` on the workflow (issue #28)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import doccommands as dc

REPO = dc.REPO
FIXTURE = Path(__file__).parent / "fixtures" / "broken_doc.md"


def test_extraction_joins_lines_splits_chains_and_skips_prose(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Intro `results/x.parquet` and `benchmarks/learnability.py` (names, not commands), and\n"
        "`snakemake --cores 2 --config\n  seed=7 -- results/a.json` across a line break.\n"
        "\n"
        "```bash\n"
        "# a comment line\n"
        "python3 -m venv .venv && .venv/bin/pip install -e .   # trailing comment\n"
        ".venv/bin/snakemake --cores 2 \\\n"
        "    results/lastfm/sasrec/metrics.json\n"
        ".venv/bin/python benchmarks/x.py --tune '{\"lr\": 1,\n"
        "  \"min_lr\": 2}' <target>\n"
        "```\n"
        "\n"
        "```\n"
        "Snakefile    a tree, not commands\n"
        "```\n"
        "\n"
        "```console\n"
        "$ llara --help\n"
        "usage: llara ...\n"
        "```\n"
        "Usage: `llara reference DATA OUT --kind popularity|last_item [--embeddings FILE]`.\n")
    got = [(c.line, c.argv, c.inline) for c in dc.extract(doc, tmp_path)]
    assert got == [
        (2, ("snakemake", "--cores", "2", "--config", "seed=7", "--", "results/a.json"), True),
        (7, ("python3", "-m", "venv", ".venv"), False),
        (7, (".venv/bin/pip", "install", "-e", "."), False),
        (8, (".venv/bin/snakemake", "--cores", "2", "results/lastfm/sasrec/metrics.json"), False),
        (10, (".venv/bin/python", "benchmarks/x.py", "--tune", '{"lr": 1,\n"min_lr": 2}', dc.DEFAULT_TARGET), False),
        (19, ("llara", "--help"), False),
        (22, ("llara", "reference", "DATA", "OUT", "--kind", "popularity", "--embeddings", "FILE"), True),
    ]


def test_every_documented_command_has_a_kind():
    """A command the doc-test does not know fails (it is never silently ignored); every skip has a reason."""
    cmds = dc.all_commands()
    by_file = Counter(c.file for c in cmds)
    assert set(by_file) >= {"README.md", "config/README.md", "docs/clusters.md", "docs/gpu.md",
                            "docs/own-data.md", "docs/learnability.md", "config/examples/own-data.yaml"}, by_file
    plans = [(c, dc.plan(c)) for c in cmds]
    unknown = [f"{c}: {p.reason}" for c, p in plans if p.action == "unknown"]
    assert not unknown, "\n".join(unknown)
    assert all(p.reason for _, p in plans if p.action in ("skip", "mention"))
    kinds = Counter(p.action for _, p in plans)
    assert kinds["snakemake"] >= 15 and kinds["python"] >= 15, kinds
    unused = set(dc.MENTIONS) - {c.text for c in cmds if c.inline}
    assert not unused, f"MENTIONS no document has any more: {sorted(unused)}"
    unused = set(dc.REFUSED) - {c.text for c in cmds}
    assert not unused, f"REFUSED no document has any more: {sorted(unused)}"


def test_documented_commands_work(tmp_path):
    """Every documented Snakemake command dry-runs as written, every CLI/script command parses (~1-2 min)."""
    failures, table = dc.check(dc.all_commands(), dc.make_workdir(tmp_path / "work"))
    for c, p, done in table:  # shown with -rP / -s
        print(f"{c.where}: {p.kind}: {done}")
    assert not failures, "documented commands that fail as written:\n" + "\n".join(failures)


def test_broken_command_in_a_document_is_reported(tmp_path):
    """The fixture's broken commands are each reported with file and line; its good ones are not."""
    cmds = dc.extract(FIXTURE)
    failures, _ = dc.check(cmds, dc.make_workdir(tmp_path / "work"))
    text = "\n".join(failures)
    where = "tests/fixtures/broken_doc.md"
    expected = {7: "--configfile reads ['results/lastfm/sasrec/metrics.json'] as config files",
                8: "the dry run fails",
                9: "the arguments do not parse: ",
                10: "frobnicate: not a command kind",
                15: "--report without a target"}
    for line, msg in expected.items():
        assert any(f.startswith(f"{where}:{line}: ") and msg in f for f in failures), (line, text)
    assert "--no-such-option" in text
    assert len(failures) == len(expected), text


def test_a_script_called_directly_must_be_executable_with_a_shebang(tmp_path):
    script = tmp_path / "x.py"
    script.write_text("print(1)\n")
    assert "not executable" in dc.script_problem(script)
    script.chmod(0o755)
    assert "#!" in dc.script_problem(script)
    script.write_text("#!/usr/bin/env python3\nprint(1)\n")
    assert dc.script_problem(script) is None
    for name in ("learnability.py", "injection_probe.py", "gpu/check.py"):  # the documents call them so
        assert dc.script_problem(REPO / "benchmarks" / name) is None


def _lint(snakefile: Path, workdir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE_")}
    return subprocess.run([sys.executable, "-m", "snakemake", "--lint", "-s", str(snakefile), "-d", str(workdir)],
                          capture_output=True, text=True, env=env, cwd=workdir)


def test_snakemake_lint_is_clean(tmp_path):
    """`snakemake --lint` has nothing to say about the workflow (it exits 1 when it has)."""
    proc = _lint(REPO / "Snakefile", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_lint_check_fails_on_a_lint(tmp_path):
    """The check above can fail: an absolute output path and no log are lints."""
    sf = tmp_path / "Snakefile"
    sf.write_text('rule a:\n    output: "/tmp/llara-lint-fixture.txt"\n    shell: "touch {output}"\n')
    proc = _lint(sf, tmp_path)
    assert proc.returncode == 1
    assert "Absolute path" in proc.stdout + proc.stderr or "absolute" in (proc.stdout + proc.stderr).lower()


@pytest.mark.parametrize("text, argv", [
    ("snakemake --configfile config/paper.yaml ...", ["--configfile", "config/paper.yaml", dc.DEFAULT_TARGET]),
    ("llara aggregate OUT --run SEED P M ...", ["aggregate", "OUT", "--run", "SEED", "P", "M"]),
])
def test_placeholders(text, argv):
    cmd = dc.DocCommand("x.md", 1, text, tuple(dc._words(dc.normalize(text))), True)
    assert dc.plan(cmd).argv == argv
