"""summary.md (issue #28, item 3): the table a run ends with, from real metrics.json contents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llara.evaluate.summary import BACKBONE_LABELS, backbone_hr1, render_summary, write_summary
from llara.io import OutputInTheWayError
from llara.seqrec.train import ranking_report
from test_evaluate_run import _engine, _run


def _backbone(n: int = 60, k: int = 3, seed: int = 0) -> dict:
    """A seqrec stage metrics.json (the backbone's own evaluation) over ``k`` candidate sets."""
    ranks = np.random.default_rng(seed).integers(0, 4, size=(n, k))
    report = ranking_report(ranks, n_resamples=50)
    return {"model": "sasrec", "valid": report, "test": report}


@pytest.fixture
def metrics(tiny_data, tmp_path):
    m = _run(tiny_data, tmp_path, _engine(tiny_data), k=2)  # a real evaluation: both modes, test and valid, 2 sets
    return {**m, "method": "llara", "seqrec": "sasrec"}


def _row(text: str, start: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_table_holds_the_metrics_numbers(metrics):
    back = _backbone(k=3)
    text = render_summary(metrics, "results/tiny/sasrec/metrics.json", [back])
    agg = metrics["aggregate"]["test"]
    for mode in ("generate", "rank"):
        mean = agg[mode]["mean"]
        row = _row(text, f"| LLaRA(SASRec) | test | {mode} |")
        lo, hi = mean["hr@1_ci"]
        assert row[3:] == [str(agg[mode]["n"]), "1×2", f"{mean['hr@1']:.4f} [{lo:.4f}, {hi:.4f}]",
                           f"{mean.get('strict_hr@1', mean['hr@1']):.4f}", f"{mean['valid_ratio']:.4f}", "0.1000"]
    # generate: the paper's HR@1 (correct / valid) differs from HR@1 over all rows when answers are invalid
    gen = _row(text, "| LLaRA(SASRec) | test | generate |")
    assert agg["generate"]["mean"]["valid_ratio"] < 1 and gen[5].split()[0] != gen[6]
    # the backbone on the same split and the same 2 of its 3 sets: no stored interval for that subset
    bb = _row(text, "| SASRec (backbone) | test | rank |")
    want = np.mean([back["test"]["per_set"][s]["hr@1"] for s in (0, 1)])
    assert bb[3:] == ["60", "1×2", f"{want:.4f} [—]", f"{want:.4f}", "1.0000", "0.1000"]
    assert _row(text, "| LLaRA(SASRec) | valid | rank |")  # every split, test first
    assert text.index("| test |") < text.index("| valid |")
    assert "- metrics: results/tiny/sasrec/metrics.json" in text and "- report: results/report/table.md" in text
    assert "evaluate.max_rows" not in text  # the same rows: no row-count note


def test_backbone_interval_and_seeds():
    one = _backbone(k=3)
    t = one["test"]
    assert backbone_hr1([one], "test", [0])["ci"] == t["hr@1_ci95_set0"]
    assert backbone_hr1([one], "test", [0, 1, 2])["ci"] == t["hr@1_ci95_mean"]
    assert backbone_hr1([one], "test", [0, 1, 2])["hr@1"] == pytest.approx(t["mean"]["hr@1"])
    assert backbone_hr1([one], "test", [1])["ci"] is None
    two = backbone_hr1([one, _backbone(k=3, seed=1)], "test", [0])  # a sweep: mean and sd over seeds, no interval
    assert two["n_seeds"] == 2 and two["ci"] is None and two["sd"] is not None
    assert backbone_hr1([one], "test", [0, 3]) is None and backbone_hr1([one], "nope", [0]) is None
    assert backbone_hr1([{"test": {"per_set": [{"hr5": 0.1}]}}], "test", [0]) is None  # malformed: no row


def test_notes_on_other_rows_and_missing_backbone(metrics):
    text = render_summary(metrics, "m.json", [_backbone(n=122, k=5)])
    assert "over all 122 rows" in text and "over 60 (config evaluate.max_rows)" in text
    text = render_summary(metrics, "m.json", [_backbone(k=1)])  # the LLM used 2 sets, the file holds 1
    assert "SASRec (backbone)" not in text and "No backbone row for test" in text
    assert "backbone" not in render_summary(metrics, "m.json").split("HR@1: the paper's")[0]
    with pytest.raises(ValueError, match="no 'aggregate' block"):
        render_summary({"splits": {}}, "m.json")


def test_write_summary_is_atomic_and_refuses_a_users_file(metrics, tmp_path):
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    (tmp_path / "b.json").write_text(json.dumps(_backbone()))
    text = write_summary(tmp_path / "m.json", tmp_path / "out" / "summary.md", [tmp_path / "b.json"])
    assert (tmp_path / "out" / "summary.md").read_text() == text and "SASRec (backbone)" in text
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("my notes")
    with pytest.raises(OutputInTheWayError, match="llara did not write it"):
        write_summary(tmp_path / "m.json", mine / "summary.md")
    assert (mine / "summary.md").read_text() == "my notes"
    with pytest.raises(FileNotFoundError, match="metrics file .*missing.json does not exist"):
        write_summary(tmp_path / "missing.json", tmp_path / "out" / "s2.md")


def test_backbone_labels_match_the_report():
    from llara.report.paper import SEQREC_LABELS

    assert BACKBONE_LABELS == SEQREC_LABELS


def check_summary(text: str, metrics: dict, backbone: list[dict] | None = None) -> None:
    """``text`` (a summary.md or a job's output) holds ``metrics``' aggregate figures, every split and mode, and
    the backbone row when ``backbone`` is given (shared by the Snakemake tests of the real tiny DAG)."""
    for split, modes in metrics["aggregate"].items():
        for mode, b in modes.items():
            mean = b["mean"]
            row = _row(text, f"| LLaRA(SASRec) | {split} | {mode} |")
            assert row[3] == str(b["n"]) and row[4] == f"{b['n_seeds']}×{b['n_sets']}", row
            assert row[5].startswith(f"{mean['hr@1']:.4f}") and f"[{mean['hr@1_ci'][0]:.4f}, " in row[5], row
            assert row[6] == f"{mean.get('strict_hr@1', mean['hr@1']):.4f}", row
            assert row[7] == f"{mean['valid_ratio']:.4f}" and row[8] == f"{1 / b['n_candidates']:.4f}", row
        if backbone:
            sets = next(iter(modes.values()))["sets"]
            want = np.mean([np.mean([m[split]["per_set"][s]["hr@1"] for s in sets]) for m in backbone])
            assert _row(text, f"| SASRec (backbone) | {split} | rank |")[5].startswith(f"{want:.4f}")
