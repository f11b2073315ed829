"""The documented own-data example (config/examples/own-data.yaml) end to end through Snakemake on a tiny
fixture in the same file format: data -> SASRec -> tune -> evaluate (+ zero-shot) -> report, by the
dataset's own name; the user's files are only read; changing the prompt wording reruns no data stage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake

from llara.io import sha256_file

pytestmark = pytest.mark.slow

NAME = "recbole_ml100k"
TARGETS = [f"results/{NAME}/sasrec/metrics.json", "results/report/table.md"]


def write_atomic_files(folder: Path, n_users: int = 30, n_items: int = 40) -> tuple[Path, Path]:
    """A tiny log and item table in RecBole's atomic-file format (tabs, typed column names), as the example reads."""
    folder.mkdir(parents=True)
    inter, items = folder / "tiny.inter", folder / "tiny.item"
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(1, n_users + 1):
        for t in range(12):
            rows.append(f"{u}\t{(u * 7 + t * 3) % n_items + 1}\t{1 + t % 5}\t{880000000 + t * 10 + u}")
    inter.write_text("\n".join(rows) + "\n", encoding="utf-8")
    genres = ["Comedy", "Drama", "Thriller", "Animation"]
    items.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
        f"{i}\tFilm {i} of the {genres[i % 4]} Year\t199{i % 10}\t{genres[i % 4]}\n" for i in range(1, n_items + 1)),
        encoding="utf-8")
    return inter, items


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from llara.llm.testing import make_tiny_llama

    root = tmp_path_factory.mktemp("own")
    inter, items = write_atomic_files(root / "user_data")  # outside the working directory
    titles = [line.split("\t")[1] for line in items.read_text().splitlines()[1:]]
    llm = make_tiny_llama(root / "tiny-llama", titles, vocab_size=320, hidden=32, layers=2)
    example = yaml.safe_load((REPO / "config" / "examples" / "own-data.yaml").read_text())
    entry = example["datasets"][NAME]
    entry.update(interactions=str(inter), items=str(items), sha256={"interactions": sha256_file(inter), "items": sha256_file(items)})
    cfg = {
        **example,
        "data": {"n_candidates": 10, "candidate_sets": 2},
        "seqrec": {"sasrec": {"hidden_size": 16, "max_epochs": 2}},
        "llm": {"name": "tiny", "source": "local", "path": str(llm)},
        "tune": {"max_train_samples": 16, "micro_batch_size": 4, "effective_batch_size": 8, "checkpoint_every": 1,
                 "precision": "fp32"},
        "evaluate": {"max_rows": 3, "max_new_tokens": 4, "bootstrap": {"n_resamples": 50}},
        "report": {**example["report"], "baselines": ["sasrec"], "llara": ["sasrec"], "zeroshot": True},
    }
    cfg_file = root / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    return {"root": root, "cfg": cfg, "cfg_file": cfg_file, "user_data": root / "user_data"}


def _state(folder: Path) -> dict:
    return {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_own_dataset_through_the_whole_dag(setup):
    wd = setup["root"] / "wd"
    before = _state(setup["user_data"])
    run_snakemake(wd, [], *TARGETS, "--configfile", str(setup["cfg_file"]))
    assert _state(setup["user_data"]) == before  # read, never written, moved or deleted

    metrics = json.loads((wd / f"results/{NAME}/sasrec/metrics.json").read_text())
    test = metrics["splits"]["test"]
    assert test["n"] == 3 and {"generate", "rank"} <= set(test)
    assert 0.0 <= test["generate"]["mean"]["valid_ratio"] <= 1.0
    zeroshot = json.loads((wd / f"results/{NAME}/zeroshot/metrics.json").read_text())
    assert "templates" in zeroshot["provenance"]["inputs_sha256"]
    prompts = (wd / f"results/{NAME}/prompts.yaml").read_text()
    assert "This user has watched {history} in the previous. Please predict the next movie this user will watch." in prompts
    assert "The movie title candidates are {candidates}" in prompts  # the generic templates, not the authors' movie ones
    items = (wd / f"results/{NAME}/data/items.parquet")
    import polars as pl

    assert pl.read_parquet(items)["title"][0] == "Film 1 of the Drama Year"

    md = (wd / "results/report/table.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert f"{NAME} HR@1" in header and "LLaRA(SASRec)" in md and "Zero-shot tiny" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert not any(" · " in line for line in table)  # no paper numbers for a dataset the paper never saw
    assert not re.search(r"0\.2367|0\.4508", md)

    # new prompt wording: prompts, tuning, evaluations and the report rerun; the data and SASRec stay
    cfg = json.loads(json.dumps(setup["cfg"]))
    cfg["datasets"][NAME]["domain"] = {"noun": "film", "verb": "see"}
    setup["cfg_file"].write_text(yaml.safe_dump(cfg))
    dry = run_snakemake(wd, [], *TARGETS, "--configfile", str(setup["cfg_file"]), "-n")
    jobs = set(re.findall(r"^rule (\w+):", dry.stdout + dry.stderr, flags=re.M))
    assert {"prompts", "tune", "evaluate", "evaluate_zeroshot", "report"} <= jobs, jobs
    assert not {"preprocess", "seqrec_train"} & jobs, jobs
    setup["cfg_file"].write_text(yaml.safe_dump(setup["cfg"]))


def test_bad_own_config_stops_before_any_job(setup, tmp_path):
    cfg = json.loads(json.dumps(setup["cfg"]))
    cfg["datasets"][NAME].pop("domain")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path / "wd", [], *TARGETS, "--configfile", str(bad), "-n", check=False)
    assert proc.returncode != 0
    assert f"config datasets.{NAME}.domain is missing" in proc.stdout + proc.stderr
    assert not (tmp_path / "wd" / "results").exists()
