"""The evaluate/report rules under Snakemake on tiny fixtures; config -> inputs/params mapping."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml

from conftest import REPO, make_tiny_dataset, run_snakemake
from test_evaluate_summary import check_summary
from llara.evaluate import workflow as evalwf
from llara.io import atomic_path
from llara.report import workflow as reportwf


def _config():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.setdefault("llm", {})["name"] = "tiny"
    return cfg


def test_settings_and_inputs_from_config():
    cfg = _config()
    s = evalwf.eval_settings(cfg, "llara")
    assert s["k"] == cfg["evaluate"]["candidate_sets"]["llara"] and s["representation"] == "hybrid"
    assert evalwf.eval_settings(cfg, "zeroshot")["representation"] == "plain"
    cfg.setdefault("tune", {}).setdefault("variants", {})["id_only"] = {"representation": "id"}
    assert evalwf.eval_settings(cfg, "ablation", "id_only")["representation"] == "id"  # as tuned
    assert evalwf.eval_settings(cfg, "ablation", "no_curriculum")["representation"] == "hybrid"
    cfg["evaluate"]["ablation_representation"] = {"id_only": "hybrid"}
    assert evalwf.eval_settings(cfg, "ablation", "id_only")["representation"] == "hybrid"  # explicit wins
    bad = copy.deepcopy(cfg)
    bad["evaluate"]["candidate_sets"]["llara"] = 99
    with pytest.raises(ValueError, match="evaluate.candidate_sets.llara = 99 exceeds data.candidate_sets"):
        evalwf.eval_settings(bad, "llara")
    i = evalwf.eval_inputs(cfg, "llara", "lastfm", "sasrec")
    assert i["adapter"] == "results/lastfm/sasrec/llara/adapter" and i["base"] == "resources/llm/tiny"
    assert "adapter" not in evalwf.eval_inputs(cfg, "zeroshot", "lastfm")
    a = evalwf.eval_inputs(cfg, "ablation", "lastfm", "sasrec", "text_only")
    assert a["projector"] == "results/lastfm/sasrec/ablations/text_only/llara/projector.safetensors"
    with pytest.raises(ValueError, match="dataset 'amazon' is not configured"):
        evalwf.eval_inputs(cfg, "llara", "amazon", "sasrec")
    with pytest.raises(ValueError, match="llm.name is missing"):
        evalwf.llm_name({})
    entries = reportwf.report_entries(cfg)
    labels = {(e["dataset"], e["label"]) for e in entries}
    assert ("lastfm", "LLaRA(SASRec)") in labels and ("movielens", "GRU4Rec") in labels
    assert ("lastfm", "Zero-shot tiny") in labels
    assert "results/lastfm/sasrec/llara/train_log.csv" in reportwf.report_inputs(cfg)


@pytest.mark.slow
def test_rules_end_to_end_on_tiny_fixtures(tmp_path):
    """evaluate, evaluate_zeroshot, evaluate_seqrec and report through Snakemake; an eval-only config
    change reruns only the evaluations and the report."""
    pytest.importorskip("llara.llm.inference")
    seqrec = pytest.importorskip("llara.seqrec")
    from test_evaluate_llm import build_tiny_llm

    wd = tmp_path / "wd"
    data = make_tiny_dataset(wd / "results" / "lastfm" / "data")
    tiny = build_tiny_llm(tmp_path / "llm", data)
    # the folder outputs as their stages write them (with the marker), else the Snakefile refuses to run
    with atomic_path(wd / "resources" / "llm" / "tiny", directory=True, stage="base_llm") as tmp:
        shutil.copytree(tiny["base"], tmp, dirs_exist_ok=True)
    llara_dir = wd / "results" / "lastfm" / "sasrec" / "llara"
    with atomic_path(llara_dir / "adapter", directory=True) as tmp:
        shutil.copytree(tiny["adapter"], tmp, dirs_exist_ok=True)
    shutil.copy(tiny["projector"], llara_dir / "projector.safetensors")
    (llara_dir / "train_log.csv").write_text("step,loss,lr,hybrid_share,tokens_per_s\n1,3.0,0.0007,0.0,100\n2,2.5,0.0007,1.0,100\n")
    sr = wd / "results" / "lastfm" / "sasrec" / "seqrec"
    seqrec.run_seqrec("sasrec", items=data / "items.parquet", train=data / "train.parquet", valid=data / "valid.parquet",
                      test=data / "test.parquet", out_model=sr / "model.safetensors",
                      out_embeddings=sr / "item_embeddings.parquet", out_metrics=sr / "metrics.json",
                      hparams={"hidden_size": 16, "max_epochs": 2}, seed=0, progress=False)
    cfg = {"llm": {"name": "tiny"},
           "evaluate": {"max_rows": 3, "max_new_tokens": 4, "splits": ["test"], "bootstrap": {"n_resamples": 50}},
           "report": {"datasets": ["lastfm"], "baselines": ["sasrec"], "llara": ["sasrec"]}}
    cfg_file = tmp_path / "override.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    allowed = ["--allowed-rules", "prompts", "evaluate", "evaluate_zeroshot", "evaluate_seqrec",
               "evaluate_reference_popularity", "evaluate_reference_last_item", "report"]
    args = ["--configfile", str(REPO / "config" / "config.yaml"), str(cfg_file), *allowed]
    # targets before the nargs options (run_snakemake appends its targets after them)
    proc = run_snakemake(wd, [], "results/report/table.md", "results/lastfm/sasrec/metrics.json", *args)
    m = json.loads((wd / "results" / "lastfm" / "sasrec" / "metrics.json").read_text())
    assert m["splits"]["test"]["n"] == 3 and {"generate", "rank"} <= set(m["splits"]["test"])
    # the evaluate job writes summary.md beside metrics.json, with its numbers and the backbone's, and prints it
    summary = (wd / "results" / "lastfm" / "sasrec" / "summary.md").read_text()
    check_summary(summary, m, [json.loads((sr / "metrics.json").read_text())])
    assert "- metrics: results/lastfm/sasrec/metrics.json" in summary and "results/report/table.md" in summary
    assert summary in proc.stdout + proc.stderr
    md = (wd / "results" / "report" / "table.md").read_text()
    assert "LLaRA(SASRec)" in md and "Zero-shot tiny" in md and "0.4508" in md
    assert "Popularity (train targets)" in md and "Last-item similarity (SASRec emb.)" in md
    for f in ("table.csv", "paired.csv", "hr1_ci.png", "training.png"):
        assert (wd / "results" / "report" / f).stat().st_size > 0
    assert (wd / "logs" / "evaluate" / "lastfm_sasrec.log").exists()
    # an evaluation-only change reruns the evaluations and the report, not the seqrec ranker
    cfg["evaluate"]["max_new_tokens"] = 5
    cfg_file.write_text(yaml.safe_dump(cfg))
    dry = run_snakemake(wd, [], "results/report/table.md", "-n", *args)
    out = dry.stdout + dry.stderr
    for rule in ("evaluate", "evaluate_zeroshot", "report"):
        assert f"rule {rule}:" in out, out[-3000:]
    assert "rule evaluate_seqrec:" not in out and "rule seqrec_train:" not in out and "rule evaluate_reference" not in out
