"""The prepared GPU throughput call (benchmarks/gpu/throughput.py), rehearsed on the CPU: ``--tiny`` runs every
configuration of the real call on toy shapes in a subprocess (an out-of-memory search, a missing package and
the budget each become a row, never a crash); the batch maker and the FLOP count are checked directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu" / "throughput.py"
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))

import throughput  # noqa: E402

STATUSES = {"ok", "failed", "unavailable", "skipped"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("throughput") / "throughput.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    t0 = time.perf_counter()
    # --fake-oom-tokens 300: a micro-batch of more than 300 padded tokens raises torch.cuda.OutOfMemoryError, so
    # the auto search (4 x ~64-80 tokens first) has to halve; --budget-s bounds the run on a loaded CPU
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out), "--fake-oom-tokens", "300",
                           "--budget-s", "40"], capture_output=True, text=True, cwd=REPO, env=env, timeout=170)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, wall


def test_tiny_run_reports_every_configuration_as_a_row(tiny_run):
    result, stdout, wall = tiny_run
    assert wall < 90, f"the CPU rehearsal took {wall:.0f} s"
    rows = result["rows"]
    names = [r["name"] for r in rows]
    assert names == [c.name for c in throughput.plan_configs(throughput.resolve_args(
        throughput.parser().parse_args(["--tiny"])))]
    assert names[:3] == ["135m/sdpa/ckpt-off/mb-auto", "7b/sdpa/ckpt-on/mb-auto", "7b/sdpa/ckpt-off/mb-auto"]
    assert all(r["status"] in STATUSES for r in rows)
    assert [r["name"] for r in rows if r["status"] == "skipped"] == result["skipped"]
    first = rows[0]
    assert first["status"] == "ok", first
    assert first["tokens_per_s"] > 0 and first["step_s_median"] > 0 and 0 < first["mfu_4n"] <= first["mfu_full"]
    assert first["real_tokens_per_step"] <= first["padded_tokens_per_step"]
    # the auto search met the (fake) out-of-memory error at 4 and halved
    assert first["mb_tried"][0] == [4, "out of memory"] and first["mb_tried"][-1][1] == "ok"
    assert first["mb"] == first["mb_tried"][-1][0] < 4
    ran = [r for r in rows if r["status"] != "skipped"]
    assert any(r["status"] == "ok" and r["shape"] == "7b" for r in ran)
    for r in ran:
        if r["status"] == "ok":
            assert r["tokens_per_s"] > 0 and r["timed_steps"] >= 2 and r["goal"]
        else:
            assert r["reason"]
    # a lever whose package is missing is a row saying so, not a crash
    if not throughput.importlib.util.find_spec("flash_attn"):
        fa2 = [r for r in ran if r.get("attn") == "flash_attention_2"]
        assert fa2 and all(r["status"] == "unavailable" and "flash_attn" in r["reason"] for r in fa2)
    if not throughput.importlib.util.find_spec("liger_kernel"):
        assert all(r["status"] == "unavailable" for r in ran if r.get("liger"))
    assert result["shapes"]["135m"]["n_nonembedding"] > 0
    assert "4*N*T" in result["flops_formula"] and result["peak_tflops"] > 0
    assert "| config | mb | status | tokens/s |" in stdout and "135m/sdpa/ckpt-off/mb-auto" in stdout


def test_out_of_memory_at_a_fixed_micro_batch_is_a_failed_row(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert throughput.main(["--tiny", "--out", str(out), "--only", "135m/sdpa/ckpt-off/mb-2", "--mb-135m", "2",
                            "--fake-oom-tokens", "60", "--budget-s", "30"]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "failed" and "out of memory at micro-batch 2" in row["reason"]
    assert "out of memory at micro-batch 2" in capsys.readouterr().out


def test_budget_skips_and_lists_the_rest(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert throughput.main(["--tiny", "--out", str(out), "--shapes", "135m", "--budget-s", "0"]) == 0
    result = json.loads(out.read_text())
    assert result["rows"] and all(r["status"] == "skipped" for r in result["rows"])
    assert result["skipped"] == [r["name"] for r in result["rows"]]
    assert "Skipped (budget" in capsys.readouterr().out


def test_lengths_follow_lastfm_and_sorted_batches_pad_less():
    import numpy as np

    lens = throughput.draw_lengths(np.random.default_rng(0), 20000, throughput.LASTFM_MEAN_LENGTH)
    assert abs(np.mean(lens) - 201.5) < 1.5 and min(lens) >= 142 and max(lens) <= 254
    scaled = throughput.draw_lengths(np.random.default_rng(0), 20000, 256.0)
    assert abs(np.mean(scaled) - 256) < 2
    assert throughput.max_length(201.5) == 254 and throughput.max_length(256.0) == 323
    # the tune loop's cut (llara.llm.batches): a step's 128 samples sorted by length, then cut
    sorted_plan = throughput.plan_lengths(np.random.default_rng(1), 16, 32, 201.5, sort=True)
    unsorted_plan = throughput.plan_lengths(np.random.default_rng(1), 16, 32, 201.5, sort=False)
    for plan in (sorted_plan, unsorted_plan):
        assert len(plan) == 32 and all(len(b) == 16 for b in plan)
    assert all(max(a) <= min(b) for a, b in zip(sorted_plan[:7], sorted_plan[1:8]))  # one step, in length order

    def eff(plan):
        return sum(map(sum, plan)) / sum(max(b) * len(b) for b in plan)

    assert eff(sorted_plan) > eff(unsorted_plan) + 0.05
    big = throughput.plan_lengths(np.random.default_rng(1), 256, 4, 201.5, sort=True)  # a micro-batch > a step
    assert [len(b) for b in big] == [256] * 4


def test_batch_has_slots_answers_and_padding():
    import torch

    gen = torch.Generator().manual_seed(0)
    b = throughput.make_batch(gen, [60, 50], vocab=512, special_first=512)
    assert b["input_ids"].shape == (2, 60)
    assert b["attention_mask"].sum(1).tolist() == [60, 50]
    assert (b["labels"] != -100).sum(1).tolist() == [throughput.ANSWER_TOKENS] * 2
    assert (b["labels"][1, 45:50] == b["input_ids"][1, 45:50]).all() and (b["labels"][1, 50:] == -100).all()
    slots = b["item_slots"] >= 0
    assert slots.sum(1).tolist() == [30, 30]
    assert (b["input_ids"][slots] >= 512).all() and (b["input_ids"][~slots] < 512).all()
    assert not (slots & (b["labels"] != -100)).any()  # no slot inside the answer


def test_flop_count_is_the_stated_formula():
    dims = {"num_hidden_layers": 2, "hidden_size": 8, "vocab_size": 100}
    bench = throughput.Bench("135m", dims, None, None, n_nonembedding=1000, n_total=1800, n_trainable=10, build_s=0)
    f4n, full = throughput.flops_of(bench, [10, 20])
    assert f4n == 4 * 1000 * 30
    a = throughput.ANSWER_TOKENS
    assert full == f4n + 6 * 2 * 8 * (10 ** 2 + 20 ** 2) + 4 * 100 * 8 * a * 2


FAKE_LIGER = '''
from transformers.models.llama import modeling_llama

CALLS = []


def apply_liger_kernel_to_llama(rope=True, cross_entropy=False, fused_linear_cross_entropy=True, rms_norm=True,
                                swiglu=True, model=None):
    CALLS.append({"rope": rope, "rms_norm": rms_norm, "swiglu": swiglu, "cross_entropy": cross_entropy,
                  "fused_linear_cross_entropy": fused_linear_cross_entropy, "model": type(model).__name__})
    original = modeling_llama.apply_rotary_pos_emb

    def patched(*args, **kwargs):  # as Liger does: a module-level function replaced for every later model
        return original(*args, **kwargs)

    modeling_llama.apply_rotary_pos_emb = patched
'''


def test_liger_lever_is_applied_without_fused_ce_and_undone_for_later_models(tmp_path, monkeypatch, capsys):
    """With a stand-in liger_kernel (the real one needs CUDA): rms_norm, rope and swiglu are asked for, the fused
    linear cross-entropy is not (LlaraLM computes its own loss), and the module-level patch is undone after."""
    from transformers.models.llama import modeling_llama

    pkg = tmp_path / "site" / "liger_kernel" / "transformers"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text(FAKE_LIGER)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    original = modeling_llama.apply_rotary_pos_emb
    out = tmp_path / "t.json"
    assert throughput.main(["--tiny", "--out", str(out), "--only", "135m/sdpa/ckpt-off/mb-best/liger",
                            "--budget-s", "30"]) == 0
    import liger_kernel.transformers as fake

    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "ok" and row["tokens_per_s"] > 0
    assert "fused linear CE not applicable" in row["liger_applied"]
    assert fake.CALLS == [{"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                           "fused_linear_cross_entropy": False, "model": "LlamaForCausalLM"}]
    assert modeling_llama.apply_rotary_pos_emb is original
    for name in ("liger_kernel.transformers", "liger_kernel"):
        sys.modules.pop(name, None)
    capsys.readouterr()
