"""No-LLM reference scorers (popularity, last-item similarity) on the stored candidate sets."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO
from llara.cli import main as cli_main
from llara.data.schema import EVAL, ITEMS, TRAIN
from llara.evaluate import workflow as evalwf
from llara.evaluate.compare import outcome_matrix, paired_difference
from llara.evaluate.reference import last_item_scores, load_eval_rows, reference_predictions
from llara.evaluate.run import PREDICTIONS
from llara.io import write_parquet
from llara.llm.data import write_random_embeddings
from llara.report import workflow as reportwf
from llara.seqrec.schema import item_embeddings_table

N_ITEMS = 12


def _hand_data(root, rows, train_targets):
    """items 0..N_ITEMS-1; ``rows``: (user, history, target, candidate_sets); train rows with ``train_targets``."""
    root.mkdir(parents=True, exist_ok=True)
    write_parquet(pa.table({"item_id": np.arange(N_ITEMS, dtype=np.int64),
                            "title": [f"Item {i}" for i in range(N_ITEMS)],
                            "source_id": [str(i) for i in range(N_ITEMS)]}), root / "items.parquet", ITEMS)
    write_parquet(pa.table({"user_id": list(range(len(train_targets))), "history": [[0]] * len(train_targets),
                            "target": train_targets}), root / "train.parquet", TRAIN)
    write_parquet(pa.table({"user_id": [r[0] for r in rows], "history": [r[1] for r in rows],
                            "target": [r[2] for r in rows], "candidates": [r[3][0] for r in rows],
                            "candidate_sets": [r[3] for r in rows]}), root / "test.parquet", EVAL)
    return root


def _run(kind, data, out, **kw):
    return reference_predictions(kind, data / "items.parquet", {"test": data / "test.parquet"},
                                 out / "predictions.parquet", out / "metrics.json", train_path=data / "train.parquet",
                                 n_resamples=50, seed=1, **kw)


def test_popularity_scores_are_train_target_counts(tmp_path):
    # item 3 is a train target 3 times, item 5 twice, item 7 once, the rest never
    rows = [(0, [1, 2], 3, [[3, 5, 7], [9, 3, 10]]),
            (1, [2, 4], 5, [[3, 5, 8], [5, 6, 7]]),
            (2, [9], 7, [[6, 7, 8], [7, 10, 11]])]
    data = _hand_data(tmp_path / "data", rows, [3, 3, 3, 5, 5, 7])
    m = _run("popularity", data, tmp_path / "pop")
    pred = pq.read_table(tmp_path / "pop" / "predictions.parquet")
    assert pred.schema.equals(PREDICTIONS) and pred.num_rows == 3 * 2
    counts = np.bincount([3, 3, 3, 5, 5, 7], minlength=N_ITEMS)
    for r in pred.to_pylist():
        assert r["scores"] == [float(counts[c]) for c in r["candidates"]]
        assert r["predicted"] == r["candidates"][int(np.argmax(r["scores"]))]
    om = outcome_matrix(pred, "test", "rank")
    # row 0 wins both sets, row 1 loses set 0 to item 3 and wins set 1, row 2 wins both
    np.testing.assert_array_equal(om["correct"], [[True, True], [False, True], [True, True]])
    assert m["splits"]["test"]["rank"]["mean"]["hr@1"] == pytest.approx(5 / 6)
    assert m["method"] == "reference" and m["scorer"] == "popularity" and m["train_seed"] is None
    assert m["candidate_sets"] == 2 and m["aggregate"]["test"]["rank"]["mean"]["hr@1"] == pytest.approx(5 / 6)


def test_popularity_ties_count_against_the_target(tmp_path):
    rows = [(0, [1], 3, [[4, 3, 6]])]  # items 3 and 4 are both seen twice: a tie at the top
    data = _hand_data(tmp_path / "data", rows, [3, 3, 4, 4])
    m = _run("popularity", data, tmp_path / "pop")
    pred = pq.read_table(tmp_path / "pop" / "predictions.parquet").to_pylist()[0]
    assert pred["target_rank"] == 1 and not pred["correct"] and pred["predicted"] == 4  # the tied negative
    assert m["splits"]["test"]["rank"]["mean"]["hr@1"] == 0.0
    assert m["ties"]["test"]["hr@1_ties_shared"] == [0.5] and m["ties"]["test"]["target_tied_at_top"] == 1.0


def _pair_embeddings(path):
    """Items (0, 1), (2, 3), ... share one unit vector per pair, orthogonal to the other pairs'."""
    emb = np.zeros((N_ITEMS, N_ITEMS // 2), np.float32)
    emb[np.arange(N_ITEMS), np.arange(N_ITEMS) // 2] = 1.0
    write_parquet(item_embeddings_table(emb), path)
    return path


def test_last_item_picks_the_largest_dot_product(tmp_path):
    # the target is the partner of the *last* history item (identical embedding); the first history item
    # is the partner of a negative, so scoring with it (or the mean) would lose
    rows = [(0, [2, 0], 1, [[3, 1, 5], [1, 7, 9]]),
            (1, [4, 6], 7, [[5, 11, 7], [7, 8, 10]]),
            (2, [0, 10], 11, [[1, 11, 3], [2, 4, 11]])]
    data = _hand_data(tmp_path / "data", rows, [5, 5, 5])
    emb = _pair_embeddings(tmp_path / "emb.parquet")
    m = _run("last_item", data, tmp_path / "li", embeddings_path=emb, train_seed=42,
             meta={"dataset": "hand", "seqrec": "sasrec"})
    assert m["splits"]["test"]["rank"]["mean"]["hr@1"] == 1.0 and m["train_seed"] == 42
    pred = pq.read_table(tmp_path / "li" / "predictions.parquet")
    assert pred.schema.equals(PREDICTIONS)
    assert pred.column("predicted").to_pylist() == pred.column("target").to_pylist()
    assert {max(s) for s in pred.column("scores").to_pylist()} == {1.0}


def test_last_item_scores_are_dot_products(tiny_data, tmp_path):
    write_random_embeddings(tmp_path / "emb.parquet", 40, dim=8, seed=3)
    emb = np.array(pq.read_table(tmp_path / "emb.parquet").column("embedding").to_pylist(), dtype=np.float64)
    r = load_eval_rows(tiny_data / "test.parquet", 40)
    hist = pq.read_table(tiny_data / "test.parquet").column("history").to_pylist()
    assert r.last_item.tolist() == [h[-1] for h in hist]
    s = last_item_scores(emb, r.last_item, r.candidates)
    i, k = 7, 2
    np.testing.assert_allclose(s[i, k], [emb[c] @ emb[hist[i][-1]] for c in r.candidates[i, k]])


def test_pairs_with_a_seqrec_ranker(tiny_data, tmp_path):
    seqrec = pytest.importorskip("llara.seqrec")
    import torch

    from llara.evaluate.seqrec_ranker import seqrec_predictions

    torch.manual_seed(0)
    model = seqrec.build_model("sasrec", 40, {"hidden_size": 16, "n_layers": 1})
    seqrec.save_model(model, tmp_path / "model.safetensors")
    seqrec_predictions(tmp_path / "model.safetensors", tiny_data / "items.parquet",
                       {"test": tiny_data / "test.parquet"}, tmp_path / "seq.parquet", None, n_resamples=50)
    write_random_embeddings(tmp_path / "emb.parquet", 40, dim=8)
    for kind in ("popularity", "last_item"):
        m = _run(kind, tiny_data, tmp_path / kind, embeddings_path=tmp_path / "emb.parquet")
        ref = pq.read_table(tmp_path / kind / "predictions.parquet")
        assert ref.schema.equals(PREDICTIONS) and ref.num_rows == 60 * 3
        d = paired_difference(ref, pq.read_table(tmp_path / "seq.parquet"), "test", "rank", "rank", "hr@1",
                              n_resamples=50)
        assert d["n"] == 60 and d["sets"] == [0, 1, 2]
        assert d["a"] == pytest.approx(m["splits"]["test"]["rank"]["mean"]["hr@1"])


def test_bad_inputs_name_the_file(tiny_data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        reference_predictions("popularity", tiny_data / "items.parquet", {"test": tiny_data / "test.parquet"},
                              out / "p.parquet", train_path=tmp_path / "nope.parquet")
    write_random_embeddings(tmp_path / "emb30.parquet", 30)
    with pytest.raises(ValueError, match=r"emb30.parquet: 30 embedding rows but items.parquet has 40 items"):
        _run("last_item", tiny_data, out, embeddings_path=tmp_path / "emb30.parquet")
    with pytest.raises(ValueError, match="needs embeddings_path"):
        _run("last_item", tiny_data, out)
    with pytest.raises(ValueError, match="unknown reference scorer"):
        _run("random", tiny_data, out)
    # a stored set without its target
    t = pq.read_table(tiny_data / "test.parquet").to_pydict()
    t["candidate_sets"][4][1] = [c for c in t["candidate_sets"][4][1] if c != t["target"][4]] + [39]
    if t["target"][4] == 39:
        t["candidate_sets"][4][1][-1] = 38
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("items.parquet", "train.parquet"):
        (bad / f).write_bytes((tiny_data / f).read_bytes())
    write_parquet(pa.table(t), bad / "test.parquet", EVAL)
    with pytest.raises(ValueError, match=r"bad/test.parquet: split 'test', candidate set 1: row 4: target"):
        _run("popularity", bad, out)
    assert not (out / "predictions.parquet").exists()


def test_cli(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["reference", "--help"])
    assert e.value.code == 0 and "usage: llara reference" in capsys.readouterr().out
    write_random_embeddings(tmp_path / "emb.parquet", 40, dim=8)
    assert cli_main(["reference", str(tiny_data), str(tmp_path / "li"), "--kind", "last_item", "--splits", "test",
                     "--embeddings", str(tmp_path / "emb.parquet"), "--seqrec", "sasrec", "--n-resamples", "20"]) == 0
    m = json.loads((tmp_path / "li" / "metrics.json").read_text())
    assert m["scorer"] == "last_item" and m["seqrec"] == "sasrec" and list(m["splits"]) == ["test"]
    rc = cli_main(["reference", str(tiny_data), str(tmp_path / "x"), "--kind", "last_item",
                   "--embeddings", str(tmp_path / "none.parquet")])
    assert rc == 2 and "none.parquet do not exist" in capsys.readouterr().err


def test_rule_inputs_and_report_entries():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["llm"]["name"] = "tiny"
    assert evalwf.reference_inputs(cfg, "lastfm", "popularity")["train"] == "results/lastfm/data/train.parquet"
    assert evalwf.reference_inputs(cfg, "lastfm", "last_item", "caser")["embeddings"] == \
        "results/lastfm/caser/seqrec/item_embeddings.parquet"
    sweep = {**cfg, "seeds": [42, 7]}
    assert evalwf.reference_inputs(sweep, "lastfm", "last_item", "caser", seed=7)["embeddings"] == \
        "results/lastfm/caser/seeds/7/seqrec/item_embeddings.parquet"
    files = reportwf.report_inputs(sweep)
    for f in ("results/lastfm/reference/popularity/predictions.parquet",      # untrained: one run
              "results/lastfm/sasrec/reference/last_item/metrics.json",        # the aggregate over seeds
              "results/lastfm/sasrec/seeds/7/reference/last_item/predictions.parquet"):
        assert f in files, f
    labels = {e["label"] for e in reportwf.report_entries(cfg)}
    assert {"Popularity (train targets)", "Last-item similarity (SASRec emb.)",
            "Last-item similarity (GRU4Rec emb.)"} <= labels
    cfg["report"]["reference"] = False
    assert not any(e["kind"] == "reference" for e in reportwf.report_entries(cfg))
