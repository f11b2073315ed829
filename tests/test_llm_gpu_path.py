"""The GPU path's invariants, checked on the CPU: collectives get device tensors, no host sync per
micro-batch, the projector is frozen on text-only steps, evaluation loads straight in its dtype."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_dataset
from llara.llm.data import load_titles, write_random_embeddings
from llara.llm.optim import GroupFreezingAdam, StepStats
from llara.llm.testing import make_tiny_llama


def test_step_stats_stay_on_the_device_and_reduce_there(monkeypatch):
    """A meta tensor cannot be read by the host: ``add`` succeeding proves no sync per micro-batch, and
    the tensor handed to all_reduce is the device's (NCCL refuses CPU tensors)."""
    seen = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: seen.append(t.device))
    meta = torch.device("meta")
    stats = StepStats(meta)
    for _ in range(3):
        stats.add(torch.ones((), device=meta), 17, torch.ones((), dtype=torch.long, device=meta))
    assert stats.reduced(world=2).device == meta
    assert seen == [meta]
    assert StepStats(meta).reduced(world=1).device == meta and len(seen) == 1  # one process: no collective


def test_step_stats_values():
    s = StepStats("cpu")
    s.add(torch.tensor(2.0), 10, torch.tensor(3))
    s.add(torch.tensor(4.0), 6, torch.tensor(1))
    # the loss is the mean over answer tokens: (2 x 3 + 4 x 1) / 4
    assert s.row() == {"loss": 2.5, "tokens": 16.0, "answer_tokens": 4.0, "loss_hybrid": None, "loss_text": None,
                       "first_token_loss": None, "inject_norm": None}
    # with LlaraLM.last_stats: losses per answer token split by representation, first-token and injected means
    diag = {"row_loss": torch.tensor([6.0, 2.0]), "row_tokens": torch.tensor([3.0, 1.0]),
            "first_loss": torch.tensor([4.0, 2.0]), "inject_norm": torch.tensor(10.0), "inject_count": torch.tensor(4.0)}
    s.add(torch.tensor(2.0), 8, torch.tensor(4), diag, torch.tensor([False, True]))
    s.add(torch.tensor(1.0), 8, torch.tensor(2), {**diag, "row_loss": torch.tensor([1.0, 1.0]),
                                                "inject_norm": torch.tensor(2.0)}, torch.tensor([False, False]))
    r = s.row()
    assert r["loss_hybrid"] == (6.0 + 1.0 + 1.0) / (3.0 + 3.0 + 1.0) and r["loss_text"] == 2.0 / 1.0
    assert r["first_token_loss"] == 3.0 and r["inject_norm"] == 12.0 / 8.0


def test_frozen_group_is_left_untouched():
    """While frozen, a group keeps its values and its Adam state (moments, step count) bit for bit,
    weight decay included; the other group moves; unfrozen, it moves again."""
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(4))
    opt = GroupFreezingAdam([{"params": [a], "weight_decay": 0.0}, {"params": [b], "weight_decay": 0.1}], lr=0.1)
    (a.sum() + b.sum()).backward()
    opt.step()
    b_before, state_before = b.detach().clone(), {k: v.clone() for k, v in opt.state[b].items()}
    a_before = a.detach().clone()
    opt.param_groups[1]["frozen"] = True
    b.grad.zero_()  # what ZeRO hands the optimizer on a text-only step: zeros, not None
    opt.step()
    assert torch.equal(b, b_before)
    assert all(torch.equal(opt.state[b][k], v) for k, v in state_before.items())
    assert not torch.equal(a, a_before)
    opt.param_groups[1]["frozen"] = False
    opt.step()
    assert not torch.equal(b, b_before)  # zero gradient, but momentum and decay move it once unfrozen


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpupath")
    data = make_tiny_dataset(root / "data")
    titles = load_titles(data / "items.parquet")
    write_random_embeddings(data / "emb.parquet", len(titles), 16, seed=1)
    return {"data": data, "model": make_tiny_llama(root / "model", titles)}


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_evaluation_loads_straight_in_its_dtype(tuned, monkeypatch, dtype):
    """load_llara asks transformers for the evaluation dtype and device: the base weights never exist
    in fp32 when evaluate.dtype is bf16 (a 7B model would need 28 GB of host RAM)."""
    from transformers import AutoModelForCausalLM

    from llara.llm.inference import load_llara

    calls = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        calls.append((kwargs.get("dtype"), kwargs.get("device_map")))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(recording))
    m = load_llara(tuned["model"], tuned["data"] / "items.parquet", dtype=dtype, device="cpu")
    want = getattr(torch, dtype)
    assert calls == [(want, "cpu")]
    assert {p.dtype for p in m.module.parameters()} == {want}
