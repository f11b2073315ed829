"""LLM stage unit tests on a tiny random Llama: prompts, injection, loss mask, curriculum, inference, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import make_tiny_dataset
from llara.llm.data import (Schedule, hybrid_probability, load_item_embeddings, load_titles, load_train_rows,
                            lr_at, sample_candidates, write_random_embeddings)
from llara.llm.injection import inject, inject_reference
from llara.llm.model import LlaraLM, add_lora, init_projector, load_base
from llara.llm.prompts import (IGNORE, PromptEncoder, load_templates, render_items, validate_template)
from llara.llm.testing import make_tiny_llama

D_REC = 16


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny dataset + random embedding table + tiny random Llama (tokenizer with a chat template)."""
    root = tmp_path_factory.mktemp("llm")
    data = make_tiny_dataset(root / "data")
    titles = load_titles(data / "items.parquet")
    write_random_embeddings(data / "emb.parquet", len(titles), D_REC, seed=1)
    model = make_tiny_llama(root / "model", titles)
    return {"root": root, "data": data, "titles": titles, "model": model, "emb": data / "emb.parquet"}


def _encoder(env, fmt="raw"):
    tok, base = load_base(env["model"])
    return PromptEncoder(tok, env["titles"], load_templates("lastfm"), fmt), base


def _samples(env, n=4, seed=0):
    rows = pq.read_table(env["data"] / "test.parquet").to_pylist()[:n]
    reps = ["hybrid", "text", "id", "hybrid"]
    return [{"history": r["history"], "candidates": r["candidates"], "target": r["target"],
             "representation": reps[i % 4], "template": i % 3} for i, r in enumerate(rows)]


# ---- templates ---------------------------------------------------------------------------------

def test_packaged_templates_valid():
    for ds in ("lastfm", "movielens", "steam"):
        ts = load_templates(ds)
        assert len(ts) == 3
        assert all("{history}" in t and "{candidates}" in t for t in ts)


def test_template_without_placeholders_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\{candidates\}"):
        validate_template("This user has listened to {history}. The answer is", "x")
    bad = tmp_path / "t.yaml"
    bad.write_text("datasets: {lastfm: artist}\ndomains:\n  artist:\n    - 'No placeholders here. The answer is'\n")
    with pytest.raises(ValueError, match=r"t\.yaml: domains\.artist\[0\].*placeholder"):
        load_templates("lastfm", bad)
    bad.write_text("datasets: {lastfm: artist}\ndomains:\n  artist:\n    - '{history} {candidates} {user}'\n")
    with pytest.raises(ValueError, match="unknown placeholder"):
        load_templates("lastfm", bad)


def test_item_rendering():
    titles = ["A", "B", "C"]
    assert render_items(titles, [0, 2], "hybrid", "[HistoryEmb]") == "A [HistoryEmb], C [HistoryEmb]"
    assert render_items(titles, [0, 2], "text", "[HistoryEmb]") == "A [PH], C [PH]"
    assert render_items(titles, [0, 2], "id", "[CansEmb]") == "[CansEmb], [CansEmb]"
    assert render_items(titles, [1], "plain", "[CansEmb]") == "B"


# ---- injection -----------------------------------------------------------------------------------

def test_injection_equals_reference(env):
    enc, base = _encoder(env)
    samples = _samples(env)
    batch = enc.training_batch(samples)
    table = torch.from_numpy(load_item_embeddings(env["emb"], len(env["titles"])))
    proj = init_projector(D_REC, base.get_input_embeddings(), seed=3)
    with torch.no_grad():
        proj.special.add_(torch.randn_like(proj.special))  # distinct learned rows
    emb = base.get_input_embeddings()
    fast = inject(emb, proj, table, batch["input_ids"], batch["item_slots"], enc.special_ids[0])
    hist = [s["history"] if s["representation"] != "text" else [] for s in samples]
    cans = [s["candidates"] if s["representation"] != "text" else [] for s in samples]
    ref = inject_reference(emb, proj, table, batch["input_ids"], hist, cans, enc.special_ids)
    assert fast.shape == ref.shape
    # the batched projector (one GEMM) and the per-row reference (GEMVs) sum in different orders:
    # equal up to float32 rounding, not bit for bit
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    # every hybrid/id row has one slot per history item and candidate, text rows none
    n_slots = (batch["item_slots"] >= 0).sum(1).tolist()
    assert n_slots == [len(h) + len(c) for h, c in zip(hist, cans)]
    # gradients reach the projector MLP through the injected embeddings; the special rows are frozen
    # (the authors' resized embedding rows): not a parameter, so no optimizer ever moves them
    fast.sum().backward()
    assert proj.mlp[0].weight.grad.abs().sum() > 0
    assert not proj.special.requires_grad and all(p is not proj.special for p in proj.parameters())
    assert "special" in proj.state_dict()  # still saved with the projector


def test_injection_all_text_keeps_projector_in_graph(env):
    enc, base = _encoder(env)
    samples = [dict(s, representation="text") for s in _samples(env, 2)]
    batch = enc.training_batch(samples)
    assert (batch["item_slots"] < 0).all()
    table = torch.from_numpy(load_item_embeddings(env["emb"], len(env["titles"])))
    proj = init_projector(D_REC, base.get_input_embeddings(), seed=3)
    out = inject(base.get_input_embeddings(), proj, table, batch["input_ids"], batch["item_slots"], enc.special_ids[0])
    out.sum().backward()
    assert proj.mlp[0].weight.grad is not None and proj.mlp[0].weight.grad.abs().sum() == 0


def test_projector_token_norm_scale(env, tmp_path):
    """``projector_scale: token_norm`` puts every injected vector at the mean token-embedding norm (the authors'
    free MLP does not); the scale is saved with the projector, and a file saved before the option loads as free."""
    from safetensors.torch import load_file, save_file

    from llara.llm.projector import load_projector, save_projector

    _, base = load_base(env["model"])
    emb = base.get_input_embeddings()
    target = float(emb.weight.detach().norm(dim=1).mean())
    x = torch.randn(6, D_REC) * 5
    free, fixed = init_projector(D_REC, emb, 3), init_projector(D_REC, emb, 3, "token_norm")
    torch.testing.assert_close(fixed(x).norm(dim=-1), torch.full((6,), target), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(free(x).norm(dim=-1), torch.full((6,), target), rtol=1e-2)
    save_projector(fixed, tmp_path / "p.safetensors", {})
    again, _ = load_projector(tmp_path / "p.safetensors")
    torch.testing.assert_close(again(x), fixed(x))
    old = {k: v for k, v in load_file(str(tmp_path / "p.safetensors")).items() if k != "out_norm"}
    save_file(old, str(tmp_path / "old.safetensors"))
    torch.testing.assert_close(load_projector(tmp_path / "old.safetensors")[0](x), fixed.mlp(x))
    with pytest.raises(ValueError, match="projector_scale"):
        init_projector(D_REC, emb, 3, "unit")


# ---- loss mask -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raw", "chat"])
def test_loss_mask_covers_only_the_answer(env, fmt):
    enc, base = _encoder(env, fmt)
    samples = _samples(env)
    batch = enc.training_batch(samples)
    tok = enc.tokenizer
    for i, s in enumerate(samples):
        lab = batch["labels"][i]
        ans = lab[lab != IGNORE].tolist()
        assert tok.decode(ans) == enc.answer_text(s["target"])
        # the prompt tokens are exactly the prompt encoded alone (what inference feeds)
        n_prompt = int((lab == IGNORE).nonzero()[-1]) + 1 if (lab == IGNORE).any() else 0
        prompt = enc.prompt_text(s["history"], s["candidates"], s["representation"], s["template"])
        k = batch["attention_mask"][i].sum().item() - len(ans)
        assert batch["input_ids"][i, :k].tolist() == enc.encode_prompts([prompt])[0]
        assert (lab[batch["attention_mask"][i] == 0] == IGNORE).all()
        assert n_prompt >= k
    # our answer-position loss equals the HF loss with the same labels
    table = torch.from_numpy(load_item_embeddings(env["emb"], len(env["titles"])))
    m = LlaraLM(base, init_projector(D_REC, base.get_input_embeddings(), 0), table, enc.special_ids[0])
    with torch.no_grad():
        loss, n = m(**batch)
        embeds = m.embed(batch["input_ids"], batch["item_slots"])
        hf = base(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(loss, hf, rtol=1e-5, atol=1e-5)
    assert n == (batch["labels"][:, 1:] != IGNORE).sum()
    # the per-row diagnostics add up to the loss; the first-token loss is the first answer token's own
    d = m.last_stats
    torch.testing.assert_close(d["row_loss"].sum() / d["row_tokens"].sum(), loss, rtol=1e-5, atol=1e-5)
    assert d["row_tokens"].tolist() == (batch["labels"][:, 1:] != IGNORE).sum(1).float().tolist()
    with torch.no_grad():
        logits = base(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits.float()
    for i in range(len(samples)):
        j = int((batch["labels"][i, 1:] != IGNORE).nonzero()[0])
        ce = torch.nn.functional.cross_entropy(logits[i, j][None], batch["labels"][i, j + 1][None])
        torch.testing.assert_close(d["first_loss"][i], ce, rtol=1e-4, atol=1e-4)
    n_slots = int((batch["item_slots"] >= 0).sum())
    assert d["inject_count"].item() == n_slots > 0
    norms = embeds[batch["item_slots"] >= 0].norm(dim=-1)
    torch.testing.assert_close(d["inject_norm"], norms.sum(), rtol=1e-4, atol=1e-4)


def test_spaced_chat_answer_is_tokenised_as_among_the_candidates(env):
    """``answer_format: spaced`` makes the chat answer's tokens those the title has after ", " in the prompt."""
    tok, _ = load_base(env["model"])
    bare = PromptEncoder(tok, env["titles"], load_templates("lastfm"), "chat")
    spaced = PromptEncoder(tok, env["titles"], load_templates("lastfm"), "chat", "spaced")
    s = _samples(env, 1)[0]
    assert spaced.answer_text(s["target"]) == " " + bare.answer_text(s["target"])
    batch = spaced.training_batch([s])
    lab = batch["labels"][0]
    answer = lab[lab != IGNORE].tolist()[:-1]  # without eos
    in_prompt = tok(", " + env["titles"][s["target"]], add_special_tokens=False)["input_ids"][1:]
    assert answer == in_prompt
    with pytest.raises(ValueError, match="answer_format"):
        PromptEncoder(tok, env["titles"], load_templates("lastfm"), "chat", "leading")


def test_token_position_before_puts_the_behavioural_token_ahead_of_its_title(env):
    """``token_position: before`` renders ``[CansEmb] title``: the title's tokens are those it has after ", " (so a
    spaced answer still copies them) and every slot still holds its own item."""
    tok, _ = load_base(env["model"])
    after = PromptEncoder(tok, env["titles"], load_templates("lastfm"), "chat", "spaced")
    before = PromptEncoder(tok, env["titles"], load_templates("lastfm"), "chat", "spaced", "before")
    s = _samples(env, 1)[0]
    c = s["candidates"][0]
    title = env["titles"][c]
    assert f"{title} [CansEmb]" in after.prompt_text(s["history"], s["candidates"], "hybrid")
    text = before.prompt_text(s["history"], s["candidates"], "hybrid")
    assert f"[CansEmb] {title}" in text and f"{title} [CansEmb]" not in text
    # text-only prompts do not change
    assert before.prompt_text(s["history"], s["candidates"], "text") == after.prompt_text(s["history"], s["candidates"], "text")
    batch = before.training_batch([s])
    ids, slots = batch["input_ids"][0], batch["item_slots"][0]
    k = (ids == before.cans_id).nonzero()[0, 0]
    assert slots[k] == c
    in_prompt = tok(", " + title, add_special_tokens=False)["input_ids"][1:]
    assert ids[k + 1:k + 1 + len(in_prompt)].tolist() == in_prompt
    with pytest.raises(ValueError, match="token_position"):
        PromptEncoder(tok, env["titles"], load_templates("lastfm"), "chat", "spaced", "middle")


def _embed_grads(m: LlaraLM, batch: dict) -> torch.Tensor:
    """Per-position gradient norms of the training loss w.r.t. the (injected) input embeddings."""
    captured = []
    embed = m.embed

    def capture(*args, **kwargs):
        out = embed(*args, **kwargs)
        out.retain_grad()
        captured.append(out)
        return out

    m.embed = capture
    try:
        loss, _ = m(**batch)
        loss.backward()
    finally:
        del m.embed
    return captured[0].grad.norm(dim=-1)[0]


class _UnshiftedLM(LlaraLM):
    """A deliberately wrong loss: position t's output scored against token t itself (no label shift)."""

    def forward(self, input_ids, attention_mask, labels, item_slots=None):
        lm = self.causal_lm
        hidden = lm.get_decoder()(inputs_embeds=self.embed(input_ids, item_slots), attention_mask=attention_mask,
                                  use_cache=False).last_hidden_state
        sel = labels != IGNORE
        logits = lm.get_output_embeddings()(hidden[sel]).float()
        return torch.nn.functional.cross_entropy(logits, labels[sel]), sel.sum()


@pytest.mark.parametrize("cls", [LlaraLM, _UnshiftedLM])
def test_answer_loss_sees_only_earlier_tokens(env, cls):
    """The loss on answer token a depends on the inputs before a, never on a itself or later ones:
    exactly zero gradient there, clearly non-zero gradient to every earlier position. Without the
    label shift (``_UnshiftedLM``) the token being predicted leaks into its own prediction and the
    check sees it."""
    enc, base = _encoder(env)
    batch = enc.training_batch(_samples(env, 1))
    a = int((batch["labels"][0] != IGNORE).nonzero()[0])  # the first answer token
    batch["labels"] = torch.full_like(batch["labels"], IGNORE)
    batch["labels"][0, a] = batch["input_ids"][0, a]
    table = torch.from_numpy(load_item_embeddings(env["emb"], len(env["titles"])))
    m = cls(base, init_projector(D_REC, base.get_input_embeddings(), 0), table, enc.special_ids[0])
    g = _embed_grads(m, batch)
    # measured: the smallest earlier-position gradient is ~1e-4 of the largest (random tiny model);
    # float32 rounding would leave ~1e-7, so 1e-5 separates "reached" from "rounding" on any machine
    assert torch.all(g[:a] > 1e-5 * g.max()), g
    if cls is LlaraLM:
        assert torch.all(g[a:] == 0), g
    else:
        assert g[a] > 1e-3 * g.max(), g


# ---- curriculum, sampling, schedule --------------------------------------------------------------

def test_curriculum_share_follows_tau_over_T(env):
    rows = load_train_rows(env["data"] / "train.parquet", len(env["titles"]))
    sch = Schedule(rows, len(env["titles"]), seed=5, epochs=40, effective_batch=32, n_candidates=10, n_templates=3,
                   curriculum="linear", representation="hybrid")
    T = sch.total_steps
    shares = np.array([np.mean([s["hybrid"] for s in sch.step_samples(t)]) for t in range(1, T + 1)])
    expected = np.arange(1, T + 1) / T
    assert shares[-1] == 1.0
    assert shares[:max(1, T // 20)].mean() < 0.1
    # binned shares track tau/T (binomial noise over 32 x bin samples)
    bins = np.array_split(np.arange(T), 10)
    for b in bins:
        assert abs(shares[b].mean() - expected[b].mean()) < 0.08
    assert np.corrcoef(shares, expected)[0, 1] > 0.95
    assert hybrid_probability("none", 3, 10) == 0.0 and hybrid_probability("hybrid_only", 1, 10) == 1.0
    # the authors' released code: the counter restarts every epoch, so p climbs to 1/epochs and resets
    p = [hybrid_probability("epoch_reset", t, 50, 10) for t in range(1, 51)]
    assert p[0] == p[10] == p[40] == 1 / 50 and p[9] == p[49] == 10 / 50 and max(p) == 0.2
    s = sch.step_samples(7)
    assert s == sch.step_samples(7)  # a pure function of (seed, step): resume sees the same batches
    assert all(x["representation"] == ("hybrid" if x["hybrid"] else "text") for x in s)


def test_candidates_sampler():
    rng = np.random.default_rng(0)
    for _ in range(50):
        c = sample_candidates(rng, [1, 2, 3], 7, 40, 20)
        assert len(c) == 20 and len(set(c)) == 20 and c.count(7) == 1 and not {1, 2, 3} & set(c)
    with pytest.raises(ValueError, match="n_candidates"):
        sample_candidates(rng, list(range(30)), 35, 40, 20)


def test_lr_schedule():
    T, w = 100, 5
    assert lr_at(0, T, 1e-3, 1e-5, 1e-6, w) == pytest.approx(1e-6)
    assert lr_at(w, T, 1e-3, 1e-5, 1e-6, w) == pytest.approx((1e-3 - 1e-5) * 0.5 * (1 + np.cos(np.pi * w / T)) + 1e-5)
    assert lr_at(T, T, 1e-3, 1e-5, 1e-6, w) == pytest.approx(1e-5)


# ---- inference -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned(env):
    """A 'tuned' model: random LoRA weights + random projector saved like the tune rule does."""
    from llara.llm.projector import save_projector

    tok, base = load_base(env["model"])
    torch.manual_seed(0)
    lm = add_lora(base)
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    out = env["root"] / "tuned"
    lm.save_pretrained(out / "adapter")
    proj = init_projector(D_REC, base.get_input_embeddings(), 1)
    save_projector(proj, out / "projector.safetensors", {"dataset": "lastfm", "prompt_format": "raw",
                                                         "templates": load_templates("lastfm")})
    return out


def _rows(env, n=3):
    return pq.read_table(env["data"] / "test.parquet").to_pylist()[:n]


@pytest.mark.parametrize("representation", ["hybrid", "text"])
def test_score_candidates_equals_naive(env, tuned, representation):
    from llara.llm.inference import load_llara, score_candidates, score_candidates_naive

    m = load_llara(env["model"], env["data"] / "items.parquet", env["emb"], tuned / "adapter",
                   tuned / "projector.safetensors", merge_adapter=False)
    rows = _rows(env)
    fast = score_candidates(m, rows, representation, batch_size=2)
    naive = score_candidates_naive(m, rows, representation)
    assert fast.shape == (3, len(rows[0]["candidates"]))
    np.testing.assert_allclose(fast, naive, rtol=1e-5, atol=1e-4)


def test_zero_shot_score_and_generate(env):
    from llara.llm.inference import generate, load_llara, score_candidates, score_candidates_naive

    m = load_llara(env["model"], env["data"] / "items.parquet")
    assert m.zero_shot and m.encoder.prompt_format == "chat"  # instruct-style tokenizer: chat template
    rows = _rows(env, 2)
    np.testing.assert_allclose(score_candidates(m, rows), score_candidates_naive(m, rows), rtol=1e-5, atol=1e-4)
    out = generate(m, rows, max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


def test_generate_batched_equals_single(env, tuned):
    from llara.llm.inference import generate, load_llara

    m = load_llara(env["model"], env["data"] / "items.parquet", env["emb"], tuned / "adapter",
                   tuned / "projector.safetensors")
    rows = _rows(env, 4)
    rows[1] = dict(rows[1], history=rows[1]["history"][:3])  # different prompt lengths: left padding matters
    assert generate(m, rows, batch_size=4, max_new_tokens=6) == generate(m, rows, batch_size=1, max_new_tokens=6)


# ---- bad input ------------------------------------------------------------------------------------

def _paths(env, **kw):
    from llara.llm.train import TunePaths

    d = dict(base=str(env["model"]), items=str(env["data"] / "items.parquet"), train=str(env["data"] / "train.parquet"),
             embeddings=str(env["emb"]), out_dir=str(env["root"] / "o"), ckpt_dir=str(env["root"] / "c"))
    d.update(kw)
    return TunePaths(**d)


def test_bad_input_errors_before_training(env, tmp_path, capsys):
    from llara.llm.train import TuneConfig, main, preflight

    ds = Path(__file__).resolve().parents[1] / "config" / "deepspeed" / "zero2.json"
    cfg = TuneConfig.from_dict({"deepspeed_config": str(ds)})
    preflight(cfg, _paths(env))  # the good case passes
    # embedding table with a missing row
    short = tmp_path / "short.parquet"
    write_random_embeddings(short, len(env["titles"]) - 1, D_REC)
    with pytest.raises(ValueError, match=r"short\.parquet: 39 embedding rows but items.parquet has 40"):
        preflight(cfg, _paths(env, embeddings=str(short)))
    with pytest.raises(FileNotFoundError, match="item embeddings .*missing.parquet"):
        preflight(cfg, _paths(env, embeddings=str(tmp_path / "missing.parquet")))
    # unknown model path
    with pytest.raises(FileNotFoundError, match="no/such/model"):
        preflight(cfg, _paths(env, base=str(tmp_path / "no/such/model")))
    # DeepSpeed config that does not parse
    bad = tmp_path / "ds.json"
    bad.write_text('{"zero_optimization": {"stage": 2,}}')
    with pytest.raises(ValueError, match=r"tune.deepspeed_config: .*ds\.json is not valid JSON"):
        preflight(TuneConfig.from_dict({"deepspeed_config": str(bad)}), _paths(env))
    # template without placeholders
    tpl = tmp_path / "tpl.yaml"
    tpl.write_text("datasets: {lastfm: artist}\ndomains: {artist: ['Pick one. The answer is']}\n")
    with pytest.raises(ValueError, match=r"tpl\.yaml.*lacks the placeholder"):
        preflight(cfg, _paths(env, templates=str(tpl)))
    # config keys
    with pytest.raises(ValueError, match="tune.curriculum"):
        TuneConfig.from_dict({"curriculum": "cosine"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr_max'\]"):
        TuneConfig.from_dict({"lr_max": 1.0})
    # the CLI fails the same way, in one line with exit status 2, before any model or DeepSpeed is loaded
    with pytest.raises(SystemExit) as e:
        main(["--config-json", json.dumps({"deepspeed_config": str(ds)}), "--base", str(env["model"]),
              "--items", str(env["data"] / "items.parquet"), "--train", str(env["data"] / "train.parquet"),
              "--embeddings", str(short), "--out-dir", str(tmp_path / "o"), "--ckpt-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("llara tune: error: ") and "embedding rows" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_embedding_dim_mismatch_with_projector(env, tuned, tmp_path):
    from llara.llm.inference import load_llara

    wrong = tmp_path / "wrong.parquet"
    write_random_embeddings(wrong, len(env["titles"]), D_REC + 1)
    with pytest.raises(ValueError, match=r"wrong\.parquet: embedding dimension 17 != the projector's input size 16"):
        load_llara(env["model"], env["data"] / "items.parquet", wrong, tuned / "adapter", tuned / "projector.safetensors")


def test_base_llm_local_source(env, tmp_path):
    from llara.llm.base import prepare_base_llm

    info = prepare_base_llm({"source": "local", "path": str(env["model"])}, tmp_path / "m")
    assert info["source"] == "local" and (tmp_path / "m" / "config.json").is_file()
    tok, model = load_base(tmp_path / "m")
    assert model.config.hidden_size == 32
    with pytest.raises(FileNotFoundError, match="llm.path: model folder .*nowhere does not exist"):
        prepare_base_llm({"source": "local", "path": str(tmp_path / "nowhere")}, tmp_path / "m2")
    with pytest.raises(ValueError, match="llm.source"):
        prepare_base_llm({"source": "ftp"}, tmp_path / "m3")


def test_workflow_settings_precedence():
    import yaml

    from llara.llm import workflow as wf
    from llara.llm.train import TuneConfig

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    config["tune"]["overrides"] = {"steam": {"lr": 5e-4, "lora": {"r": 16}}}
    s = wf.tune_settings(config, "steam", "text_only")
    assert s["lr"] == 5e-4 and s["lora"]["r"] == 16 and s["lora"]["alpha"] == 32
    assert s["representation"] == "text" and s["curriculum"] == "none" and s["dataset"] == "steam"
    assert "variants" not in s and "overrides" not in s
    TuneConfig.from_dict(s)  # every resolved slice is a valid TuneConfig
    for v in config["tune"]["variants"]:
        TuneConfig.from_dict(wf.tune_settings(config, "lastfm", v))
    assert wf.tune_settings(config, "lastfm") == wf.tune_settings(config, "lastfm")
    with pytest.raises(ValueError, match="tune.variants.nope"):
        wf.tune_settings(config, "lastfm", "nope")
    inputs = wf.tune_inputs(config, "lastfm", "sasrec")
    assert inputs["embeddings"] == "results/lastfm/sasrec/seqrec/item_embeddings.parquet"
    assert inputs["base"] == "resources/llm/smollm2-135m-instruct"


# The authors' train_*.sh at HEAD (github.com/ljy0ustc/LLaRA 9733f73): lr, warm-up start, cosine floor,
# micro-batch x accumulation. config/paper.yaml must resolve to exactly these per dataset.
AUTHORS_TRAIN_SH = {"lastfm": (7e-4, 7e-6, 7e-6, 8, 16), "movielens": (8e-4, 8e-6, 8e-6, 8, 16),
                    "steam": (5e-4, 5e-6, 5e-6, 4, 32)}


@pytest.mark.parametrize("dataset", sorted(AUTHORS_TRAIN_SH))
def test_paper_config_matches_the_authors_scripts(dataset):
    import yaml
    from snakemake.utils import update_config

    from llara.llm import workflow as wf
    from llara.llm.train import TuneConfig

    root = Path(__file__).resolve().parents[1] / "config"
    config = yaml.safe_load((root / "config.yaml").read_text())
    update_config(config, yaml.safe_load((root / "paper.yaml").read_text()))  # as --configfile does
    s = wf.tune_settings(config, dataset)
    TuneConfig.from_dict(s)
    lr, warm, floor, micro, accum = AUTHORS_TRAIN_SH[dataset]
    assert (s["lr"], s["warmup_start_lr"], s["min_lr"]) == (lr, warm, floor)
    assert s["micro_batch_size"] == micro and s["effective_batch_size"] == micro * accum
    assert s["epochs"] == 5 and s["max_train_samples"] is None and s["precision"] == "bf16"
    assert (s["lora"]["r"], s["lora"]["alpha"], s["lora"]["dropout"]) == (8, 32, 0.1)
