"""Published numbers embedded as data: the LLaRA paper's Table 1 and the authors' later README table.

Every number carries its source; ``None`` marks a cell we could not verify from a primary source
(we do not fill cells from memory). Keys: dataset (lastfm | movielens | steam) -> metric
(``valid_ratio`` | ``hr@1``) -> value.

Sources
-------
``PAPER``: Liao et al., "LLaRA: Large Language-Recommendation Assistant", SIGIR 2024
(arXiv:2312.02445), Table 1 (HitRatio@1 and ValidRatio on the 20 stored candidates, test split).
The values below were taken from this project's issues #3 and #5, which quote the paper's Table 1;
the paper's text itself was not retrievable here, so the other Table 1 rows (Llama2, GPT-4, MoRec,
TALLRec, LLaRA(GRU4Rec), LLaRA(Caser)) and LLaRA's exact ValidRatios are left ``None``
(issue #5 gives only "ValidRatio >= .96" for LLaRA(SASRec)).

``README_2024_07``: the authors' repository README (github.com/ljy0ustc/LLaRA, "2024.7: We have
resolved several bugs within our code. Below are the most recent results of LLaRA"), read from the
repository's README.md; these are *post-publication* numbers, shown separately, never as Table 1.
"""

from __future__ import annotations

PAPER_SOURCE = ("Liao et al., LLaRA: Large Language-Recommendation Assistant, SIGIR'24 (arXiv:2312.02445), "
                "Table 1, as quoted in project issues #3 and #5")
README_SOURCE = "github.com/ljy0ustc/LLaRA README.md, '2024.7' results after the authors' bug fixes"

DATASETS = ("movielens", "steam", "lastfm")  # the paper's column order


def _row(ml, steam, lastfm, vr=None):
    """HR@1 per dataset; ValidRatio ``vr`` (a number for all datasets, a 3-tuple, or None)."""
    vrs = vr if isinstance(vr, tuple) else (vr, vr, vr)
    return {d: {"valid_ratio": v, "hr@1": h} for d, h, v in zip(DATASETS, (ml, steam, lastfm), vrs)}


# Table 1 of the paper. Rankers output a candidate by construction (ValidRatio 1).
PAPER: dict[str, dict[str, dict[str, float | None]]] = {
    "GRU4Rec": _row(0.3510, 0.3748, 0.2260, vr=1.0),
    "Caser": _row(0.3438, 0.3806, 0.2186, vr=1.0),
    "SASRec": _row(0.3556, 0.3980, 0.2367, vr=1.0),
    "Llama2": _row(None, None, None),          # zero-shot Llama2-7B: not verified here
    "GPT-4": _row(None, None, None),           # not verified here
    "MoRec": _row(None, None, None),           # not verified here
    "TALLRec": _row(None, None, None),         # not verified here
    "LLaRA(GRU4Rec)": _row(None, None, None),  # not verified here
    "LLaRA(Caser)": _row(None, None, None),    # not verified here
    "LLaRA(SASRec)": _row(0.4421, 0.4949, 0.4508),  # ValidRatio >= .96 on every dataset (issue #5)
}

PAPER_NOTES = {
    "LLaRA(SASRec)": "paper ValidRatio >= 0.96 on every dataset (exact values not verified)",
    "Llama2": "paper row not verified here",
    "GPT-4": "paper row not verified here",
    "MoRec": "paper row not verified here",
    "TALLRec": "paper row not verified here",
    "LLaRA(GRU4Rec)": "paper row not verified here",
    "LLaRA(Caser)": "paper row not verified here",
}

# The authors' README after their July 2024 bug fixes (verified from the repository).
README_2024_07: dict[str, dict[str, dict[str, float | None]]] = {
    "LLaRA(GRU4Rec)": _row(0.4000, 0.4916, 0.4918, vr=(0.9684, 0.9840, 0.9672)),
    "LLaRA(Caser)": _row(0.4211, 0.4621, 0.4836, vr=(0.9684, 0.9519, 0.9754)),
    "LLaRA(SASRec)": _row(0.4526, 0.5051, 0.5246, vr=(0.9789, 0.9958, 0.9754)),
}

# Which paper row an entry of ours is compared with.
SEQREC_LABELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "caser": "Caser"}


def paper_row_for(kind: str, seqrec: str | None = None, variant: str | None = None) -> str | None:
    """The paper's Table 1 row that corresponds to one of our methods, or None.

    ``kind``: ``seqrec`` (the backbone as ranker), ``llara``, ``zeroshot`` (paper: Llama2, zero-shot)
    or ``ablation`` (a ``text_only``/``tallrec`` variant is TALLRec-style tuning).
    """
    if kind == "seqrec":
        return SEQREC_LABELS.get(seqrec or "")
    if kind == "llara":
        return f"LLaRA({SEQREC_LABELS[seqrec]})" if seqrec in SEQREC_LABELS else None
    if kind == "zeroshot":
        return "Llama2"
    if kind == "ablation" and variant in ("text_only", "tallrec"):
        return "TALLRec"
    return None


def paper_value(row: str | None, dataset: str, metric: str) -> float | None:
    """A Table 1 cell, or None when absent or unverified."""
    if row is None:
        return None
    return PAPER.get(row, {}).get(dataset, {}).get(metric)
