"""Command-line entry point: every stage callable without Snakemake (``llara <stage> --help``).

Settings are checked by the same schema and cross-key rules as the Snakefile's (``llara.settings``)
before a stage touches any output. Every expected error (a bad setting or argument, bad input data:
a missing or malformed file, a checksum, an output path holding someone else's files) ends in one
line on stderr naming the file or key, exit status 2 (``llara.cli_errors``); ``llara --debug <stage>``
adds the traceback. Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from llara.cli_errors import DEBUG_FLAG, StageFailed, add_debug_argument, run_stage
from llara.runlog import setup_logging


def _json_arg(text: str) -> dict:
    """A JSON object given inline or as @file."""
    if text.startswith("@"):
        try:
            raw = Path(text[1:]).read_text()
        except OSError as e:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {e.strerror or e}") from None
    else:
        raw = text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _download(a: argparse.Namespace) -> None:
    from llara.data.download import download_dataset
    from llara.settings import check_settings

    check_settings({"download": {"extra_sha256": a.extra_sha256}})
    download_dataset(a.dataset, a.source, a.out, mirror=a.mirror, extra_sha256=a.extra_sha256)


def _preprocess(a: argparse.Namespace) -> None:
    from llara.data.preprocess import DataConfig, preprocess
    from llara.settings import ConfigError, check_settings

    checked = check_settings({"data": a.data, "seed": a.seed, "download": {"extra_sha256": a.extra_sha256}})
    out = {s: Path(a.out) / f"{s}.parquet" for s in ("items", "train", "valid", "test")}
    source = a.dataset_config or a.source
    if a.raw is None and (source if isinstance(source, str) else source.get("source")) != "interactions":
        raise ConfigError("", "--raw is required for a built-in dataset (the folder `llara download` wrote)")
    counts = preprocess(a.dataset, source, a.raw, out, DataConfig.from_dict(checked["data"]), seed=a.seed,
                        extra_sha256=a.extra_sha256)
    print(json.dumps(counts))


def build_parser() -> argparse.ArgumentParser:
    """The ``llara`` argument parser with one sub-command per stage."""
    p = argparse.ArgumentParser(prog="llara", description=__doc__.splitlines()[0])
    p.add_argument("--log", help="also write log messages to this file (its folder must exist)")
    add_debug_argument(p)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("download", help="fetch and verify the raw files of a dataset")
    d.add_argument("dataset", choices=["lastfm", "movielens", "steam"])
    d.add_argument("--source", default="llara", choices=["llara", "raw"])
    d.add_argument("--out", required=True, help="output folder, e.g. resources/raw/lastfm/llara "
                                                "(absent, empty or an earlier download)")
    d.add_argument("--mirror", help="local mirror folder laid out like ../shared/datasets")
    d.add_argument("--extra-sha256", type=_json_arg, default={}, help="JSON {relpath: sha256} of extra pins (or @file)")
    add_debug_argument(d, suppress_default=True)
    d.set_defaults(func=_download)

    pp = sub.add_parser("preprocess", help="raw files -> items/train/valid/test.parquet")
    pp.add_argument("dataset", help="lastfm, movielens, steam, or the name of your own dataset")
    pp.add_argument("--source", default="llara", choices=["llara", "raw"])
    pp.add_argument("--raw", help="folder written by `llara download` (built-in datasets)")
    pp.add_argument("--dataset-config", type=_json_arg, default=None,
                    help="JSON (or @file) of the config entry datasets.<name>; your own data: "
                         '{"source": "interactions", "interactions": ..., "items": ...} (docs/own-data.md)')
    pp.add_argument("--out", required=True, help="output folder for the four Parquet files")
    pp.add_argument("--data", type=_json_arg, default={}, help="JSON of the config's data: section (or @file)")
    pp.add_argument("--seed", type=int, default=42)
    pp.add_argument("--extra-sha256", type=_json_arg, default={}, help="JSON {relpath: sha256} of extra pins (or @file)")
    add_debug_argument(pp, suppress_default=True)
    pp.set_defaults(func=_preprocess)
    for name, (_, text) in _FORWARD.items():
        sub.add_parser(name, help=f"{text} (`llara {name} --help`)", add_help=False)
    return p


# Later stages keep their own argument parsers; `llara <stage> ...` forwards to them.
_FORWARD = {
    "seqrec": ("llara.seqrec.__main__", "train SASRec / GRU4Rec / Caser and export item embeddings"),
    "base-llm": ("llara.llm.base", "build the base LLM folder (GGUF rebuild, local folder or hub id)"),
    "tune": ("llara.llm.train", "curriculum LoRA + projector tuning under DeepSpeed"),
    "evaluate": ("llara.evaluate.__main__", "generate/rank evaluation on the stored candidates"),
    "aggregate": ("llara.evaluate.aggregate", "one method's per-seed evaluations over seeds x candidate sets"),
    "reference": ("llara.evaluate.reference", "no-LLM reference scorers (popularity, last item) on the stored candidates"),
    "compare": ("llara.evaluate.compare", "A - B on the same rows and candidate sets, with a paired CI"),
    "report": ("llara.report.__main__", "the paper-style table and plots"),
}


def _split_global(argv: list[str]) -> tuple[str | None, bool, list[str]]:
    """Take the global ``--log FILE`` and ``--debug`` off the front of ``argv``."""
    log_path, debug, rest = None, False, list(argv)
    while rest and (rest[0] in ("--log", DEBUG_FLAG) or rest[0].startswith("--log=")):
        if rest[0] == DEBUG_FLAG:
            debug, rest = True, rest[1:]
        elif rest[0] == "--log":
            if len(rest) < 2:
                break  # let argparse report the missing value
            log_path, rest = rest[1], rest[2:]
        else:
            log_path, rest = rest[0].split("=", 1)[1], rest[1:]
    return log_path, debug, rest


def _run_builtin(argv: list[str]) -> int:
    """``llara [--log F] [--debug] download|preprocess ...``: parse, set up logging, run."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    args.func(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one stage from the command line; returns the exit status (2 after an expected error's one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    log_path, debug, rest = _split_global(argv)
    try:
        if rest and rest[0] in _FORWARD:
            fwd = rest[1:]
            if log_path and not any(a == "--log" or a.startswith("--log=") for a in fwd):
                fwd += ["--log", log_path]
            if debug and DEBUG_FLAG not in fwd:
                fwd.append(DEBUG_FLAG)
            return int(importlib.import_module(_FORWARD[rest[0]][0]).main(fwd) or 0)
        stage = rest[0] if rest and rest[0] in ("download", "preprocess") else ""
        return run_stage(stage, _run_builtin, argv)
    except StageFailed as e:
        return int(e.code)


if __name__ == "__main__":
    sys.exit(main())
