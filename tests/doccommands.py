"""The shell commands of the project's Markdown, and how the doc-test exercises each one.

Used by tests/test_doc_commands.py, so a command is tested as soon as it is written in a document.

Where commands come from (``doc_files``): README.md, docs/*.md (not docs/measurements/, which holds
logs of past runs), config/README.md, and the comments of config/examples/*.yaml (the header of an
example config tells how to run it).

- Fenced code blocks labelled ``bash``/``sh``/``shell``/``zsh`` (every line is a command) or ``console``
  (the ``$ `` lines); an unlabelled block counts when its first line starts with a known command word.
  A line ending in ``\\`` continues on the next one, so does an unclosed quote; ``# ...`` comments are
  dropped; ``&&``, ``||``, ``;`` and ``|`` split a line into commands.
- Inline code spans in the prose that start with a known command word and have at least one argument
  (``snakemake --cores 2 results/...``, ``llara reference --help``, ``check.py smoke --out DIR``). A
  one-word span (``benchmarks/learnability.py``) names a file, not a command. An inline span that only
  names an option or a sub-command in a sentence (``llara seqrec --seed``) is listed in ``MENTIONS``.
- In a YAML file's comments, runs of lines indented after the ``#`` (``#   .venv/bin/snakemake ...``).

Placeholders (``normalize``): ``<target>`` and a trailing ``...`` of a Snakemake command are
``DEFAULT_TARGET``; any other ``<...>`` is the word ``PLACEHOLDER``; ``[--option value]`` (an optional
part of a usage line) is kept without the brackets; ``a|b`` (alternatives) is ``a``; other ``...``
are dropped. Upper-case words (``A``, ``DIR``, ``SEED``) stay literal values; where a number goes
(``--steps N``) the parse reads them as 1.

How each kind is exercised (``plan``):

- ``snakemake`` (also ``.venv/bin/snakemake``, ``python -m snakemake``, and the command inside
  ``apptainer exec IMAGE ...`` or ``sbatch --wrap "..."``): its arguments are parsed by Snakemake's own
  parser, profile included (``snakemake.cli.parse_args``); a ``--configfile`` value that is a target
  (Snakemake 9's ``--configfile`` takes several files and swallows the targets after it) and a
  ``--report`` without a target (the report of ``rule all`` has no table or plots) fail; then the command
  runs as written with ``-n`` (a dry run: config validation, every rule's inputs, the DAG) in a temporary
  copy of the Snakefile, ``config/``, ``workflow/`` and ``profiles/`` (``--report FILE`` is taken out of
  the dry run). A command that needs conda (``--sdm conda``, ``--use-conda``) is only parsed where
  ``conda`` is not installed. A ``--configfile`` the document defines in a ``yaml`` block above the
  command (``my.yaml``) is written from that block; the interaction and item files of a
  ``source: interactions`` dataset (the reader's own files) are created empty.
- ``llara`` (the CLI), ``python -m MODULE``, ``python SCRIPT.py``, a script called directly
  (``benchmarks/learnability.py ...``: it must be executable and start with ``#!``), and ``check.py`` /
  ``prepare.py`` (the README's short names for benchmarks/gpu/*.py): the module or script runs with the
  documented arguments until its argument parser has read them (``doc_parse_only.py``), so a wrong
  option, a missing required argument or a bad value fails; ``--help`` prints the help. A ``@file``
  argument that does not exist is created as ``{}``.
- ``SKIPPED``: kinds that are not run (installs, the test suite itself, SLURM's own tools, root-only
  scripts), each with its reason.
- ``REFUSED``: commands a document shows as refused on purpose: they must fail.
- Anything else in a fenced block fails the test as an unknown command kind.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TARGET = "results/lastfm/sasrec/metrics.json"
SHELL_LANGS = {"bash", "sh", "shell", "zsh", "console", "shell-session"}

# Inline spans that name an option or a sub-command inside a sentence; they are not commands.
MENTIONS = {
    "snakemake --configfile": "names the option",
    "llara seqrec": "names the sub-command",
    "llara preprocess": "names the sub-command",
    "llara seqrec --seed": "names the option",
    "llara preprocess --dataset-config": "names the option",
    "llara preprocess --out": "names the option",
    "llara base-llm --out": "names the option",
    "llara download --out <folder>": "names the option (the dataset argument is left out)",
    "llara preprocess --out <dangling link>": "names the option (the dataset argument is left out)",
    "llara seqrec --set hidden_size=64.0": "names the option's value (the data arguments are left out)",
    "python -m llara.llm.train": "names the module the tune rule runs",
    "llara compare A B": "names the sub-command (its usage line is in docs/interfaces.md)",
    "llara reference": "names the sub-command",
    "llara <stage>: error: ...": "the form of an error line",
    "llara --debug <stage> ...": "names the flag",
    "python -m snakemake": "how each SLURM job runs Snakemake",
    "sbatch --gpus=a100:2": "what the SLURM plugin makes of the resources",
}

# Commands a document shows failing on purpose (a refused setting): they must fail.
REFUSED = {
    "snakemake --config sedds='[42,43]'": "an unknown key, refused naming it",
    "snakemake --config 'data={\"max_history\": 5}'": "a nested value Snakemake gives as a string, refused",
}

SKIPPED = {
    "venv": "creates the virtual environment (the install step CI runs in .ci/run)",
    "pip": "installs or downloads packages (network; an install step)",
    "pytest": "the test suite itself (CI runs it)",
    "export": "sets a variable for the commands after it",
    "cd": "changes the folder",
    "git": "version control",
    "conda": "creates a conda environment (needs conda and network)",
    "apptainer build": "builds the container image (needs apptainer, network and GBs)",
    "sudo": "needs root: starts or stops the SLURM test cluster, exercised by tests/test_slurm.py (marker slurm)",
    "slurm tool": "SLURM's own tools (sacct, sinfo, sacctmgr, squeue, scancel): need a cluster",
    "shell loop": "shell control flow, run by hand (its body installs into the environments Snakemake made)",
}

_SLURM_TOOLS = {"sacct", "sinfo", "sacctmgr", "squeue", "scancel", "srun"}
_PLAIN_SKIPS = {"pip": "pip", "pip3": "pip", "pytest": "pytest", "export": "export", "cd": "cd", "git": "git",
                "conda": "conda", "sudo": "sudo", **{t: "slurm tool" for t in _SLURM_TOOLS}}
_LOOPS = {"for", "while", "if", "until", "case"}
_COMMAND_WORDS = {"snakemake", "llara", "python", "python3", "check.py", "prepare.py", "apptainer", "sbatch",
                  *_PLAIN_SKIPS}
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


@dataclass(frozen=True)
class DocCommand:
    """One simple command of a document: where, as written, and its normalized words."""

    file: str
    line: int
    text: str                   # the command line as written (continuations joined)
    argv: tuple[str, ...]       # this command's words after ``normalize`` (a line may hold several)
    inline: bool
    yaml_before: str | None = None  # the last ```yaml block above it in the same file

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: `{shlex.join(self.argv)}`"


@dataclass
class Plan:
    """How a command is exercised: ``snakemake`` (parse + dry run), ``python`` (parse), ``skip``,
    ``mention`` or ``unknown``."""

    kind: str
    action: str
    argv: list[str] = field(default_factory=list)  # snakemake: its arguments; python: the arguments
    module: str | None = None   # python: run as ``python -m module``
    script: str | None = None   # python: run as this file (relative to the repository)
    direct: bool = False        # the document calls the script itself (exec bit + shebang needed)
    env: dict = field(default_factory=dict)
    reason: str = ""
    refused: str | None = None  # REFUSED: the reason it must fail


def doc_files(root: Path = REPO) -> list[Path]:
    """The documents whose commands are tested (the YAML files: their comments)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "config" / "README.md",
            *sorted((root / "config" / "examples").glob("*.yaml"))]


# ----------------------------------------------------------------------------------------------------------
# extraction

def normalize(text: str) -> str:
    """Replace a usage line's placeholders with values a parser accepts (module docstring)."""
    text = re.sub(r"<target>", DEFAULT_TARGET, text)
    text = re.sub(r"<[^<>\n]+>", "PLACEHOLDER", text)
    text = re.sub(r"\[(-[^\[\]]*)\]", r"\1", text)               # [--opt v] -> --opt v
    text = re.sub(r"(?<![\w'\"])([\w.@-]+)(?:\|[\w.@-]+)+", r"\1", text)  # a|b -> a
    return text


def _words(text: str) -> list[str]:
    """Shell words of ``text``, with ``&&``, ``||``, ``;``, ``|``, ``&`` as words of their own; ``#``
    outside quotes starts a comment (also inside a word, unlike the shell)."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    return list(lex)


def _closed(text: str) -> bool:
    try:
        _words(text)
        return True
    except ValueError:  # no closing quotation: the command goes on on the next line
        return False


def _split(words: list[str]) -> list[list[str]]:
    out, cur = [], []
    for w in words:
        if w in ("&&", "||", ";", "|", "&"):
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(w)
    if cur:
        out.append(cur)
    return out


def _is_command_word(word: str) -> bool:
    if word in _COMMAND_WORDS or _ENV.match(word):
        return True
    if word.startswith((".venv/bin/", "./env/bin/")):
        return True
    return word.startswith(("benchmarks/", "tests/", "./")) and word.endswith((".py", ".sh"))


def _commands(file: str, line: int, text: str, inline: bool, yaml_before: str | None) -> list[DocCommand]:
    words = _words(normalize(text))
    if words and words[0] in _LOOPS:  # a loop is one command (its body is not run alone)
        return [DocCommand(file, line, text, tuple(words), inline, yaml_before)]
    return [DocCommand(file, line, text, tuple(c), inline, yaml_before) for c in _split(words)]


def extract(path: Path, root: Path = REPO) -> list[DocCommand]:
    """Every command of one Markdown file, in order (module docstring)."""
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix in (".yaml", ".yml"):
        return _extract_yaml_comments(rel, lines)
    found: list[tuple[int, DocCommand]] = []
    prose = []
    yaml_before = None
    yaml_at: list[tuple[int, str]] = []  # (line, text) of each yaml block
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, info, indent = m["fence"], m["info"].lower(), len(m["indent"])
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[j]):
            body.append((j + 1, lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip()))
            j += 1
        prose.extend([""] * (j + 1 - i))  # keep line numbers of the prose
        if info in ("yaml", "yml"):
            yaml_at.append((i + 1, "\n".join(b for _, b in body) + "\n"))
        first = next((b.strip() for _, b in body if b.strip()), "")
        shell = info in SHELL_LANGS or (info == "" and bool(first) and _is_command_word(first.split()[0]))
        if shell:
            yaml_before = yaml_at[-1][1] if yaml_at else None
            for no, text in _logical_lines(body, console=info in ("console", "shell-session")):
                found.extend((no, c) for c in _commands(rel, no, text, False, yaml_before))
        i = j + 1
    text = "\n".join(prose)
    for m in _SPAN.finditer(text):
        span = m.group(2)
        if "\n\n" in span:
            continue
        span = " ".join(span.split())
        words = span.split()
        prog = next((w for w in words if not _ENV.match(w)), "")
        if len(words) < 2 or not _is_command_word(words[0]) or not _is_command_word(prog):
            continue
        no = text.count("\n", 0, m.start()) + 1
        before = [y for at, y in yaml_at if at < no]
        if span in MENTIONS:
            found.append((no, DocCommand(rel, no, span, tuple(_words(span)), True, None)))
            continue
        found.extend((no, c) for c in _commands(rel, no, span, True, before[-1] if before else None))
    return [c for _, c in sorted(found, key=lambda t: t[0])]


def _extract_yaml_comments(rel: str, lines: list[str]) -> list[DocCommand]:
    """Commands in a YAML file's comments: runs of ``#   command`` lines (indented after the ``#``)."""
    found, group = [], []
    for no, line in enumerate([*lines, ""], start=1):
        m = re.match(r"^#\s{2,}(\S.*)$", line)
        if m:
            group.append((no, m.group(1)))
            continue
        if group and _is_command_word(group[0][1].split()[0]):
            for at, text in _logical_lines(group, console=False):
                found.extend(_commands(rel, at, text, False, None))
        group = []
    return found


def _logical_lines(body: list[tuple[int, str]], console: bool) -> list[tuple[int, str]]:
    out, buf, start = [], "", None
    for no, raw in body:
        line = raw.strip()
        if start is None:
            if console:
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not line or line.startswith("#"):
                continue
            start, buf = no, line
        else:
            buf += ("\n" if not buf.endswith(" ") else "") + line
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip() + " "
            continue
        if not _closed(buf):
            continue
        out.append((start, buf.strip()))
        buf, start = "", None
    if start is not None:
        out.append((start, buf.strip()))
    return out


def all_commands(root: Path = REPO) -> list[DocCommand]:
    return [c for f in doc_files(root) for c in extract(f, root)]


# ----------------------------------------------------------------------------------------------------------
# classification

def plan(cmd: DocCommand) -> Plan:
    """How ``cmd`` is exercised (module docstring)."""
    if cmd.inline and cmd.text in MENTIONS:
        return Plan("mention", "mention", reason=MENTIONS[cmd.text])
    refused = REFUSED.get(cmd.text)
    words, env = list(cmd.argv), {}
    while words and _ENV.match(words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    p = _plan_words(words, env)
    p.refused = refused
    if p.action == "snakemake":  # `snakemake --profile profiles/slurm ...`: the targets
        p.argv = [DEFAULT_TARGET if a == "..." else a for a in p.argv]
    else:
        p.argv = [a for a in p.argv if a != "..."]
    return p


def _plan_words(words: list[str], env: dict) -> Plan:
    if not words:
        return Plan("unknown", "unknown", reason="only variable assignments")
    prog, args = words[0], words[1:]
    if prog in _LOOPS:
        return Plan("shell loop", "skip", reason=SKIPPED["shell loop"])
    base = prog.split("/")[-1] if prog.startswith((".venv/bin/", "./env/bin/", "env/bin/")) else prog
    if base in ("python", "python3"):
        if args[:2] == ["-m", "venv"]:
            return Plan("venv", "skip", reason=SKIPPED["venv"])
        if args[:1] == ["-m"] and len(args) >= 2:
            mod, rest = args[1], args[2:]
            if mod == "snakemake":
                return Plan("snakemake", "snakemake", rest, env=env)
            if mod in ("pip", "pytest"):
                return Plan(mod, "skip", reason=SKIPPED[mod])
            if mod == "llara":
                mod = "llara.cli"
            return Plan("python -m", "python", rest, module=mod, env=env)
        if args and args[0].endswith(".py"):
            return Plan("python script", "python", args[1:], script=args[0], env=env)
        return Plan("unknown", "unknown", reason="python without a module or script")
    if base == "snakemake":
        return Plan("snakemake", "snakemake", args, env=env)
    if base == "llara":
        return Plan("llara", "python", args, module="llara.cli", env=env)
    if base in ("check.py", "prepare.py") and prog == base:
        return Plan("python script", "python", args, script=f"benchmarks/gpu/{base}", env=env)
    if prog.endswith(".py"):
        return Plan("script", "python", args, script=prog, direct=True, env=env)
    if base in _PLAIN_SKIPS:
        kind = _PLAIN_SKIPS[base]
        return Plan(kind, "skip", reason=SKIPPED[kind])
    if prog == "apptainer":
        if args[:1] == ["exec"]:
            rest = args[1:]
            while rest and rest[0].startswith("-"):
                rest = rest[1:]
            return _inside(_plan_words(rest[1:], env), "apptainer exec")  # rest[0] is the image
        return Plan("apptainer build", "skip", reason=SKIPPED["apptainer build"])
    if prog == "sbatch" and "--wrap" in args:
        return _inside(_plan_words(_words(args[args.index("--wrap") + 1]), env), "sbatch --wrap")
    return Plan("unknown", "unknown", reason=f"{prog}: not a command kind the doc-test knows "
                                            "(add it to tests/doccommands.py: a kind it runs, or SKIPPED)")


def _inside(p: Plan, wrapper: str) -> Plan:
    p.kind = f"{p.kind} (in {wrapper})"
    return p


# ----------------------------------------------------------------------------------------------------------
# running

def make_workdir(dest: Path, root: Path = REPO) -> Path:
    """A Snakemake working folder: copies of the Snakefile, config/, workflow/ and profiles/."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copy2(root / "Snakefile", dest / "Snakefile")
    for d in ("config", "workflow", "profiles"):
        shutil.copytree(root / d, dest / d, ignore=ignore, symlinks=True, dirs_exist_ok=True)
    return dest


def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE_")}
    mirror = REPO.parent / "shared" / "datasets"
    env.setdefault("LLARA_MIRROR", str(mirror))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **{k: v for k, v in extra.items() if k != "LLARA_MIRROR"}}


def parse_batch(items: list[dict], cwd: Path) -> list[dict]:
    """Parse many commands in one process (``doc_parse_only.py``); one result dict per item."""
    if not items:
        return []
    out = cwd / ".doc_parse_results.json"
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("doc_parse_only.py")), str(out)],
                          input=json.dumps(items), capture_output=True, text=True, cwd=cwd, env=_env({}))
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"doc_parse_only.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def _option_values(args: list[str], names: tuple[str, ...]) -> list[str]:
    vals, take = [], False
    for a in args:
        if a == "--":
            break
        if a in names:
            take = True
            continue
        if take and not a.startswith("-"):
            vals.append(a)
        else:
            take = False
    return vals


def _prepare_inputs(cmd: DocCommand, args: list[str], workdir: Path) -> None:
    """Write a config the document defines above the command, and the reader's own data files."""
    import yaml

    for name in _option_values(args, ("--configfile", "--configfiles")):
        f = workdir / name
        if not f.exists() and name.endswith((".yaml", ".yml")) and cmd.yaml_before:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(cmd.yaml_before)
        if f.is_file() and name.endswith((".yaml", ".yml")):
            cfg = yaml.safe_load(f.read_text()) or {}
            for entry in (cfg.get("datasets") or {}).values():
                if isinstance(entry, dict) and entry.get("source") == "interactions":
                    for key in ("interactions", "items"):
                        p = workdir / str(entry.get(key, ""))
                        if entry.get(key) and not p.exists() and not Path(str(entry[key])).is_absolute():
                            p.parent.mkdir(parents=True, exist_ok=True)
                            p.touch()


def _snakemake_static(ns: dict) -> str | None:
    """What a parsed Snakemake command line gets wrong before anything runs."""
    targets = ns.get("targets") or []
    swallowed = [c for c in ns.get("configfile") or [] if not str(c).endswith((".yaml", ".yml", ".json"))
                 or str(c).startswith("results/")]
    if swallowed:
        return (f"--configfile reads {swallowed} as config files (it takes several files): put the targets "
                "before the option or after `--`")
    if ns.get("report") and not targets:
        return ("--report without a target reports only the default target (rule all), without the "
                "table or plots: name results/report/table.md")
    return None


def _needs_conda(args: list[str]) -> bool:
    sdm = _option_values(args, ("--sdm", "--software-deployment-method", "--deployment-method", "--deployment"))
    return ("conda" in sdm or "--use-conda" in args or "--conda-create-envs-only" in args) and not shutil.which("conda")


def _dry_run(args: list[str], workdir: Path, env: dict) -> subprocess.CompletedProcess:
    run_args, skip = [], False
    for i, a in enumerate(args):  # the report is made from finished outputs: dry-run its targets instead
        if skip:
            skip = False
            continue
        if a == "--report" and "--" not in args[:i]:
            skip = i + 1 < len(args) and not args[i + 1].startswith("-")
            continue
        run_args.append(a)
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", *run_args], cwd=workdir, env=_env(env),
                          capture_output=True, text=True)


def check(commands: list[DocCommand], workdir: Path, log=None) -> tuple[list[str], list[tuple[DocCommand, Plan, str]]]:
    """Exercise ``commands`` (grouped: each distinct command runs once). Returns the failures (one line per
    documented place, naming file and line) and what was done with each command."""
    groups: dict[tuple, list[DocCommand]] = {}
    for c in commands:
        groups.setdefault((c.argv, c.text if c.text in REFUSED else "", c.yaml_before), []).append(c)
    plans = {k: plan(cs[0]) for k, cs in groups.items()}
    failures: dict[tuple, str] = {}
    done: dict[tuple, str] = {}

    # 1. parse every snakemake and python command in one process
    items, keys = [], []
    for k, p in plans.items():
        if p.action == "snakemake":
            _prepare_inputs(groups[k][0], p.argv, workdir)
            items.append({"mode": "snakemake", "argv": p.argv, "env": p.env})
        elif p.action == "python":
            if p.direct:
                problem = script_problem(REPO / p.script)
                if problem:
                    failures[k] = problem
                    continue
            for a in p.argv:
                if a.startswith("@") and len(a) > 1 and not (workdir / a[1:]).exists():
                    (workdir / a[1:]).write_text("{}")
            items.append({"mode": "module", "name": p.module, "argv": p.argv, "env": p.env} if p.module else
                         {"mode": "script", "path": str(REPO / p.script), "argv": p.argv, "env": p.env})
        else:
            continue
        keys.append(k)
    for k, r in zip(keys, parse_batch(items, workdir)):
        p = plans[k]
        if not r["ok"]:
            failures[k] = f"the arguments do not parse: {r['error']}"
            done[k] = "parsed"
            continue
        if p.action == "python":
            done[k] = "parsed" + (" (--help)" if "--help" in p.argv or "-h" in p.argv else "")
            continue
        problem = _snakemake_static(r.get("ns") or {})
        if problem:
            failures[k], done[k] = problem, "parsed"
        elif _needs_conda(p.argv):
            done[k] = "parsed (needs conda for a dry run)"
    # 2. dry runs
    for k, p in plans.items():
        if p.action != "snakemake" or k in failures or k in done:
            continue
        proc = _dry_run(p.argv, workdir, p.env)
        done[k] = "dry run"
        if log:
            log(f"dry run {'ok' if proc.returncode == 0 else 'FAILED'}: snakemake {shlex.join(p.argv)}")
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            at = next((i for i, ln in enumerate(lines) if re.search(r"Error|Exception|error:", ln)), len(lines) - 1)
            err = " ".join(ln.strip() for ln in lines[max(at, 0):at + 2])  # the error and its message
            failures[k] = f"the dry run fails ({proc.returncode}): {err}"
    # 3. the rest, and the documented refusals
    for k, p in plans.items():
        if p.action in ("skip", "mention"):
            done[k] = f"skipped: {p.reason}" if p.action == "skip" else f"mention: {p.reason}"
        elif p.action == "unknown":
            failures[k] = p.reason
            done[k] = "unknown"
        if p.refused:
            if k in failures:
                del failures[k]
                done[k] += f" (refused, as documented: {p.refused})"
            else:
                failures[k] = f"documented as refused ({p.refused}) but it ran"
    report = [f"{c}: {failures[k]}" for k, cs in groups.items() if k in failures for c in cs]
    table = [(c, plans[k], done.get(k, "")) for k, cs in groups.items() for c in cs]
    return report, sorted(table, key=lambda t: (t[0].file, t[0].line))


def script_problem(path: Path) -> str | None:
    """Why a script the documents call directly (``benchmarks/x.py ...``) cannot run that way, or None."""
    if not path.is_file():
        return f"{path.name}: no such file"
    if not os.access(path, os.X_OK):
        return f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: not executable (chmod +x)"
    if not path.read_bytes().startswith(b"#!"):
        return f"{path.name}: no #! line"
    return None
