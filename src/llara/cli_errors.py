"""How every ``llara`` stage ends on an expected error: one line on stderr, exit status 2.

An *expected* error is one about what the user gave: a setting or argument (``ConfigError``), a
file that is missing, unreadable, malformed or fails its sha256 pin, an output path holding files
llara did not write, an unreachable download host. Each stage's ``main`` is wrapped by
:func:`stage_main`: such an error is printed as ``llara <stage>: error: <message>`` (the message
names the file or key, what was expected and what was found), written to the stage's log file,
and the stage exits with status 2, the status argparse uses for a bad argument. Any other
exception is a bug and keeps its traceback. Library functions whose job is to check the user's files
report problems as plain ``ValueError``; a stage marks such a call with :func:`input_errors`, so a
``ValueError`` is expected there and nowhere else. ``--debug`` (``llara --debug <stage> ...`` or
``llara <stage> ... --debug``) prints the traceback of an expected error too.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence

EXIT_ERROR = 2
DEBUG_FLAG = "--debug"

Main = Callable[[list[str]], "int | None"]


class StageFailed(SystemExit):
    """Raised by a wrapped ``main`` once it has printed its one-line error; ``code`` is the exit status."""


class InputError(ValueError):
    """A ``ValueError`` raised inside :func:`input_errors`: about the user's input, so expected."""


@contextlib.contextmanager
def input_errors(*types: type[Exception]) -> Iterator[None]:
    """Within the block, an exception of ``types`` (default ValueError) reports bad input: it is re-raised as
    :class:`InputError` with the same message (chained, so ``--debug`` shows where it came from)."""
    catch = types or (ValueError,)
    try:
        yield
    except expected_errors():
        raise
    except catch as e:
        raise InputError(str(e)) from e


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types that report a problem with the user's input, settings or paths (not a bug)."""
    from llara.errors import ChecksumError, ConfigError, MalformedInputError, PickleFormatError, UnsafePickleError
    from llara.io import IncompleteOutputError, OutputInTheWayError

    return (InputError, ConfigError, ChecksumError, MalformedInputError, PickleFormatError, UnsafePickleError,
            OutputInTheWayError, IncompleteOutputError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
            ConnectionError, json.JSONDecodeError)


def describe(exc: BaseException) -> str:
    """``exc`` as one line: an OS error as ``FILE: reason``, a JSON error with its position."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
        if exc.filename2 is not None:
            text += f" (and {exc.filename2})"
    elif (isinstance(exc, FileNotFoundError) and len(exc.args) == 1 and isinstance(exc.args[0], str)
          and exc.args[0] and not any(c.isspace() for c in exc.args[0])):
        text = f"{exc.args[0]}: no such file or folder"  # pyarrow raises FileNotFoundError(path)
    elif isinstance(exc, json.JSONDecodeError):
        text = f"not valid JSON: {exc}"
    else:
        text = str(exc) or type(exc).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


def wants_debug(argv: Sequence[str]) -> bool:
    """Whether ``--debug`` is among the options of ``argv`` (before a ``--`` end-of-options marker)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == DEBUG_FLAG:
            return True
    return False


def add_debug_argument(parser: argparse.ArgumentParser, *, suppress_default: bool = False) -> None:
    """Give ``parser`` the ``--debug`` flag (``suppress_default``: for a sub-parser below a parser that has it)."""
    parser.add_argument(DEBUG_FLAG, action="store_true", default=argparse.SUPPRESS if suppress_default else False,
                        help="on an expected error, also print the traceback (otherwise one line, exit status 2)")


def fail(stage: str, exc: BaseException, debug: bool) -> StageFailed:
    """Print ``exc`` as the stage's one-line error (after its traceback when ``debug``), record it in the
    ``llara`` logger's log files, and return the :class:`StageFailed` to raise."""
    line = f"llara {stage}: error: {describe(exc)}" if stage else f"llara: error: {describe(exc)}"
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(line, file=sys.stderr, flush=True)
    logger = logging.getLogger("llara")
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "%s", (line,),
                               (type(exc), exc, exc.__traceback__) if debug else None)
    for handler in logger.handlers:  # the stage's --log file; stderr has the line already
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    return StageFailed(EXIT_ERROR)


def run_stage(stage: str, body: Main, argv: Sequence[str] | None = None) -> int:
    """Run ``body(argv)`` (``argv`` defaults to ``sys.argv[1:]``); return its exit status (None: 0).

    An expected error (:func:`expected_errors`) raises :class:`StageFailed` (exit status 2) after one line
    on stderr; any other exception propagates with its traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(body(args) or 0)
    except StageFailed:
        raise
    except expected_errors() as e:
        raise fail(stage, e, wants_debug(args)) from None


def stage_main(stage: str) -> Callable[[Main], Callable[..., int]]:
    """Decorate a stage's ``main(argv)`` with :func:`run_stage`."""

    def wrap(body: Main) -> Callable[..., int]:
        @functools.wraps(body)
        def main(argv: Sequence[str] | None = None) -> int:
            return run_stage(stage, body, argv)

        return main

    return wrap
