"""How much SASRec's item embeddings separate the learnability data's hidden genres, over data and SASRec seeds.

    .venv/bin/python benchmarks/sasrec_separation.py [--data-seeds 42 43] [--sasrec-seeds 42 43 44 45 46 47]
        [--out results/sasrec_separation] [--threads 1] [learnability data options: --items 400 --genres 8 ...]

For each data seed it writes the learnability benchmark's synthetic data (its defaults, ``--data-seed``) and
trains SASRec on it once per SASRec seed with the pipeline's seqrec stage, then prints one table: the epoch the
stage kept (``best_epoch``), the epochs it ran, the kept epoch's valid candidate cross-entropy and
``sasrec_genre_separation`` (spread of the genre centroids over the spread within a genre). SASRec ranks every
valid row right within two or three epochs on this data, so which epoch is kept decides how clearly the
embeddings carry the genres (before ties went to the lower valid cross-entropy, 3 of 12 fits kept epoch 2;
docs/learnability.md). ~40 s per SASRec on one thread; every output is cached under ``--out``, and
``data<seed>/settings.json`` there stops a rerun with other data options, naming them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def survey(out: Path, data_seeds: list[int], sasrec_seeds: list[int], threads: int,
           data_args: list[str] = ()) -> list[dict[str, Any]]:
    """Train (or reuse) SASRec for every data seed x SASRec seed; one row of figures each. ``data_args``: the
    learnability benchmark's data options (``--items``, ``--genres``, ``--train-rows``, ``--seqrec-epochs``, ...),
    checked by its parser."""
    import learnability

    rows = []
    for ds in data_seeds:
        a = learnability.parser().parse_args([*data_args, "--data-seed", str(ds), "--threads", str(threads)])
        folder = out / f"data{ds}"
        learnability.check_settings(folder, a)
        data = learnability.build_data(folder, a)
        for ss in sasrec_seeds:
            sas = learnability.build_sasrec(folder, data, a, seed=ss, name=f"sasrec{ss}")
            training = json.loads((sas / "metrics.json").read_text())["training"]
            best = training["epochs"][training["best_epoch"] - 1]
            rows.append({"data_seed": ds, "sasrec_seed": ss, "best_epoch": training["best_epoch"],
                         "epochs_run": training["epochs_run"], "valid_hr@1": best["valid_hr@1"],
                         "valid_candidate_ce": best.get("valid_candidate_ce"), "loss": best["loss"],
                         "separation": round(learnability.genre_separation(data / "items.parquet",
                                                                           sas / "item_embeddings.parquet"), 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    from llara.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[42, 43])
    ap.add_argument("--sasrec-seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46, 47])
    ap.add_argument("--out", type=Path, default=REPO / "results" / "sasrec_separation")
    ap.add_argument("--threads", type=int, default=1)
    a, data_args = ap.parse_known_args(argv)
    rows = survey(a.out, a.data_seeds, a.sasrec_seeds, a.threads, data_args)
    write_json(rows, a.out / "separation.json")
    print("| data seed | SASRec seed | kept epoch | epochs run | train loss | valid HR@1 | valid candidate CE | "
          "genre separation |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ce = "" if r["valid_candidate_ce"] is None else f"{r['valid_candidate_ce']:.4f}"
        print(f"| {r['data_seed']} | {r['sasrec_seed']} | {r['best_epoch']} | {r['epochs_run']} | {r['loss']:.3f} | "
              f"{r['valid_hr@1']:.3f} | {ce} | {r['separation']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.exit(main())
