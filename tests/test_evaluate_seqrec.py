"""The seqrec backbone as a per-row ranker in the evaluation's predictions format."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from llara.evaluate.compare import outcome_matrix
from llara.evaluate.run import PREDICTIONS
from llara.evaluate.seqrec_ranker import seqrec_predictions


def test_seqrec_ranker_predictions(tiny_data, tmp_path):
    seqrec = pytest.importorskip("llara.seqrec")
    torch.manual_seed(0)
    model = seqrec.build_model("sasrec", 40, {"hidden_size": 16, "n_layers": 1})
    seqrec.save_model(model, tmp_path / "model.safetensors")
    m = seqrec_predictions(tmp_path / "model.safetensors", tiny_data / "items.parquet",
                           {"test": tiny_data / "test.parquet"}, tmp_path / "pred.parquet", tmp_path / "m.json",
                           seed=1, n_resamples=100)
    pred = pq.read_table(tmp_path / "pred.parquet")
    assert pred.schema.equals(PREDICTIONS) and pred.num_rows == 60 * 3
    blk = m["splits"]["test"]["rank"]
    assert blk["k"] == 3 and blk["mean"]["valid_ratio"] == 1.0
    # per-row outcomes agree with the seqrec stage's own ranks
    data = seqrec.load_split(tiny_data / "test.parquet", "test", 40, model.max_len)
    ranks = seqrec.split_ranks(model.eval(), data)
    om = outcome_matrix(pred, "test", "rank")
    np.testing.assert_array_equal(om["correct"], ranks == 0)
    assert blk["mean"]["hr@1"] == pytest.approx(float((ranks == 0).mean()))
    assert json.loads((tmp_path / "m.json").read_text())["candidate_sets"] == 3
    with pytest.raises(FileNotFoundError, match="seqrec model"):
        seqrec_predictions(tmp_path / "none.safetensors", tiny_data / "items.parquet", {}, tmp_path / "p", None)
