"""Parse documented command lines without running them (tests/doccommands.py).

    python tests/doc_parse_only.py RESULTS.json < items.json

Each item is ``{"mode": "snakemake" | "module" | "script", "argv": [...], "name"/"path": ..., "env": {}}``.
``snakemake``: Snakemake's own ``snakemake.cli.parse_args`` (profiles included); the result carries the
parsed targets, config files and report. ``module``/``script``: the module or script runs as
``__main__`` with ``argv`` until its first ``ArgumentParser.parse_args`` (or a ``parse_known_args`` that
leaves nothing over) returns, then stops; ``--help`` prints the help and counts as parsed. One result per
item: ``{"ok", "error", "ns"}``; all items run in this one process, so heavy imports happen once.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import runpy
import sys
import traceback
from pathlib import Path


class Parsed(BaseException):
    """Raised once the arguments are parsed: stops the program before it does any work."""

    def __init__(self, ns):
        super().__init__()
        self.ns = ns


def _plain(ns) -> dict:
    out = {}
    for k, v in vars(ns).items():
        if isinstance(v, Path):
            v = str(v)
        if isinstance(v, (set, frozenset)):
            v = sorted(map(str, v))
        if isinstance(v, (list, tuple)):
            v = [str(x) if isinstance(x, Path) else x for x in v]
        try:
            json.dumps(v)
        except TypeError:
            v = repr(v)
        out[k] = v
    return out


@contextlib.contextmanager
def _stop_after_parse():
    orig_args, orig_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    depth = [0]

    def parse_args(self, *a, **k):
        depth[0] += 1
        try:
            ns = orig_args(self, *a, **k)
        finally:
            depth[0] -= 1
        if depth[0]:
            return ns
        raise Parsed(ns)

    def parse_known_args(self, *a, **k):
        depth[0] += 1
        try:
            ns, rest = orig_known(self, *a, **k)
        finally:
            depth[0] -= 1
        if depth[0] or rest:  # an inner call, or the program parses the rest with another parser
            return ns, rest
        raise Parsed(ns)

    argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = parse_args, parse_known_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = orig_args, orig_known


def run_one(item: dict) -> dict:
    """Parse one item; an upper-case placeholder where a number goes (``--steps N``) is read as 1."""
    argv = list(item["argv"])
    for _ in range(8):
        r = _run_one({**item, "argv": argv})
        m = re.search(r"invalid (?:int|float|positive_int|\w+) value: '([A-Z][A-Z_]*)'", r["error"])
        if r["ok"] or not m or m.group(1) not in argv:
            return r
        argv = ["1" if a == m.group(1) else a for a in argv]
    return r


def _run_one(item: dict) -> dict:
    err = io.StringIO()
    old_env, old_argv, old_path = dict(os.environ), list(sys.argv), list(sys.path)
    os.environ.update(item.get("env") or {})
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            if item["mode"] == "snakemake":
                from snakemake.cli import parse_args

                _, ns = parse_args(item["argv"])
                return {"ok": True, "error": "", "ns": _plain(ns)}
            with _stop_after_parse():
                if item["mode"] == "module":
                    sys.argv = [item["name"], *item["argv"]]
                    runpy.run_module(item["name"], run_name="__main__", alter_sys=True)
                else:
                    sys.argv = [item["path"], *item["argv"]]
                    sys.path.insert(0, str(Path(item["path"]).parent))
                    runpy.run_path(item["path"], run_name="__main__")
        return {"ok": False, "error": "it ended without parsing arguments (ran for real?)", "ns": None}
    except Parsed as p:
        return {"ok": True, "error": "", "ns": _plain(p.ns)}
    except SystemExit as e:
        if e.code in (0, None):
            return {"ok": True, "error": "", "ns": None}
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        return {"ok": False, "error": (lines[-1] if lines else f"exit status {e.code}"), "ns": None}
    except BaseException as e:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "error": "".join(traceback.format_exception_only(type(e), e)).strip(), "ns": None}
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        sys.argv, sys.path[:] = old_argv, old_path


def main() -> int:
    items = json.load(sys.stdin)
    results = [run_one(item) for item in items]
    Path(sys.argv[1]).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
