"""Logging set-up for stage scripts: messages go to the rule's log file and to stderr."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(log_path: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Configure the ``llara`` logger to write to stderr and, when given, to ``log_path``."""
    logger = logging.getLogger("llara")
    logger.setLevel(level)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path, mode="w")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.propagate = False

    def _log_uncaught(exc_type, exc, tb):
        logger.error("%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = _log_uncaught  # the rule's log then names the failure, not only the terminal
    return logger
