"""The fast inference paths (issue #27) against their references on a tiny random Llama.

- ``score_candidates`` (prompt forward, then all candidates packed against the prompt cache with a 4D mask)
  equals naive per-candidate scoring: fp32 within atol 1e-4 + rtol 1e-5; bf16: the same best candidate.
- ``generate`` (own greedy loop, finished rows leave the batch) equals Hugging Face ``generate`` as the
  evaluation called it before (greedy, stop tokens eos + newline tokens), string for string.
- ``generate_and_score`` (one prompt forward for both) equals the two separate calls.
- ``evaluate_split`` uses ``generate_and_score`` when both modes run and the engine has it, with the same
  predictions as the separate calls.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from conftest import make_tiny_dataset
from llara.llm import inference
from llara.llm.data import load_titles, write_random_embeddings
from llara.llm.model import add_lora, init_projector, load_base
from llara.llm.projector import save_projector
from llara.llm.prompts import load_templates
from llara.llm.testing import make_tiny_llama

D_REC = 16
ATOL, RTOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    data = make_tiny_dataset(root / "data")
    titles = load_titles(data / "items.parquet")
    write_random_embeddings(data / "emb.parquet", len(titles), D_REC, seed=1)
    model = make_tiny_llama(root / "model", titles)
    tok, base = load_base(model)
    with torch.no_grad():  # a "lively" model: its greedy answers depend on the prompt (at init scale every row
        for n, p in base.named_parameters():  # repeats the prompt's last token)
            if p.ndim == 2 and "embed" not in n:
                p.mul_(15.0)
    base.save_pretrained(model)
    torch.manual_seed(0)
    lm = add_lora(base)
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    lm.save_pretrained(root / "tuned" / "adapter")
    proj = init_projector(D_REC, base.get_input_embeddings(), 1)
    for fmt in ("raw", "chat"):
        save_projector(proj, root / "tuned" / f"projector_{fmt}.safetensors",
                       {"dataset": "lastfm", "prompt_format": fmt, "templates": load_templates("lastfm")})
    return {"root": root, "data": data, "model": model}


KINDS = ["zeroshot", "raw", "chat", "raw_unmerged"]


def _load(env, kind, dtype="float32"):
    d = env["data"]
    if kind == "zeroshot":
        return inference.load_llara(env["model"], d / "items.parquet", dtype=dtype)
    fmt = "chat" if kind == "chat" else "raw"
    return inference.load_llara(env["model"], d / "items.parquet", d / "emb.parquet", env["root"] / "tuned" / "adapter",
                                env["root"] / "tuned" / f"projector_{fmt}.safetensors", dtype=dtype,
                                merge_adapter=kind != "raw_unmerged")


def _rows(env, n=6):
    """Test rows with different prompt lengths (histories cut to different lengths)."""
    rows = pq.read_table(env["data"] / "test.parquet").to_pylist()[:n]
    cuts = [None, 2, 5, 1, None, 3]
    return [dict(r, history=r["history"][:cuts[i % len(cuts)]]) for i, r in enumerate(rows)]


def _hf_generate(m, rows, representation="hybrid", batch_size=8, max_new_tokens=32, template=0):
    """``inference.generate`` as it was before (Hugging Face ``generate``): the reference."""
    rep = inference._representation(m, representation)
    rows = inference._rows(rows)
    lm, tok, outs = m.module.causal_lm, m.tokenizer, []
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = m.encoder.inference_batch(rows[i:i + batch_size], rep, template)
            embeds = m.module.embed(b["input_ids"], b["item_slots"])
            gen = lm.generate(inputs_embeds=embeds, attention_mask=b["attention_mask"], max_new_tokens=max_new_tokens,
                              do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id, eos_token_id=m.stop_ids,
                              temperature=None, top_p=None, top_k=None)
            for text in tok.batch_decode(gen, skip_special_tokens=True, clean_up_tokenization_spaces=False):
                outs.append(text.strip().split("\n")[0].strip())
    return outs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("representation", ["hybrid", "text"])
def test_scores_equal_naive(env, kind, representation):
    if kind == "zeroshot" and representation == "text":
        pytest.skip("the zero-shot model always renders plain titles")
    m = _load(env, kind)
    rows = _rows(env)
    naive = inference.score_candidates_naive(m, rows, representation)
    for bs in (1, 4):
        fast = inference.score_candidates(m, rows, representation, batch_size=bs)
        assert fast.shape == naive.shape == (len(rows), len(rows[0]["candidates"]))
        np.testing.assert_allclose(fast, naive, rtol=RTOL, atol=ATOL)


def test_scores_equal_naive_with_eager_attention(env):
    """The additive float form of the 4D mask (eager attention) gives the same scores."""
    m = _load(env, "raw")
    m.module.causal_lm.set_attn_implementation("eager")
    rows = _rows(env, 4)
    np.testing.assert_allclose(inference.score_candidates(m, rows, batch_size=4),
                               inference.score_candidates_naive(m, rows), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["zeroshot", "raw"])
def test_bf16_scores_pick_the_naive_best_candidate(env, kind):
    m = _load(env, kind, dtype="bfloat16")
    rows = _rows(env)
    fast = inference.score_candidates(m, rows, batch_size=3)
    naive = inference.score_candidates_naive(m, rows)
    assert (fast.argmax(1) == naive.argmax(1)).all()
    np.testing.assert_allclose(fast, naive, rtol=0.02, atol=0.5)  # bf16 rounding of a different summation


@pytest.mark.parametrize("kind", KINDS)
def test_generate_equals_hf_generate(env, kind):
    m = _load(env, kind)
    rows = _rows(env)
    for bs, max_new in ((4, 10), (1, 6), (8, 1)):
        assert inference.generate(m, rows, batch_size=bs, max_new_tokens=max_new) == \
            _hf_generate(m, rows, batch_size=bs, max_new_tokens=max_new)


def _greedy_tokens(m, rows, max_new):
    prep = inference._prepare(m, inference._rows(rows), inference._representation(m, "hybrid"), 0, answers=False)
    with torch.no_grad():
        return inference._greedy(m, inference._prefill(m, prep, list(range(len(rows)))), max_new)


def _varied_stops(m, rows, max_new=12):
    """Add to ``m.stop_ids`` the token that ends the rows' greedy answers at the most different lengths (the
    random model rarely emits eos or a newline: without this every row runs to max_new_tokens)."""
    toks = _greedy_tokens(m, rows, max_new)
    best, best_n = None, 1
    for t in {x for row in toks for x in row}:
        n = len({row.index(t) if t in row else max_new for row in toks})
        if n > best_n:
            best, best_n = t, n
    assert best is not None
    m.stop_ids = sorted(set(m.stop_ids) | {best})
    return m


def test_greedy_rows_end_at_their_stop_token(env):
    """Rows stop at their first stop token (kept), others run to max_new_tokens: the batch shrinks."""
    m = _load(env, "raw")
    rows = _rows(env)
    _varied_stops(m, rows)
    toks = _greedy_tokens(m, rows, 12)
    stop = set(m.stop_ids)
    for t in toks:
        assert 1 <= len(t) <= 12
        assert all(x not in stop for x in t[:-1])
        assert len(t) == 12 or t[-1] in stop
    assert len({len(t) for t in toks}) > 2, "expected rows of different lengths (the shrinking path)"


@pytest.mark.parametrize("kind", ["zeroshot", "raw", "chat"])
def test_generate_with_early_stops_equals_hf_generate(env, kind):
    m = _varied_stops(_load(env, kind), _rows(env))
    rows = _rows(env)
    for bs in (6, 4, 1):
        assert inference.generate(m, rows, batch_size=bs, max_new_tokens=12) == \
            _hf_generate(m, rows, batch_size=bs, max_new_tokens=12)


@pytest.mark.parametrize("kind", ["zeroshot", "raw", "chat"])
def test_generate_and_score_equals_separate_calls(env, kind):
    rows = _rows(env)
    m = _varied_stops(_load(env, kind), rows)
    timing = {}
    outs, scores = inference.generate_and_score(m, rows, batch_size=4, max_new_tokens=8, timing=timing)
    assert outs == inference.generate(m, rows, batch_size=4, max_new_tokens=8)
    assert outs == _hf_generate(m, rows, batch_size=4, max_new_tokens=8)
    np.testing.assert_allclose(scores, inference.score_candidates(m, rows, batch_size=4), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(scores, inference.score_candidates_naive(m, rows), rtol=RTOL, atol=ATOL)
    assert set(timing) == {"prefill", "score", "decode"} and all(v >= 0 for v in timing.values())
    empty_outs, empty_scores = inference.generate_and_score(m, [])
    assert empty_outs == [] and empty_scores.shape == (0, 0)


def test_llara_engine_generate_and_score(env):
    from llara.evaluate.engine import LlaraEngine

    d = env["data"]
    e = LlaraEngine.load(env["model"], d / "items.parquet", representation="plain", batch_size=4, max_new_tokens=6)
    rows = _rows(env, 5)
    outs, scores = e.generate_and_score(rows)
    assert outs == e.generate(rows)
    np.testing.assert_allclose(scores, e.score(rows), rtol=1e-6, atol=1e-5)
    assert set(e.last_seconds) == {"generate", "rank"} and min(e.last_seconds.values()) > 0


def test_cache_keyword_of_either_transformers_release():
    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, **kwargs):
            return None

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            return None

    assert inference._cache_kw(New()) == "cache" and inference._cache_kw(Old()) == "past_key_values"


def test_evaluate_split_shares_the_prefill_when_the_engine_can(tiny_data):
    from test_evaluate_run import _engine

    from llara.evaluate.run import evaluate_split, load_split, load_titles as eval_titles

    class Shared(type(_engine(tiny_data))):
        def generate_and_score(self, rows):
            self.shared_calls = getattr(self, "shared_calls", 0) + 1
            self.last_seconds = {"generate": 3.0, "rank": 1.0}
            return self.generate(rows), self.score(rows)

    plain = _engine(tiny_data)
    shared = Shared(plain.titles, plain.targets, plain.skill)
    table = load_split(tiny_data / "test.parquet", 2)
    titles = eval_titles(tiny_data / "items.parquet")
    kw = dict(split="test", k=2, chunk_rows=7, n_resamples=50, progress=False)
    p1, b1, t1 = evaluate_split(plain, table, titles, **kw)
    p2, b2, t2 = evaluate_split(shared, table, titles, **kw)
    assert shared.shared_calls == 2 * len(range(0, table.num_rows, 7))
    assert p1.equals(p2)
    for mode in ("generate", "rank"):
        b1[mode].pop("rows_per_s"), b2[mode].pop("rows_per_s")
        assert b1[mode] == b2[mode]
    # the call's time split 3:1 as the engine reported it
    assert t2["generate"]["seconds"] == pytest.approx(3 * t2["rank"]["seconds"], rel=1e-2, abs=2e-3)
    # one mode only: the separate call
    p3, _, _ = evaluate_split(shared, table, titles, modes=["rank"], **kw)
    assert shared.shared_calls == 2 * len(range(0, table.num_rows, 7))
    assert p3.equals(p1.filter(pc.equal(p1["mode"], "rank")))
