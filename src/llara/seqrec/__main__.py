"""Command line: ``python -m llara.seqrec MODEL DATA_DIR OUT_DIR [--set key=value ...]``.

Reads DATA_DIR/{items,train,valid,test}.parquet and writes OUT_DIR/{model.safetensors,
item_embeddings.parquet,metrics.json}; hyper-parameters default to ``llara.seqrec.DEFAULTS[MODEL]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llara.cli_errors import add_debug_argument, stage_main
from llara.runlog import setup_logging
from llara.seqrec.train import run_seqrec
from llara.settings import check_settings


@stage_main("seqrec")
def main(argv: list[str]) -> None:
    """Train one backbone (see the module docstring); an expected error ends in one line, exit status 2."""
    p = argparse.ArgumentParser(prog="python -m llara.seqrec", description=__doc__.splitlines()[0])
    p.add_argument("model", help="sasrec | gru4rec | caser")
    p.add_argument("data_dir", type=Path, help="folder with items/train/valid/test.parquet")
    p.add_argument("out_dir", type=Path, help="folder for model.safetensors, item_embeddings.parquet, metrics.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="hyper-parameter override, value parsed as JSON (e.g. --set lr=0.002); checked by the config "
                        "schema as seqrec.MODEL.KEY (a whole-number float such as 64.0 counts as the integer 64)")
    p.add_argument("--seed", type=int, default=42, help="the training seed (config key seed: 0 to 2**32 - 1)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--log", type=Path, default=None, help="also log to this file")
    p.add_argument("--no-progress", action="store_true")
    add_debug_argument(p)
    a = p.parse_args(argv)
    check_settings({"seed": a.seed})  # the config's bounds (a seed torch cannot take fails here, naming the key)
    setup_logging(a.log)
    hparams = {}
    for kv in a.set:
        key, sep, value = kv.partition("=")
        if not sep:
            p.error(f"--set expects KEY=VALUE, got {kv!r}")
        try:
            hparams[key] = json.loads(value)
        except ValueError:  # not JSON (or an integer too long to convert): the schema reports it as a string
            hparams[key] = value
    d, o = a.data_dir, a.out_dir
    run_seqrec(a.model, items=d / "items.parquet", train=d / "train.parquet", valid=d / "valid.parquet",
               test=d / "test.parquet", out_model=o / "model.safetensors", out_embeddings=o / "item_embeddings.parquet",
               out_metrics=o / "metrics.json", hparams=hparams, seed=a.seed, threads=a.threads,
               dataset=d.parent.name, progress=not a.no_progress)


if __name__ == "__main__":
    main()
