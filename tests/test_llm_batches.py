"""The tune loop's inputs and its CPU dropout: length-grouped micro-batch plans, step batches built ahead,
the prefetch thread, the micro-batch choice, and PackedDropout (statistics, determinism, gradient)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from conftest import make_tiny_dataset
from llara.llm.batches import Prefetcher, build_step, choose_micro_batch, plan_micro_batches
from llara.llm.data import Schedule, load_titles, load_train_rows
from llara.llm.dropout import PackedDropout, pack_lora_dropout
from llara.llm.prompts import IGNORE, PromptEncoder, load_templates
from llara.llm.testing import make_tiny_llama
from test_llm_train import CFG, _args, _log, _run, env  # noqa: F401 (env: the tiny model and data, a fixture)


def test_plan_groups_by_length_and_deals_chunks_to_ranks():
    lengths = [30, 10, 50, 20, 40, 60, 15, 25]
    plan = plan_micro_batches(lengths, micro=2, world=2)
    assert len(plan) == 2 and all(len(p) == 2 for p in plan)          # 2 accumulation steps x 2 ranks
    assert plan == [[[1, 6], [3, 7]], [[0, 4], [2, 5]]]               # sorted, chunk j -> rank j % world
    flat = sorted(i for m in plan for r in m for i in r)
    assert flat == list(range(8))
    assert plan_micro_batches(lengths, 4, 1, group_by_length=False) == [[[0, 1, 2, 3]], [[4, 5, 6, 7]]]
    with pytest.raises(ValueError, match="do not split into micro-batches of 3"):
        plan_micro_batches(lengths, 3, 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    data = make_tiny_dataset(root / "data")
    titles = load_titles(data / "items.parquet")
    model_dir = make_tiny_llama(root / "model", titles)
    from transformers import AutoTokenizer

    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(model_dir)), titles, load_templates("lastfm"), "raw")
    rows = load_train_rows(data / "train.parquet", len(titles), 32, 0)
    sched = Schedule(rows, len(titles), 3, 1, 8, 8, len(enc.templates), "linear", "hybrid")
    return {"enc": enc, "sched": sched, "model": model_dir, "titles": titles}


def test_step_batches_cover_the_step_and_count_its_answer_tokens(tiny):
    enc, samples = tiny["enc"], tiny["sched"].step_samples(2)
    per_rank = [build_step(enc, samples, 2, micro=2, rank=r, world=2) for r in range(2)]
    seen, answer = [], 0
    for sb in per_rank:
        assert len(sb.micro) == 2 and sb.samples == samples
        for b, part in zip(sb.micro, sb.micro_samples):
            ref = enc.training_batch(part)          # the same tensors as tokenising the part alone
            assert all(torch.equal(b[k], ref[k]) for k in ref)
            answer += int((b["labels"] != IGNORE).sum())
            seen += [s["row"] for s in part]
        assert 0 < sb.real_tokens <= sb.padded_tokens
    assert sorted(seen) == sorted(s["row"] for s in samples)
    assert per_rank[0].answer_tokens == per_rank[1].answer_tokens == answer


def test_grouping_pads_less_than_the_steps_order(tiny):
    enc, samples = tiny["enc"], [s for step in (1, 2, 3) for s in tiny["sched"].step_samples(step)]
    grouped = build_step(enc, samples, 1, micro=4, rank=0, world=1)
    plain = build_step(enc, samples, 1, micro=4, rank=0, world=1, group_by_length=False)
    assert grouped.real_tokens == plain.real_tokens
    assert grouped.padded_tokens <= plain.padded_tokens


def test_prefetcher_keeps_order_and_hands_errors_over():
    calls = []

    def make(step):
        calls.append(threading.current_thread().name)
        if step == 4:
            raise RuntimeError("bad step 4")
        return step * 10

    p = Prefetcher(make, range(1, 6))
    assert [p.get(s) for s in (1, 2, 3)] == [10, 20, 30]
    with pytest.raises(RuntimeError, match="bad step 4"):
        p.get(4)
    p.close()
    assert set(calls) == {"llara-batches"}
    q = Prefetcher(lambda s: s, range(1, 100), depth=2)
    assert q.get(1) == 1
    q.close()  # stops mid-way without hanging


def test_choose_micro_batch_takes_the_largest_that_fits_and_divides():
    assert choose_micro_batch(16, 1, lambda m: True, cap=8) == 8
    assert choose_micro_batch(16, 2, lambda m: True) == 8
    assert choose_micro_batch(128, 1, lambda m: m <= 24) == 16
    assert choose_micro_batch(24, 1, lambda m: True) == 8          # powers of two dividing 24
    assert choose_micro_batch(16, 1, lambda m: False) == 1


def test_packed_dropout_statistics_determinism_and_gradient():
    d = PackedDropout(0.1).train()
    assert d.effective_p == pytest.approx(0.1, abs=1 / 65536)
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(5)
    y = d(x)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - d.effective_p) < 4 * (0.1 * 0.9 / 1e6) ** 0.5          # 4 sigma
    assert float(y.detach().mean()) == pytest.approx(1.0, abs=3e-3)             # expectation kept
    values = torch.unique(y.detach()).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(d.scale)
    torch.manual_seed(5)
    assert torch.equal(d(x), y)                                                 # a function of the seed
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())                                      # d y / d x = mask x scale
    bf = torch.randn(7, 33, dtype=torch.bfloat16)
    assert d(bf).dtype == torch.bfloat16 and d(bf).shape == bf.shape            # odd sizes, bf16
    d.eval()
    assert torch.equal(d(x), x)
    assert torch.equal(PackedDropout(0.0).train()(x), x)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        PackedDropout(1.0)


def test_pack_lora_dropout_replaces_every_lora_dropout(tiny):
    from llara.llm.model import add_lora, load_base

    _, base = load_base(tiny["model"])
    lm = add_lora(base, dropout=0.1)
    n_layers = base.config.num_hidden_layers
    assert pack_lora_dropout(lm) == 7 * n_layers
    drops = [m for m in lm.modules() if isinstance(m, PackedDropout)]
    assert len(drops) == 7 * n_layers and all(m.p == 0.1 for m in drops)
    assert not any(type(m) is nn.Dropout for m in lm.modules() if hasattr(m, "lora_dropout"))
    _, base0 = load_base(tiny["model"])
    assert pack_lora_dropout(add_lora(base0, dropout=0.0)) == 0  # peft uses nn.Identity then


def test_micro_batch_size_does_not_change_the_training_curve(env, tmp_path):
    """The loss is normalised by the step's answer tokens, so cutting a step into 4 micro-batches of 2 or 2 of 4
    (length-grouped either way) gives the same updates up to float rounding (LoRA dropout off: its masks are
    drawn per micro-batch)."""
    import sys

    from llara.llm.batches import cpu_micro_batch_cap

    auto = min(cpu_micro_batch_cap(), CFG["effective_batch_size"])  # 8, or 4 on a machine under 16 GiB of RAM
    curves = {}
    for micro in (2, "auto"):
        cfg = {**CFG, "epochs": 1, "micro_batch_size": micro, "lora": {"dropout": 0.0}}
        out = tmp_path / f"mb{micro}"
        res = _run([sys.executable, "-m", "llara.llm.train", *_args(env, out, tmp_path / f"ck{micro}", cfg)])
        assert res.returncode == 0, res.stderr[-3000:]
        m = 2 if micro == 2 else auto
        assert f"micro {m} x accum {CFG['effective_batch_size'] // m}" in res.stderr
        curves[micro] = _log(out / "train_log.csv")
    a, b = curves[2], curves["auto"]
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4, abs=1e-5)
        assert ra["grad_norm_lora"] == pytest.approx(rb["grad_norm_lora"], rel=1e-3)
        assert 0 < ra["pad_ratio"] <= 1 and 0 < rb["pad_ratio"] <= 1
