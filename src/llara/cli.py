"""Command-line entry point: every stage callable without Snakemake (``llara <stage> --help``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llara.runlog import setup_logging


def _json_arg(text: str) -> dict:
    """A JSON object given inline or as @file."""
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _download(a: argparse.Namespace) -> None:
    from llara.data.download import download_dataset

    download_dataset(a.dataset, a.source, a.out, mirror=a.mirror, extra_sha256=a.extra_sha256)


def _preprocess(a: argparse.Namespace) -> None:
    from llara.data.preprocess import preprocess

    out = {s: Path(a.out) / f"{s}.parquet" for s in ("items", "train", "valid", "test")}
    counts = preprocess(a.dataset, a.source, a.raw, out, a.data, seed=a.seed, extra_sha256=a.extra_sha256)
    print(json.dumps(counts))


def build_parser() -> argparse.ArgumentParser:
    """The ``llara`` argument parser with one sub-command per stage."""
    p = argparse.ArgumentParser(prog="llara", description=__doc__)
    p.add_argument("--log", help="also write log messages to this file")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("download", help="fetch and verify the raw files of a dataset")
    d.add_argument("dataset", choices=["lastfm", "movielens", "steam"])
    d.add_argument("--source", default="llara", choices=["llara", "raw"])
    d.add_argument("--out", required=True, help="output folder, e.g. resources/raw/lastfm/llara")
    d.add_argument("--mirror", help="local mirror folder laid out like ../shared/datasets")
    d.add_argument("--extra-sha256", type=_json_arg, default={}, help="JSON {relpath: sha256} of extra pins")
    d.set_defaults(func=_download)

    pp = sub.add_parser("preprocess", help="raw files -> items/train/valid/test.parquet")
    pp.add_argument("dataset", choices=["lastfm", "movielens", "steam"])
    pp.add_argument("--source", default="llara", choices=["llara", "raw"])
    pp.add_argument("--raw", required=True, help="folder written by `llara download`")
    pp.add_argument("--out", required=True, help="output folder for the four Parquet files")
    pp.add_argument("--data", type=_json_arg, default={}, help="JSON of the config's data: section")
    pp.add_argument("--seed", type=int, default=42)
    pp.add_argument("--extra-sha256", type=_json_arg, default={})
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
    "report": ("llara.report.__main__", "the paper-style table and plots"),
}


def main(argv: list[str] | None = None) -> int:
    """Run one stage from the command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _FORWARD:
        import importlib

        rc = importlib.import_module(_FORWARD[argv[0]][0]).main(argv[1:])
        return int(rc or 0)
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
