"""Evaluation orchestration with a fake model (real metric code), paired comparison, bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llara.data.schema import EVAL
from llara.evaluate.compare import outcome_matrix, paired_difference
from llara.evaluate.run import PREDICTIONS, evaluate_engine, evaluate_llm, load_titles
from llara.io import write_parquet


class FakeEngine:
    """Deterministic stand-in for a LLaRA model: knows the target for some rows, babbles on others."""

    device = "cpu"

    def __init__(self, titles: dict[int, str], targets: dict[tuple, int], skill: int = 2):
        self.titles, self.targets, self.skill = titles, targets, skill
        self.calls = 0

    def _target(self, row):
        return self.targets[tuple(row["history"])]

    def generate(self, rows):
        self.calls += 1
        out = []
        for row in rows:
            t, c = self._target(row), row["candidates"]
            h = row["history"][-1] % 5
            if h < self.skill:                         # right answer, with some noise around it
                out.append(f"The answer is {self.titles[t].upper()}.\nignored second line {self.titles[c[0]]}")
            elif h == 2:                               # two candidates: invalid
                out.append(f"{self.titles[c[0]]} or {self.titles[c[1]]}")
            elif h == 3:                               # no candidate: invalid
                out.append("I do not know")
            else:                                      # a wrong but valid candidate
                wrong = next(x for x in c if x != t)
                out.append(self.titles[wrong])
        return out

    def score(self, rows):
        out = []
        for row in rows:
            t = self._target(row)
            s = np.array([-(x * 7 % 11) for x in row["candidates"]], dtype=float)
            if row["history"][-1] % 5 < self.skill:
                s[row["candidates"].index(t)] = 1.0
            out.append(s)
        return np.stack(out)


def _engine(data_dir, skill=2):
    titles = load_titles(data_dir / "items.parquet")
    targets = {}
    for split in ("valid", "test"):
        t = pq.read_table(data_dir / f"{split}.parquet")
        for h, y in zip(t.column("history").to_pylist(), t.column("target").to_pylist()):
            targets[tuple(h)] = y
    return FakeEngine(titles, targets, skill)


def _run(data_dir, out, engine, **kw):
    kw.setdefault("k", 2)
    return evaluate_engine(engine, data_dir / "items.parquet",
                           {"test": data_dir / "test.parquet", "valid": data_dir / "valid.parquet"},
                           out / "predictions.parquet", out / "metrics.json", seed=7, n_resamples=200,
                           meta={"method": "fake", "dataset": "tiny"}, config={"k": kw["k"]}, progress=False, **kw)


def test_evaluate_engine_end_to_end(tiny_data, tmp_path):
    engine = _engine(tiny_data)
    m = _run(tiny_data, tmp_path, engine, chunk_rows=16)
    pred = pq.read_table(tmp_path / "predictions.parquet")
    assert pred.schema.equals(PREDICTIONS)
    n_test = pq.read_metadata(tiny_data / "test.parquet").num_rows
    assert pred.num_rows == 2 * 2 * 2 * n_test  # splits x modes x sets x rows (valid and test both 60 rows)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["splits"]["test"]["generate"]["mean"]["hr@1"] == pytest.approx(m["splits"]["test"]["generate"]["mean"]["hr@1"])
    assert on_disk["metric_rule"].startswith("llara-substring")
    prov = on_disk["provenance"]
    assert set(prov["rows_per_s"]["test"]) == {"generate", "rank"} and prov["seed"] == 7
    assert "items" in prov["inputs_sha256"]

    # the counts follow the fake's behaviour exactly (h = history[-1] % 5)
    test = pq.read_table(tiny_data / "test.parquet")
    h = np.array([x[-1] % 5 for x in test.column("history").to_pylist()])
    g = m["splits"]["test"]["generate"]
    for s in (0, 1):
        e = g["per_set"][s]
        assert e["n"] == n_test
        assert e["n_valid"] == int(((h < 2) | (h == 4)).sum())
        assert e["n_correct"] == int((h < 2).sum())
        assert e["strict_hr@1"] == pytest.approx((h < 2).mean())
        assert e["hr@1"] == pytest.approx((h < 2).sum() / ((h < 2) | (h == 4)).sum())
        assert e["n_multiple"] == int((h == 2).sum())
    r = m["splits"]["test"]["rank"]
    assert r["mean"]["valid_ratio"] == 1.0
    assert r["per_set"][0]["hr@1"] >= (h < 2).mean()  # known rows rank first; others by chance
    assert g["mean"]["hr@1_ci"][0] <= g["mean"]["hr@1"] <= g["mean"]["hr@1_ci"][1]

    gen = pred.filter(pa.compute.equal(pred["mode"], "generate")).to_pylist()
    for row in gen:
        assert (row["predicted"] is None) == (not row["valid"])
        assert row["correct"] == (row["predicted"] == row["target"])
        assert row["target"] in row["candidates"]
    for row in pred.filter(pa.compute.equal(pred["mode"], "rank")).to_pylist():
        assert row["correct"] == (row["predicted"] == row["target"]) == (row["target_rank"] == 0)
        assert len(row["scores"]) == len(row["candidates"])

    # deterministic: a second run gives the same metrics (seeded bootstrap, greedy fake)
    m2 = _run(tiny_data, tmp_path / "again", _engine(tiny_data), chunk_rows=7)
    assert _strip_rates(m2) == _strip_rates(m)


def _strip_rates(m):
    s = json.loads(json.dumps(m["splits"]))
    for split in s.values():
        for mode in ("generate", "rank"):
            split[mode].pop("rows_per_s", None)
    return s


def test_paired_difference_between_two_methods(tiny_data, tmp_path):
    _run(tiny_data, tmp_path / "a", _engine(tiny_data, skill=2))
    _run(tiny_data, tmp_path / "b", _engine(tiny_data, skill=1))
    pa_ = pq.read_table(tmp_path / "a" / "predictions.parquet")
    pb = pq.read_table(tmp_path / "b" / "predictions.parquet")
    d = paired_difference(pa_, pb, split="test", metric="strict_hr@1", seed=3, n_resamples=300)
    assert d["sets"] == [0, 1] and d["diff"] > 0 and d["ci"][0] > 0  # A knows strictly more rows
    same = paired_difference(pa_, pa_, split="test", mode_a="generate", mode_b="generate")
    assert same["diff"] == 0
    cross = paired_difference(pa_, pb, split="test", mode_a="generate", mode_b="rank", metric="hr@1")
    assert -1 <= cross["diff"] <= 1
    m = outcome_matrix(pa_, "test", "rank")
    assert m["valid"].all() and m["correct"].shape[1] == 2
    # other candidates -> not paired
    other = pb.set_column(pb.schema.get_field_index("candidates"), "candidates",
                          pa.array([c[::-1] for c in pb.column("candidates").to_pylist()], pa.list_(pa.int64())))
    with pytest.raises(ValueError, match="not paired"):
        paired_difference(pa_, other, split="test")


def _rewrite(src, dst, fn):
    t = pq.read_table(src)
    cols = {n: t.column(n).to_pylist() for n in EVAL.names}
    fn(cols)
    write_parquet(pa.table(cols), dst, EVAL)


def test_bad_input_is_named(tiny_data, tmp_path):
    engine = _engine(tiny_data)
    # a row whose candidate set lacks the target
    bad = tmp_path / "bad" / "test.parquet"

    def drop_target(cols):
        s = cols["candidate_sets"][3]
        s[1] = [x if x != cols["target"][3] else 10_000 for x in s[1]]
    _rewrite(tiny_data / "test.parquet", bad, drop_target)
    with pytest.raises(ValueError, match=r"test.parquet: row 3 .*candidate set 1: the target occurs 0 times"):
        evaluate_engine(engine, tiny_data / "items.parquet", {"test": bad}, tmp_path / "p.parquet",
                        tmp_path / "m.json", k=2, progress=False)
    assert not (tmp_path / "p.parquet").exists() and not (tmp_path / "m.json").exists()
    # more candidate sets requested than stored
    with pytest.raises(ValueError, match="3 candidate set.*but 5 are requested"):
        evaluate_engine(engine, tiny_data / "items.parquet", {"test": tiny_data / "test.parquet"},
                        tmp_path / "p.parquet", tmp_path / "m.json", k=5, progress=False)
    # an empty split
    empty = tmp_path / "empty" / "test.parquet"
    write_parquet(pq.read_table(tiny_data / "test.parquet").slice(0, 0), empty, EVAL)
    with pytest.raises(ValueError, match="empty"):
        evaluate_engine(engine, tiny_data / "items.parquet", {"test": empty}, tmp_path / "p.parquet",
                        tmp_path / "m.json", progress=False)
    # no tuned model for the requested dataset/backbone
    with pytest.raises(FileNotFoundError, match="no tuned model for dataset 'tiny', backbone 'sasrec'"):
        evaluate_llm(tmp_path, tiny_data / "items.parquet", {"test": tiny_data / "test.parquet"},
                     tmp_path / "p.parquet", tmp_path / "m.json", dataset="tiny", seqrec="sasrec",
                     adapter_dir=tmp_path / "nope" / "adapter", projector_path=tmp_path / "nope" / "projector.safetensors")
    # an unknown mode
    with pytest.raises(ValueError, match="unknown evaluation mode"):
        evaluate_engine(engine, tiny_data / "items.parquet", {"test": tiny_data / "test.parquet"},
                        tmp_path / "p.parquet", tmp_path / "m.json", modes=["beam"], progress=False)
