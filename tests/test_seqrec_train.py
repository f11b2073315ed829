"""Seqrec training and the stage's artifacts on the tiny learnable fixture; bad input; config consistency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import llara.seqrec.train as train_mod
from llara.data.schema import TRAIN
from llara.seqrec import (DEFAULTS, MODELS, build_model, candidate_scores, fit, item_embeddings_schema, load_model,
                          load_n_items, load_split, read_item_embeddings, run_seqrec)

REPO = Path(__file__).resolve().parents[1]
FAST = {"hidden_size": 32, "max_epochs": 8, "patience": 8, "batch_size": 64, "lr": 0.005, "dropout": 0.1}


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are small: one thread is several times faster than two on a loaded 2-core machine."""
    torch.set_num_threads(1)


def _run(name: str, data: Path, out: Path, **kw):
    files = {s: data / f"{s}.parquet" for s in ("items", "train", "valid", "test")}
    outs = {"out_model": out / "model.safetensors", "out_embeddings": out / "item_embeddings.parquet",
            "out_metrics": out / "metrics.json"}
    args = {"hparams": FAST, "seed": 3, "progress": False, **kw}
    return run_seqrec(name, **files, **outs, **args), outs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_loss_decreases_and_model_learns(tiny_data, name):
    n = load_n_items(tiny_data / "items.parquet")
    train = load_split(tiny_data / "train.parquet", "train", n, 10)
    valid = load_split(tiny_data / "valid.parquet", "valid", n, 10)
    torch.manual_seed(0)
    model = build_model(name, n, FAST)
    summary = fit(model, train, valid, lr=0.005, batch_size=64, max_epochs=8, patience=8, seed=0, progress=False)
    losses = [e["loss"] for e in summary["epochs"]]
    assert losses[-1] < 0.7 * losses[0], losses
    assert summary["best_valid_hr@1"] > 0.3  # chance is 1/10 on the fixture's 10 candidates
    assert summary["train_time_s"] > 0 and summary["sequences_per_s"] > 0


def test_stage_outputs_roundtrip_and_determinism(tiny_data, tmp_path):
    metrics, outs = _run("sasrec", tiny_data, tmp_path / "a")
    n_items = load_n_items(tiny_data / "items.parquet")

    # item_embeddings.parquet: one row per item, no padding row, the declared schema
    table = pq.read_table(outs["out_embeddings"])
    assert table.schema == item_embeddings_schema(FAST["hidden_size"])
    assert table.num_rows == n_items
    ids, emb = read_item_embeddings(outs["out_embeddings"])
    assert ids.tolist() == list(range(n_items)) and emb.shape == (n_items, FAST["hidden_size"])

    # safetensors round trip: same scores, same embeddings
    model = load_model(outs["out_model"])
    valid = load_split(tiny_data / "valid.parquet", "valid", n_items, 10)
    np.testing.assert_array_equal(emb, model.item_embeddings().detach().numpy())
    assert model.hparams()["hidden_size"] == FAST["hidden_size"]
    again = load_model(outs["out_model"])
    np.testing.assert_array_equal(candidate_scores(model, valid), candidate_scores(again, valid))

    # metrics.json: per set + mean/min/max, CIs, provenance
    saved = json.loads(outs["out_metrics"].read_text())
    for split in ("valid", "test"):
        r = saved[split]
        assert r["valid_ratio"] == 1.0 and r["n_candidate_sets"] == 3 and len(r["per_set"]) == 3
        assert set(r["per_set"][0]) == {"hr@1", "hr@5", "ndcg@5"}
        assert r["min"]["hr@1"] <= r["mean"]["hr@1"] <= r["max"]["hr@1"]
        lo, hi = r["hr@1_ci95_set0"]
        assert lo <= r["per_set"][0]["hr@1"] <= hi
    assert saved["test"]["per_set"][0]["hr@1"] > 0.3
    prov = saved["provenance"]
    assert prov["seed"] == 3 and prov["config"]["hparams"]["hidden_size"] == FAST["hidden_size"]
    assert set(prov["inputs_sha256"]) == {"items", "train", "valid", "test"}
    assert saved["training"]["train_time_s"] > 0

    # same seed on CPU -> same metrics and weights
    metrics2, outs2 = _run("sasrec", tiny_data, tmp_path / "b")
    assert metrics2["valid"] == metrics["valid"] and metrics2["test"] == metrics["test"]
    np.testing.assert_array_equal(read_item_embeddings(outs2["out_embeddings"])[1], emb)


def test_cli(tiny_data, tmp_path):
    from llara.seqrec.__main__ import main

    main(["gru4rec", str(tiny_data), str(tmp_path / "out"), "--set", "max_epochs=2", "--set", "hidden_size=8",
          "--no-progress", "--threads", "1"])
    assert read_item_embeddings(tmp_path / "out" / "item_embeddings.parquet")[1].shape == (40, 8)


# ------------------------------------------------------------------------------------------ selection
def test_candidate_cross_entropy_is_softmax_cross_entropy_over_each_set():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(6, 3, 5))
    targets = rng.integers(0, 20, size=6)
    cands = np.stack([np.stack([rng.permutation(np.r_[t, rng.permutation(np.setdiff1d(np.arange(20), [t]))[:4]])
                                for _ in range(3)]) for t in targets])  # each set: the target and 4 others
    want = np.mean([torch.nn.functional.cross_entropy(torch.tensor(scores[:, s]), torch.tensor(
        (cands[:, s] == targets[:, None]).argmax(1))).item() for s in range(3)])
    assert train_mod.candidate_cross_entropy(scores, cands, targets) == pytest.approx(want, rel=1e-9)
    cands[4, 2] = 99  # row 4's target gone from set 2
    with pytest.raises(ValueError, match="target is not among its candidates"):
        train_mod.candidate_cross_entropy(scores, cands, targets)


def test_saturated_valid_hr1_keeps_the_best_fit_epoch_not_the_first_at_the_ceiling(tiny_data, monkeypatch):
    """On an easy valid split HR@1 reaches 1.0 early; the first epoch there is under-trained (on the
    learnability data its item embeddings separated the genres half as well as the last epoch's). Ties go to
    the lower valid candidate cross-entropy, then to the earlier epoch; the weights kept are that epoch's."""
    keys = iter([(0.5, 0.5, -2.0), (1.0, 1.0, -1.5), (1.0, 1.0, -0.9), (1.0, 0.98, -0.1), (1.0, 1.0, -0.9),
                 (1.0, 1.0, -1.0)])
    snapshots = []

    def scripted(model, valid):
        snapshots.append(model.item_embeddings().detach().clone())
        return next(keys)

    monkeypatch.setattr(train_mod, "valid_selection_key", scripted)
    n = load_n_items(tiny_data / "items.parquet")
    train = load_split(tiny_data / "train.parquet", "train", n, 10)
    valid = load_split(tiny_data / "valid.parquet", "valid", n, 10)
    model = build_model("gru4rec", n, FAST)
    summary = fit(model, train, valid, lr=0.005, batch_size=64, max_epochs=6, patience=2, seed=0, progress=False)
    assert summary["best_epoch"] == 3 and summary["epochs_run"] == 5  # epochs 4 and 5 do not beat it: stop
    assert [e["valid_candidate_ce"] for e in summary["epochs"]] == [2.0, 1.5, 0.9, 0.1, 0.9]
    torch.testing.assert_close(model.item_embeddings(), snapshots[2])


def test_selection_key_cross_entropy_falls_as_the_fit_improves(tiny_data):
    n = load_n_items(tiny_data / "items.parquet")
    train = load_split(tiny_data / "train.parquet", "train", n, 10)
    valid = load_split(tiny_data / "valid.parquet", "valid", n, 10)
    torch.manual_seed(0)
    model = build_model("sasrec", n, FAST)
    before = train_mod.valid_selection_key(model, valid)
    summary = fit(model, train, valid, lr=0.005, batch_size=64, max_epochs=8, patience=8, seed=0, progress=False)
    after = train_mod.valid_selection_key(model, valid)
    assert after[2] == pytest.approx(-summary["epochs"][summary["best_epoch"] - 1]["valid_candidate_ce"], abs=1e-6)
    assert -after[2] < -before[2] < np.log(10) + 1  # the fit lowers it; a random model sits near ln(10)


# --------------------------------------------------------------------------------------------- bad input
def test_empty_split_names_the_file(tiny_data, tmp_path):
    empty = pa.table({"user_id": pa.array([], pa.int64()), "history": pa.array([], pa.list_(pa.int64())),
                      "target": pa.array([], pa.int64())}, schema=TRAIN)
    pq.write_table(empty, tiny_data / "train.parquet")
    with pytest.raises(ValueError, match=r"train\.parquet.*empty"):
        _run("gru4rec", tiny_data, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_history_id_outside_item_table_names_file_column_row(tiny_data, tmp_path):
    table = pq.read_table(tiny_data / "valid.parquet").to_pylist()
    table[5]["history"][-1] = 40  # == n_items: the padding id is not an item
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(tiny_data / "valid.parquet")),
                   tiny_data / "valid.parquet")
    with pytest.raises(ValueError, match=r"valid\.parquet: column 'history' row 5 holds item id 40, outside"):
        _run("caser", tiny_data, tmp_path / "out")


def test_target_missing_from_candidates(tiny_data, tmp_path):
    schema = pq.read_schema(tiny_data / "test.parquet")
    rows = pq.read_table(tiny_data / "test.parquet").to_pylist()
    rows[2]["candidate_sets"][1] = [c for c in rows[2]["candidate_sets"][1] if c != rows[2]["target"]] + [
        next(i for i in range(40) if i not in rows[2]["candidate_sets"][1])]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tiny_data / "test.parquet")
    with pytest.raises(ValueError, match=r"test\.parquet: row 2 candidate set 1 holds the target"):
        _run("sasrec", tiny_data, tmp_path / "out")


def test_unknown_model_name(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"unknown sequential recommender 'bert4rec'.*seqrec\.bert4rec"):
        _run("bert4rec", tiny_data, tmp_path / "out")


def test_interrupted_training_leaves_no_output(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run("gru4rec", tiny_data, out)
    assert not out.exists() or list(out.iterdir()) == []

    # a failure while writing the last artifact removes the others too (all-or-nothing)
    monkeypatch.undo()

    def broken_json(obj, path):
        raise OSError("disk full")

    monkeypatch.setattr(train_mod, "write_json", broken_json)
    with pytest.raises(OSError, match="disk full"):
        _run("gru4rec", tiny_data, out, hparams={**FAST, "max_epochs": 1})
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------- config consistency
def test_config_yaml_and_schema_defaults_match_the_package():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["seqrec"]
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["seqrec"]["properties"]
    for name, defaults in DEFAULTS.items():
        assert config[name] == defaults, f"config/config.yaml seqrec.{name} differs from llara.seqrec.DEFAULTS"
        assert {k: v["default"] for k, v in props[name]["properties"].items()} == defaults, name
        assert set(schema["$defs"][f"seqrec_{name}"]["properties"]) == set(defaults), name
