"""benchmarks/realdata_curve.py without an LLM: recipes, per-point settings, the settings record, the CSV merge."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import realdata_curve as rc  # noqa: E402


def _config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_recipe_file_is_a_valid_tune_slice():
    """config/recipes/small-llm.yaml (the GPU call's default) holds tune keys the schema accepts, and the variants
    still apply on top of it: text-only stays text-only without curriculum."""
    from llara.llm.train import TuneConfig

    recipe = rc.load_tune(str(REPO / "config" / "recipes" / "small-llm.yaml"))
    a = rc.parser().parse_args(["--tune", str(REPO / "config" / "recipes" / "small-llm.yaml")])
    assert a.tune == recipe and recipe["answer_format"] == "spaced"
    hybrid = TuneConfig.from_dict(rc.point_settings(_config(), "hybrid", 3200, a))
    text = TuneConfig.from_dict(rc.point_settings(_config(), "text_only", 3200, a))
    assert (hybrid.lr, hybrid.curriculum, hybrid.max_train_samples, hybrid.probe_every) == (2e-3, "hybrid_only", 3200, 30)
    assert (text.representation, text.curriculum, text.lr) == ("text", "none", 2e-3)
    assert hybrid.token_position == "before"  # the change that made the hybrid model learn (docs/real-data.md)


def test_text_only_points_shared_only_across_hybrid_prompt_keys(tmp_path):
    """``--text-from R`` pairs with R's text-only point when the recipes differ only in keys that change hybrid
    prompts alone (token_position); any other difference is refused, naming the key."""
    base = {"lr": 2e-3, "curriculum": "hybrid_only"}
    a = rc.parser().parse_args(["--out", str(tmp_path), "--recipe", "after", "--tune", json.dumps(base)])
    point = tmp_path / "after" / "text_only" / "n160"
    rc.check_recorded(point / "settings.json", rc.point_settings(_config(), "text_only", 160, a))
    before = rc.parser().parse_args(["--out", str(tmp_path), "--recipe", "before", "--text-from", "after",
                                     "--tune", json.dumps({**base, "token_position": "before"})])
    assert rc.text_point(_config(), 160, before) == point
    assert rc.text_point(_config(), 160, a) == point  # its own recipe's point without --text-from
    other = rc.parser().parse_args(["--out", str(tmp_path), "--recipe", "x", "--text-from", "after",
                                    "--tune", json.dumps({**base, "lr": 1e-3})])
    with pytest.raises(SystemExit, match=r"trained with other settings \(lr\)"):
        rc.text_point(_config(), 160, other)
    with pytest.raises(SystemExit, match="no text-only point"):
        rc.text_point(_config(), 320, before)
    assert rc.load_tune('{"lr": 1e-3}') == {"lr": 1e-3}
    with pytest.raises(argparse.ArgumentTypeError, match="neither a JSON object nor a YAML file"):
        rc.load_tune("no/such/recipe.yaml")


def test_point_settings_recorded_and_a_changed_recipe_refused(tmp_path):
    want = {"lr": 2e-3, "curriculum": "hybrid_only"}
    rc.check_recorded(tmp_path / "p" / "settings.json", want)
    rc.check_recorded(tmp_path / "p" / "settings.json", dict(want))  # the same: fine
    with pytest.raises(SystemExit, match=r"lr: 0.002 there, 0.001 now"):
        rc.check_recorded(tmp_path / "p" / "settings.json", {**want, "lr": 1e-3})
    assert json.loads((tmp_path / "p" / "settings.json").read_text()) == want
    # a key added to the tune settings after a point was recorded counts as its default there
    rc.check_recorded(tmp_path / "p" / "settings.json", {**want, "token_position": "after"})
    with pytest.raises(SystemExit, match=r"token_position: 'after' there, 'before' now"):
        rc.check_recorded(tmp_path / "p" / "settings.json", {**want, "token_position": "before"})


def test_csv_merges_points_of_every_recipe(tmp_path):
    path = tmp_path / "curve.csv"

    def row(recipe, variant, n, hr1):
        return {"recipe": recipe, "variant": variant, "train_samples": n, "hr1_mean": hr1, "hr1_ci_low": hr1 - 0.01,
                "hr1_ci_high": hr1 + 0.01, "paired_vs_text": None}

    rc.write_csv([row("a", "hybrid", 2400, 0.04), row("a", "text_only", 2400, 0.05)], path)
    out = rc.write_csv([row("b", "hybrid", 3200, 0.06), row("a", "hybrid", 2400, 0.07)], path)  # a re-measured point
    assert [(r["recipe"], r["variant"], int(r["train_samples"]), r["hr1_mean"]) for r in out] == [
        ("a", "hybrid", 2400, 0.07), ("a", "text_only", 2400, 0.05), ("b", "hybrid", 3200, 0.06)]
    back = rc.read_csv(path)
    # rows without a token_position were measured in the authors' order
    assert back == [{**{k: r.get(k) for k in rc.CSV_COLUMNS}, "token_position": "after"} for r in out]
    assert path.read_text().splitlines()[0].startswith("recipe,variant,train_samples,steps,lr,projector_lr")
    rc.plot(back, {"sasrec": 0.33, "last_item": 0.25}, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_newcomer_config_holds_the_recipe():
    """config/examples/lastfm-learns.yaml (the documented run that shows LLaRA learning on 2 CPU cores) is a valid
    overlay of config/config.yaml whose tune keys include every key of the recipe file with its value."""
    import copy

    from llara.settings import validate_config

    overlay = yaml.safe_load((REPO / "config" / "examples" / "lastfm-learns.yaml").read_text())
    cfg = copy.deepcopy(_config())
    for section, keys in overlay.items():
        cfg[section] = {**cfg[section], **keys}
    validate_config(cfg)
    recipe = rc.load_tune(str(REPO / "config" / "recipes" / "small-llm.yaml"))
    assert {k: cfg["tune"][k] for k in recipe} == recipe
    assert cfg["tune"]["max_train_samples"] >= 1600 and cfg["evaluate"]["candidate_sets"]["llara"] == 5
