"""The report from small fake results: table.md / table.csv in Table 1 layout, paired.csv, PNGs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from llara.evaluate.run import evaluate_engine
from llara.report.build import build_report
from llara.report.collect import Entry, summarize
from llara.report.paper import PAPER, paper_row_for

from test_evaluate_run import _engine

PNG = b"\x89PNG\r\n\x1a\n"


def _seqrec_metrics(path, hr1_per_set, n=60):
    """A metrics.json in the seqrec stage's layout."""
    per_set = [{"hr@1": h, "hr@5": min(1.0, h + 0.3), "ndcg@5": h + 0.1} for h in hr1_per_set]
    blk = {"n": n, "n_candidate_sets": len(per_set), "valid_ratio": 1.0, "per_set": per_set,
           "mean": {"hr@1": float(np.mean(hr1_per_set))}, "min": {}, "max": {},
           "hr@1_ci95_set0": [hr1_per_set[0] - 0.1, hr1_per_set[0] + 0.1],
           "hr@1_ci95_mean": [float(np.mean(hr1_per_set)) - 0.05, float(np.mean(hr1_per_set)) + 0.05]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": "sasrec", "valid": blk, "test": blk}))


def _train_log(path, steps=20):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "lr", "hybrid_share", "tokens_per_s"])
        for s in range(1, steps + 1):
            w.writerow([s, 3.0 / s, 7e-4, s / steps, 500.0])


@pytest.fixture
def results(tiny_data, tmp_path):
    """Fake results for two datasets: LLaRA and zero-shot (with predictions), SASRec (metrics only)."""
    entries = []
    for d, skill in (("lastfm", 2), ("movielens", 3)):
        root = tmp_path / "results" / d
        for kind, label, sk, sub in (("llara", "LLaRA(SASRec)", skill, "sasrec"), ("zeroshot", "Zero-shot LLM", 0, "zeroshot")):
            out = root / sub
            evaluate_engine(_engine(tiny_data, sk), tiny_data / "items.parquet", {"test": tiny_data / "test.parquet"},
                            out / "predictions.parquet", out / "metrics.json", k=2, seed=1, n_resamples=200,
                            meta={"method": kind, "dataset": d}, progress=False)
            e = {"dataset": d, "kind": kind, "label": label, "metrics": str(out / "metrics.json"),
                 "predictions": str(out / "predictions.parquet"), "seqrec": "sasrec" if kind == "llara" else None}
            if kind == "llara":
                _train_log(root / "sasrec" / "llara" / "train_log.csv")
                e["train_log"] = str(root / "sasrec" / "llara" / "train_log.csv")
            entries.append(e)
        _seqrec_metrics(root / "sasrec" / "seqrec" / "metrics.json", [0.30, 0.25, 0.35])
        entries.append({"dataset": d, "kind": "seqrec", "label": "SASRec", "seqrec": "sasrec",
                        "metrics": str(root / "sasrec" / "seqrec" / "metrics.json")})
    return entries


def test_report_renders_table_csv_and_pngs(results, tmp_path):
    out = tmp_path / "report"
    res = build_report(results, out, split="test", n_resamples=200, seed=1)
    md = (out / "table.md").read_text()
    assert ("| Method | MovieLens ValidRatio | MovieLens HR@1 | MovieLens seeds×sets | LastFM ValidRatio | LastFM HR@1 "
            "| LastFM seeds×sets |") in md
    assert "| Chance (random candidate) | 1.0000 | 0.1000 | — | 1.0000 | 0.1000 | — |" in md  # 10 candidates
    assert "10 candidates per row: chance HR@1 0.1000, HR@5 0.5000" in md
    assert "LLaRA(SASRec)" in md and "Zero-shot LLM (paper: Llama2)" in md
    assert "0.4508" in md and "0.2367" in md and "0.4421" in md  # paper values beside ours
    assert "## Paired differences" in md and "LLaRA(SASRec) | Zero-shot LLM | hr@1" in md
    # row order as the paper: seqrec baselines first, LLaRA last
    methods = [r["method"] for r in res["rows"]]
    assert methods.index("SASRec") < methods.index("Zero-shot LLM") < methods.index("LLaRA(SASRec)")
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    by = {r["method"]: r for r in rows}
    assert float(by["LLaRA(SASRec)"]["lastfm_paper_hr1"]) == 0.4508
    assert float(by["SASRec"]["movielens_paper_hr1"]) == 0.3556
    lo, hr, hi = (float(by["LLaRA(SASRec)"][f"lastfm_{c}"]) for c in ("hr1_ci_lo", "hr1", "hr1_ci_hi"))
    assert lo <= hr <= hi
    assert by["LLaRA(SASRec)"]["lastfm_k"] == "2"
    # seqrec only has aggregates: sets 0..1 of its 3 -> mean of the first two, no CI for a partial mean
    assert float(by["SASRec"]["lastfm_hr1"]) == pytest.approx(0.275)
    assert by["SASRec"]["lastfm_hr1_ci_lo"] == ""
    with open(out / "paired.csv") as f:
        paired = list(csv.DictReader(f))
    assert {p["metric"] for p in paired} == {"hr@1", "strict_hr@1"}
    strict = next(p for p in paired if p["metric"] == "strict_hr@1" and p["dataset"] == "lastfm")
    assert float(strict["diff"]) > 0 and float(strict["ci_lo"]) > 0  # the fake LLaRA knows more rows
    for png in ("hr1_ci.png", "training.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_report_is_deterministic(results, tmp_path):
    build_report(results, tmp_path / "a", n_resamples=100, seed=3)
    build_report(results, tmp_path / "b", n_resamples=100, seed=3)
    assert (tmp_path / "a" / "table.csv").read_text() == (tmp_path / "b" / "table.csv").read_text()
    assert (tmp_path / "a" / "table.md").read_text() == (tmp_path / "b" / "table.md").read_text()


def test_summaries_from_metrics_only(results):
    llara = Entry(**{**results[0], "predictions": None})
    s = summarize(llara, "test", "generate")
    assert s.sets == [0, 1] and s.hr1_ci is not None and s.rank["hr@1"] is not None
    seq = Entry(**results[2])
    s1 = summarize(seq, "test", sets=[0])
    assert s1.hr1 == pytest.approx(0.30) and s1.hr1_ci == pytest.approx([0.2, 0.4])
    s_all = summarize(seq, "test")
    assert s_all.hr1 == pytest.approx(0.30) and s_all.hr1_min == 0.25 and s_all.hr1_max == 0.35


def test_bad_report_input(tmp_path, results):
    with pytest.raises(ValueError, match="lists no results"):
        build_report([], tmp_path)
    with pytest.raises(ValueError, match="unknown kind"):
        Entry(dataset="lastfm", kind="gpt", label="x", metrics="m.json")
    missing = {**results[2], "metrics": str(tmp_path / "nope.json")}
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        build_report([missing], tmp_path / "r")


def test_paper_rows():
    assert paper_row_for("seqrec", "gru4rec") == "GRU4Rec"
    assert paper_row_for("llara", "sasrec") == "LLaRA(SASRec)"
    assert paper_row_for("zeroshot") == "Llama2"
    assert paper_row_for("ablation", "sasrec", "text_only") == "TALLRec"
    assert PAPER["LLaRA(SASRec)"]["steam"]["hr@1"] == 0.4949
    assert PAPER["Caser"]["lastfm"]["hr@1"] == 0.2186


def test_report_over_seeds(tiny_data, tmp_path):
    """Two training seeds per trained method: mean ± sd, seeds x sets, per-seed table and plot, paired by seed."""
    root = tmp_path / "results" / "lastfm"
    entries = []
    for kind, label, skills, sub in (("llara", "LLaRA(SASRec)", (3, 2), "sasrec"),
                                     ("ablation", "LLaRA(SASRec) id_only", (1, 2), "sasrec/ablations/id_only")):
        runs = []
        for s, skill in zip((42, 43), skills):
            out = root / sub / "seeds" / str(s)
            evaluate_engine(_engine(tiny_data, skill), tiny_data / "items.parquet", {"test": tiny_data / "test.parquet"},
                            out / "predictions.parquet", out / "metrics.json", k=2, seed=1, n_resamples=100,
                            meta={"method": kind, "dataset": "lastfm"}, progress=False, train_seed=s)
            _train_log(out / "train_log.csv")
            runs.append({"seed": s, "predictions": str(out / "predictions.parquet"), "metrics": str(out / "metrics.json"),
                         "train_log": str(out / "train_log.csv")})
        entries.append({"dataset": "lastfm", "kind": kind, "label": label, "seqrec": "sasrec",
                        "variant": "id_only" if kind == "ablation" else None, "metrics": str(root / sub / "metrics.json"),
                        "runs": runs})
    zs = root / "zeroshot"
    evaluate_engine(_engine(tiny_data, 0), tiny_data / "items.parquet", {"test": tiny_data / "test.parquet"},
                    zs / "predictions.parquet", zs / "metrics.json", k=2, seed=1, n_resamples=100, progress=False)
    entries.append({"dataset": "lastfm", "kind": "zeroshot", "label": "Zero-shot LLM", "metrics": str(zs / "metrics.json"),
                    "predictions": str(zs / "predictions.parquet")})
    out = tmp_path / "report"
    res = build_report(entries, out, n_resamples=100, seed=1)
    llara = next(r for r in res["rows"] if r["method"] == "LLaRA(SASRec)")["lastfm"]
    assert llara["n_seeds"] == 2 and llara["k"] == 2 and llara["seeds"] == [42, 43] and llara["hr1_sd"] > 0
    md = (out / "table.md").read_text()
    assert f"{llara['hr1']:.4f} ± {llara['hr1_sd']:.4f} [" in md and "| 2×2 |" in md
    assert "training seeds [42, 43]" in md and "## Per seed" in md
    assert "| LLaRA(SASRec) | LastFM | 43 |" in md and "| Zero-shot LLM | LastFM | untrained |" in md
    paired = {(p["a"], p["b"], p["metric"]): p for p in res["paired"]}
    abl = paired[("LLaRA(SASRec)", "LLaRA(SASRec) id_only", "strict_hr@1")]  # LLaRA vs the ablation, seed by seed
    assert abl["seeds"] == [42, 43] and len(abl["per_seed"]) == 2 and abl["diff"] > 0
    assert paired[("LLaRA(SASRec)", "Zero-shot LLM", "hr@1")]["seeds"] == [42, 43]  # zero-shot meets every seed
    with open(out / "paired.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["seeds"] for r in rows if r["b"] == "LLaRA(SASRec) id_only"} == {"42 43"}
    with open(out / "table.csv") as f:
        by = {r["method"]: r for r in csv.DictReader(f)}
    assert by["LLaRA(SASRec)"]["lastfm_n_seeds"] == "2" and by["LLaRA(SASRec)"]["lastfm_seeds"] == "42 43"
    for png in ("hr1_ci.png", "hr1_seeds.png", "training.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_report_shows_reference_rows(results, tiny_data, tmp_path):
    """The no-LLM reference rows sit between chance and the rankers, with chance level, and pair with LLaRA."""
    from llara.evaluate.reference import reference_predictions
    from llara.llm.data import write_random_embeddings

    write_random_embeddings(tmp_path / "emb.parquet", 40, dim=8)
    entries = [e for e in results if e["dataset"] == "lastfm"]
    for kind, label, seqrec in (("popularity", "Popularity (train targets)", None),
                                ("last_item", "Last-item similarity (SASRec emb.)", "sasrec")):
        out = tmp_path / "results" / "lastfm" / "reference" / kind
        reference_predictions(kind, tiny_data / "items.parquet", {"test": tiny_data / "test.parquet"},
                              out / "predictions.parquet", out / "metrics.json", train_path=tiny_data / "train.parquet",
                              embeddings_path=tmp_path / "emb.parquet", n_resamples=50, seed=1)
        entries.append({"dataset": "lastfm", "kind": "reference", "label": label, "seqrec": seqrec, "variant": kind,
                        "metrics": str(out / "metrics.json"), "predictions": str(out / "predictions.parquet")})
    res = build_report(entries, tmp_path / "report", n_resamples=50, seed=1)
    methods = [r["method"] for r in res["rows"]]
    assert methods.index("Chance (random candidate)") < methods.index("Popularity (train targets)") \
        < methods.index("Last-item similarity (SASRec emb.)") < methods.index("SASRec") < methods.index("LLaRA(SASRec)")
    md = (tmp_path / "report" / "table.md").read_text()
    assert "| Popularity (train targets) | 1.0000 | " in md and "Reference rows (no LLM" in md
    assert "| Popularity (train targets) | LastFM | 60 | untrained | 2 |" in md  # the LLM's 2 sets, chance beside
    with open(tmp_path / "report" / "table.csv") as f:
        by = {r["method"]: r for r in csv.DictReader(f)}
    pop = by["Popularity (train targets)"]
    assert pop["kind"] == "reference" and pop["lastfm_k"] == "2" and pop["lastfm_paper_hr1"] == ""
    assert pop["lastfm_valid_ratio"] == "1.0" and 0.0 <= float(pop["lastfm_hr1"]) <= 1.0
    assert by["Last-item similarity (SASRec emb.)"]["lastfm_n"] == "60"
    with open(tmp_path / "report" / "paired.csv") as f:
        paired = {(p["a"], p["b"], p["metric"]): p for p in csv.DictReader(f)}
    p = paired[("LLaRA(SASRec)", "Popularity (train targets)", "hr@1")]
    assert p["sets"] == "0 1" and p["n"] == "60"
    assert float(p["b_value"]) == pytest.approx(float(pop["lastfm_hr1"]), abs=1e-6)
    assert ("LLaRA(SASRec)", "Last-item similarity (SASRec emb.)", "strict_hr@1") in paired
