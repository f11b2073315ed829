"""Logging set-up for stage scripts (messages go to the rule's log file and to stderr), and the note
Snakemake prints after a failed run (the Snakefile's ``onerror``)."""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path


def setup_logging(log_path: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Configure the ``llara`` logger to write to stderr and, when given, to ``log_path``.

    The folder of ``log_path`` must exist: a typo in ``--log`` raises FileNotFoundError naming it rather
    than creating folders anywhere (Snakemake creates a rule's log folder before the job starts).
    """
    if log_path:
        parent = Path(log_path).absolute().parent
        if not parent.is_dir():
            found = "a file" if parent.exists() else "nothing"
            raise FileNotFoundError(errno.ENOENT, f"the log file's folder {parent} must exist, found {found} there "
                                                  "(llara does not create folders for a log; create it or pick "
                                                  "another path)", str(log_path))
    logger = logging.getLogger("llara")
    logger.setLevel(level)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_path:
        fh = logging.FileHandler(log_path, mode="w")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.propagate = False

    def _log_uncaught(exc_type, exc, tb):
        logger.error("%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = _log_uncaught  # the rule's log then names the failure, not only the terminal
    return logger


_JOB_LOG = re.compile(r"^\s*log: (.+?) \(check log file\(s\) for error details\)\s*$", re.M)


def failed_run_note(snakemake_logs: Iterable[str | os.PathLike]) -> str:
    """The note the Snakefile's ``onerror`` prints after a failed run: the logs to read (each failed job's
    own log, as listed in Snakemake's log, and Snakemake's log itself) and how to rerun after an interruption."""
    run_logs = [Path(p) for p in snakemake_logs]
    job_logs: list[str] = []
    for path in run_logs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for match in _JOB_LOG.finditer(text):
            for name in match.group(1).split(", "):  # relative to the working folder, the current one here
                if os.path.abspath(name) not in job_logs:
                    job_logs.append(os.path.abspath(name))
    lines = ["llara: the run failed."]
    if job_logs:
        lines.append("  Read the log of each failed job: " + ", ".join(job_logs))
    if run_logs:
        lines.append("  Snakemake's log of the whole run: " + ", ".join(str(p.absolute()) for p in run_logs))
    lines += ["  Fix the cause and run the same command again: the failed jobs rerun, finished ones are kept.",
              "  After an interrupted run (killed, Ctrl-C, lost machine) rerun with --rerun-incomplete; if Snakemake",
              "  says the directory cannot be locked, first run the same command once with --unlock (it only unlocks)."]
    return "\n".join(lines)
