"""Config seed / seeds -> training seeds, per-seed folders, and the rule inputs that follow them."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import REPO
from llara import seeds
from llara.evaluate import workflow as evalwf
from llara.llm import workflow as llmwf
from llara.report import workflow as reportwf


def _config(**top):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["llm"]["name"] = "tiny"
    cfg.update(top)
    return cfg


def test_training_seeds_from_config():
    assert seeds.train_seeds({"seed": 42}) == [42]
    assert seeds.train_seeds({"seed": 42, "seeds": None}) == [42]
    assert seeds.train_seeds({"seed": 42, "seeds": [7]}) == [7]
    assert seeds.train_seeds({"seed": 42, "seeds": ["42", "43"]}) == [42, 43]  # --config 'seeds=[42,43]'
    assert not seeds.is_sweep({"seed": 1, "seeds": [7]}) and seeds.is_sweep({"seed": 1, "seeds": [1, 2]})
    assert seeds.legacy_seed({"seed": 1, "seeds": [7]}) == 7  # one training seed: the usual folders hold it
    assert seeds.legacy_seed({"seed": 1, "seeds": [7, 1]}) == 1  # a sweep: the data seed's
    for bad, msg in (([], "non-empty list"), ([1, 1], "twice"), ([-1], "not non-negative"), (["x"], "not non-negative"),
                     (3, "non-empty list")):
        with pytest.raises(ValueError, match=f"config key seeds.*{msg}"):
            seeds.train_seeds({"seed": 1, "seeds": bad})
    with pytest.raises(ValueError, match="config key seed must be an integer"):
        seeds.data_seed({})


def test_seed_folders():
    one = {"seed": 42}
    assert seeds.train_root(one, "lastfm", "sasrec", 42) == seeds.eval_root(one, "lastfm", "sasrec") == "results/lastfm/sasrec"
    sweep = {"seed": 42, "seeds": [42, 43]}
    # the data seed's training stays where a one-seed run put it; every other seed has its folder
    assert seeds.train_root(sweep, "lastfm", "sasrec", 42) == "results/lastfm/sasrec"
    assert seeds.train_root(sweep, "lastfm", "sasrec", 43) == "results/lastfm/sasrec/seeds/43"
    # evaluations are per seed in a sweep (the method folder holds their aggregate)
    assert seeds.eval_root(sweep, "lastfm", "sasrec", 42) == "results/lastfm/sasrec/seeds/42"
    with pytest.raises(ValueError, match="training seed 44 is not among config seeds"):
        seeds.train_root(sweep, "lastfm", "sasrec", 44)
    with pytest.raises(ValueError, match="several seeds: say which one"):
        seeds.eval_root(sweep, "lastfm", "sasrec")


def test_rule_inputs_follow_the_seed():
    one = _config()
    sweep = _config(seeds=[42, 43])
    assert evalwf.eval_inputs(one, "llara", "lastfm", "sasrec")["adapter"] == "results/lastfm/sasrec/llara/adapter"
    i = evalwf.eval_inputs(sweep, "llara", "lastfm", "sasrec", seed=43)
    assert i["adapter"] == "results/lastfm/sasrec/seeds/43/llara/adapter"
    assert i["item_embeddings"] == "results/lastfm/sasrec/seeds/43/seqrec/item_embeddings.parquet"
    a = evalwf.eval_inputs(sweep, "ablation", "lastfm", "sasrec", "id_only", seed=42)
    assert a["projector"] == "results/lastfm/sasrec/ablations/id_only/llara/projector.safetensors"
    assert evalwf.seqrec_ranker_inputs(sweep, "lastfm", "gru4rec", 43)["model"] == \
        "results/lastfm/gru4rec/seeds/43/seqrec/model.safetensors"
    t = llmwf.tune_inputs(sweep, "lastfm", "sasrec", seed=43)
    assert t["embeddings"] == "results/lastfm/sasrec/seeds/43/seqrec/item_embeddings.parquet"
    assert llmwf.tune_settings(sweep, "lastfm", seed=43)["seed"] == 43
    assert llmwf.tune_settings(one, "lastfm")["seed"] == 42  # one seed: the tune params are unchanged
    runs = evalwf.seed_runs(sweep, "seqrec", "lastfm", "caser")
    assert [r["seed"] for r in runs] == [42, 43]
    assert runs[1]["predictions"] == "results/lastfm/caser/seeds/43/seqrec/ranker_predictions.parquet"
    with pytest.raises(ValueError, match="unknown trained method"):
        evalwf.seed_runs(sweep, "zeroshot", "lastfm", "sasrec")


def test_report_lists_every_seed():
    cfg = _config()
    cfg["report"].update(datasets=["lastfm"], ablations=["id_only"])
    single = reportwf.report_inputs(cfg)
    assert "results/lastfm/sasrec/predictions.parquet" in single and "results/lastfm/sasrec/metrics.json" in single
    assert not any("/seeds/" in f for f in single)
    sweep = copy.deepcopy(cfg)
    sweep["seeds"] = [42, 7]
    files = reportwf.report_inputs(sweep)
    for f in ("results/lastfm/sasrec/metrics.json",                      # LLaRA's aggregate over seeds
              "results/lastfm/caser/seqrec/ranker_metrics.json",         # a baseline's aggregate
              "results/lastfm/sasrec/ablations/id_only/metrics.json",    # an ablation's aggregate
              "results/lastfm/sasrec/seeds/42/predictions.parquet", "results/lastfm/sasrec/seeds/7/predictions.parquet",
              "results/lastfm/sasrec/llara/train_log.csv", "results/lastfm/sasrec/seeds/7/llara/train_log.csv",
              "results/lastfm/zeroshot/predictions.parquet"):            # untrained: one run
        assert f in files, f
    assert "results/lastfm/sasrec/predictions.parquet" not in files
    llara = next(e for e in reportwf.report_entries(sweep) if e["kind"] == "llara")
    assert [r["seed"] for r in llara["runs"]] == [42, 7]
