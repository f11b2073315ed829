"""Command line: ``python -m llara.evaluate BASE_DIR DATA_DIR OUT_DIR --dataset D [options]``.

Evaluates the base LLM at BASE_DIR (zero-shot), or a tuned LLaRA model when ``--adapter`` and
``--projector`` are given, on DATA_DIR/{items,test,valid}.parquet; writes OUT_DIR/predictions.parquet
and OUT_DIR/metrics.json (layout: docs/metrics.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llara.cli_errors import add_debug_argument, stage_main
from llara.runlog import setup_logging

DEFAULTS = {"splits": ["test", "valid"], "modes": ["generate", "rank"], "k": 1, "max_rows": None, "batch_size": 32,
            "rank_batch_size": 4, "max_new_tokens": 32, "dtype": "float32", "first_line_only": True,
            "representation": "hybrid", "bootstrap": {"n_resamples": 1000, "alpha": 0.05}}


@stage_main("evaluate")
def main(argv: list[str]) -> None:
    """Evaluate one model (see the module docstring); an expected error ends in one line, exit status 2."""
    p = argparse.ArgumentParser(prog="python -m llara.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("base_dir", type=Path, help="Hugging Face folder of the base LLM (resources/llm/NAME)")
    p.add_argument("data_dir", type=Path, help="folder with items.parquet and the eval splits")
    p.add_argument("out_dir", type=Path, help="folder for predictions.parquet and metrics.json")
    p.add_argument("--dataset", required=True, help="dataset name (lastfm, movielens, steam or your own)")
    p.add_argument("--templates", type=Path, default=None,
                   help="prompt templates file (the dataset's results/{dataset}/prompts.yaml); default: the packaged "
                        "templates for a built-in dataset, the tuned model's stored templates")
    p.add_argument("--method", default=None, help="llara | zeroshot | ablation (default: from --adapter)")
    p.add_argument("--seqrec", default=None)
    p.add_argument("--variant", default=None)
    p.add_argument("--adapter", type=Path, default=None, help="peft adapter folder of the tuned model")
    p.add_argument("--projector", type=Path, default=None, help="projector.safetensors of the tuned model")
    p.add_argument("--item-embeddings", type=Path, default=None, help="seqrec item_embeddings.parquet")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"evaluation setting (JSON value), keys {sorted(DEFAULTS)}")
    p.add_argument("--seed", type=int, default=42, help="bootstrap seed")
    p.add_argument("--train-seed", type=int, default=None, help="the seed the tuned model was trained with (recorded)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--log", type=Path, default=None)
    add_debug_argument(p)
    a = p.parse_args(argv)
    setup_logging(a.log)
    settings = json.loads(json.dumps(DEFAULTS))
    for kv in a.set:
        key, sep, value = kv.partition("=")
        if not sep or key not in settings:
            p.error(f"--set expects KEY=VALUE with KEY in {sorted(settings)}, got {kv!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    tuned = a.adapter is not None
    if not tuned:
        settings["representation"] = "plain"
    from llara.evaluate.run import evaluate_from_settings

    d = a.data_dir
    evaluate_from_settings(settings, base_dir=a.base_dir, items_path=d / "items.parquet",
                           split_paths={s: d / f"{s}.parquet" for s in settings["splits"]},
                           predictions_path=a.out_dir / "predictions.parquet", metrics_path=a.out_dir / "metrics.json",
                           dataset=a.dataset, method=a.method or ("llara" if tuned else "zeroshot"), seqrec=a.seqrec,
                           variant=a.variant, adapter_dir=a.adapter, projector_path=a.projector,
                           item_embeddings_path=a.item_embeddings, seed=a.seed, threads=a.threads,
                           templates_path=a.templates, train_seed=a.train_seed if tuned else None)


if __name__ == "__main__":
    main()
