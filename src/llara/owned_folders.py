"""Folder outputs of the workflow and what is inside them.

Snakemake deletes a rule's ``directory()`` output *whole* before it reruns the job (a config change, a
newer input, ``--forcerun``), before any project code runs. So the Snakefile checks every existing folder
that matches such an output pattern when it is loaded, and refuses to run at all while one holds a file
the project did not write (its ``.llara-output.json`` marker, see :mod:`llara.io`, does not list it): the
user moves the file out, nothing is deleted. Patterns are Snakemake file patterns with their wildcard
constraints (``resources/llm/{name,[A-Za-z0-9]...}``); only existing folders whose path matches are
checked, component by component, so unrelated folders (``resources/llm/_downloads``) are never read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from llara.io import MARKER, OutputInTheWayError, _owner

SNAKEMAKE_STAMP = ".snakemake_timestamp"  # Snakemake's own file in every directory() output it made


def _components(pattern: str) -> list[str]:
    """``pattern`` split at the ``/`` outside wildcards (a constraint's regex may hold ``/`` or braces)."""
    parts, depth, cur = [], 0, []
    for ch in pattern:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "/" and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p not in ("", ".")]


def _component_regex(comp: str) -> re.Pattern:
    """A regex for one path component of a Snakemake pattern: ``{name,regex}`` is its constraint, a bare
    ``{name}`` Snakemake's default (anything), the rest literal."""
    out, i = [], 0
    while i < len(comp):
        if comp[i] != "{":
            out.append(re.escape(comp[i]))
            i += 1
            continue
        depth, j = 0, i
        while True:
            depth += {"{": 1, "}": -1}.get(comp[j], 0)
            if depth == 0:
                break
            j += 1
        _, _, constraint = comp[i + 1:j].partition(",")
        out.append(f"(?:{constraint.strip() or '.+'})")
        i = j + 1
    return re.compile("".join(out))


def matching_folders(pattern: str, root: str | os.PathLike = ".") -> Iterator[Path]:
    """The existing folders under ``root`` whose relative path matches the Snakemake ``pattern``."""
    level = [Path(root)]
    for comp in _components(pattern):
        if "{" not in comp:
            level = [p / comp for p in level if (p / comp).is_dir() and not (p / comp).is_symlink()]
            continue
        rx = _component_regex(comp)
        nxt = []
        for p in level:
            try:
                names = sorted(os.listdir(p))
            except OSError:
                continue
            nxt += [p / n for n in names if rx.fullmatch(n) and (p / n).is_dir() and not (p / n).is_symlink()]
        level = nxt
    yield from level


def check_folder_outputs(outputs: Iterable[tuple[str, str]], root: str | os.PathLike = ".") -> list[Path]:
    """Refuse (:class:`OutputInTheWayError`, nothing touched) while a folder output holds a file the
    project did not write; ``outputs`` are (rule name, directory pattern). Returns the folders checked."""
    checked = []
    for rule, pattern in outputs:
        for folder in matching_folders(pattern, root):
            foreign = foreign_file(folder)
            if foreign is not None:
                rel = os.path.relpath(folder, root)
                raise OutputInTheWayError(
                    f"{os.path.relpath(foreign, root)}: llara did not write it, and {rel}/ is the output folder of "
                    f"rule {rule}, which Snakemake deletes whole before it reruns that job: move the file out of it "
                    "(nothing was run)")
            checked.append(folder)
    return checked


def foreign_file(folder: Path) -> Path | None:
    """The first file or link below ``folder`` that its markers do not list (Snakemake's stamp aside)."""
    for here, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(here, d))):
            p = Path(here) / name
            if name == MARKER or (name == SNAKEMAKE_STAMP and Path(here) == folder):
                continue
            if _owner(p, stop=folder) is None:
                return p
    return None
