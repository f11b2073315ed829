"""Evaluation end to end through llara.llm.inference on a tiny random Llama (zero-shot and tuned)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

inference = pytest.importorskip("llara.llm.inference")
testing = pytest.importorskip("llara.llm.testing")

from llara.evaluate.run import PREDICTIONS, evaluate_from_settings, evaluate_llm, load_titles  # noqa: E402

SETTINGS = {"splits": ["test"], "modes": ["generate", "rank"], "k": 2, "max_rows": 5, "batch_size": 4,
            "rank_batch_size": 2, "max_new_tokens": 6, "dtype": "float32", "first_line_only": True,
            "representation": "hybrid", "bootstrap": {"n_resamples": 50, "alpha": 0.05}}


def build_tiny_llm(root, data, d_rec: int = 16) -> dict:
    """A tiny random Llama + tokenizer in ``root/base``, a LoRA adapter and a projector in ``root/tuned``,
    and an item-embedding table ``root/emb.parquet`` for the items of ``data``."""
    import torch

    from llara.llm.data import write_random_embeddings
    from llara.llm.model import add_lora, init_projector, load_base
    from llara.llm.projector import save_projector

    titles = list(load_titles(data / "items.parquet").values())
    base = testing.make_tiny_llama(root / "base", titles, hidden=32, layers=2)
    torch.manual_seed(0)
    tok, model = load_base(base)
    lora = add_lora(model)
    with torch.no_grad():  # make the adapter non-trivial
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    lora.save_pretrained(root / "tuned" / "adapter")
    proj = init_projector(d_rec, model.get_input_embeddings(), seed=0)
    save_projector(proj, root / "tuned" / "projector.safetensors", {"dataset": "lastfm"})
    write_random_embeddings(root / "emb.parquet", len(titles), dim=d_rec, seed=0)
    return {"data": data, "base": base, "adapter": root / "tuned" / "adapter",
            "projector": root / "tuned" / "projector.safetensors", "emb": root / "emb.parquet"}


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    from conftest import make_tiny_dataset

    root = tmp_path_factory.mktemp("llm")
    return build_tiny_llm(root, make_tiny_dataset(root / "data"))


def test_zero_shot_and_rank_scores_equal_naive(tiny_llm, tmp_path):
    d = tiny_llm["data"]
    m = evaluate_llm(tiny_llm["base"], d / "items.parquet", {"test": d / "test.parquet"}, tmp_path / "p.parquet",
                     tmp_path / "m.json", dataset="lastfm", method="zeroshot", representation="plain", k=2,
                     max_rows=4, batch_size=4, rank_batch_size=2, max_new_tokens=6, n_resamples=50, progress=False)
    pred = pq.read_table(tmp_path / "p.parquet")
    assert pred.schema.equals(PREDICTIONS) and pred.num_rows == 4 * 2 * 2
    g = m["splits"]["test"]["generate"]
    assert g["n"] == 4 and g["k"] == 2 and 0 <= g["mean"]["valid_ratio"] <= 1
    assert m["provenance"]["rows_per_s"]["test"]["rank"] > 0
    # the rank-mode scores are those of naive per-candidate scoring
    model = inference.load_llara(tiny_llm["base"], d / "items.parquet", dataset="lastfm")
    test = pq.read_table(d / "test.parquet").slice(0, 4)
    rows = [{"history": h, "candidates": c} for h, c in zip(test.column("history").to_pylist(),
                                                            test.column("candidates").to_pylist())]
    naive = inference.score_candidates_naive(model, rows)
    rank0 = pred.filter(pc.and_(pc.equal(pred["mode"], "rank"), pc.equal(pred["candidate_set"], 0))).sort_by("row")
    np.testing.assert_allclose(np.array(rank0.column("scores").to_pylist()), naive, rtol=1e-4, atol=1e-4)
    outs = pred.filter(pc.equal(pred["mode"], "generate")).column("output").to_pylist()
    assert all(isinstance(o, str) for o in outs)


def test_tuned_model_end_to_end(tiny_llm, tmp_path):
    d = tiny_llm["data"]
    m = evaluate_from_settings(
        SETTINGS, base_dir=tiny_llm["base"], items_path=d / "items.parquet", split_paths={"test": d / "test.parquet"},
        predictions_path=tmp_path / "p.parquet", metrics_path=tmp_path / "m.json", dataset="lastfm", method="llara",
        seqrec="sasrec", adapter_dir=tiny_llm["adapter"], projector_path=tiny_llm["projector"],
        item_embeddings_path=tiny_llm["emb"], seed=3, threads=1, progress=False)
    on_disk = json.loads((tmp_path / "m.json").read_text())
    assert on_disk["method"] == "llara" and on_disk["representation"] == "hybrid"
    assert set(on_disk["splits"]["test"]) == {"n", "generate", "rank"}
    assert on_disk["provenance"]["config"]["k"] == 2
    assert any(k.startswith("adapter/") for k in on_disk["provenance"]["inputs_sha256"])
    r = m["splits"]["test"]["rank"]
    assert r["mean"]["valid_ratio"] == 1.0 and 0 <= r["mean"]["hr@1"] <= 1
    with pytest.raises(ValueError, match="missing"):
        evaluate_from_settings({"splits": ["test"]}, base_dir=tiny_llm["base"], items_path=d / "items.parquet",
                               split_paths={}, predictions_path=tmp_path / "x", metrics_path=tmp_path / "y",
                               dataset="lastfm", method="llara")


def test_rank_mode_reads_the_cache_of_either_transformers_release():
    """transformers 5.24 (pinned) names a forward pass's key/value cache ``cache``; 5.17 (the GPU image's)
    ``past_key_values``: rank mode failed there with AttributeError before it read both."""
    from types import SimpleNamespace

    from llara.llm.inference import _cache_of

    assert _cache_of(SimpleNamespace(cache="new", past_key_values=None)) == "new"
    assert _cache_of(SimpleNamespace(past_key_values="old")) == "old"
