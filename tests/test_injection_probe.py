"""The injection probe (benchmarks/injection_probe.py) at toy scale: the tune stage's module in a plain loop,
accuracy scored before each step, both tasks, and a clear error for data that is not the synthetic genre set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import make_tiny_dataset
from llara.data.synthetic import write_genre_dataset
from llara.llm.data import load_titles, write_random_embeddings
from llara.llm.testing import make_tiny_llama

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import injection_probe  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    import torch

    n = torch.get_num_threads()  # the probe sets its own thread count in this process
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def genre_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    data = write_genre_dataset(root / "data", n_items=40, n_genres=4, n_train=200, n_eval=10, history=3,
                               n_candidates=5, candidate_sets=1, seed=3)
    write_random_embeddings(root / "emb.parquet", 40, 16, seed=1)
    base = make_tiny_llama(root / "base", load_titles(data / "items.parquet"))
    return root, data, base


@pytest.mark.parametrize("task", ["genre", "marker"])
def test_probe_reports_held_out_windows(genre_data, task):
    root, data, base = genre_data
    out = root / f"{task}.json"
    args = injection_probe.parser().parse_args(
        ["--data", str(data), "--embeddings", str(root / "emb.parquet"), "--base", str(base), "--task", task,
         "--steps", "4", "--report", "2", "--batch", "3", "--candidates", "5", "--threads", "1", "--out", str(out)])
    result = injection_probe.run(args)
    assert result["chance"] == pytest.approx(0.2)
    assert [w["steps"] for w in result["windows"]] == ["1-2", "3-4"]
    for w in result["windows"]:
        assert w["n"] == 6 and 0.0 <= w["accuracy"] <= 1.0 and w["loss"] > 0  # 2 steps x 3 decisions
    assert json.loads(out.read_text())["windows"] == result["windows"]


def test_probe_names_data_that_is_not_the_genre_set(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")
    args = injection_probe.parser().parse_args(["--data", str(data), "--base", str(tmp_path / "none")])
    with pytest.raises(ValueError, match=r"items\.parquet: source_id must be 'genre<k>'"):
        injection_probe.run(args)
