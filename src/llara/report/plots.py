"""PNG plots of the report: HR@1 with CIs per method and dataset, its spread over training seeds, and
training curves from train_log.csv. Chance level is drawn as a dashed line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _method_panels(rows: list[dict], datasets: list[str], draw, chance: dict[str, float] | None,
                   legend: list[tuple], title: str, path: str | Path) -> None:
    """One HR@1 panel per dataset, one line per method label; ``draw(ax, i, row)`` draws a method's row.

    Chance HR@1 (``chance``: dataset -> value) is a dashed line; ``legend``: (plot args, kwargs) entries.
    """
    plt = _plt()
    labels = list(dict.fromkeys(r["label"] for r in rows))
    size = (max(7.5, 4.2 * len(datasets)), 0.45 * len(labels) + 1.6)
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=size, sharey=True, squeeze=False)
    for ax, d in zip(axes[0], datasets):
        by = {r["label"]: r for r in rows if r["dataset"] == d}
        for i, lab in enumerate(labels):
            if by.get(lab) is not None:
                draw(ax, i, by[lab])
        if (chance or {}).get(d) is not None:
            ax.axvline(chance[d], color="grey", ls="--", lw=1)
        ax.set_yticks(np.arange(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(d)
        ax.set_xlabel("HR@1")
        ax.grid(axis="x", alpha=0.3)
    for args, kwargs in legend + [(([], [], "--"), {"color": "grey", "lw": 1, "label": "chance (1/n)"})]:
        axes[0][0].plot(*args, **kwargs)
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_hr1(rows: list[dict], datasets: list[str], path: str | Path, title: str = "HR@1 (95% bootstrap CI)",
             chance: dict[str, float] | None = None) -> None:
    """Horizontal bars per method, one panel per dataset; paper values as red crosses; chance dashed.

    ``rows``: dicts with ``label``, ``dataset``, ``hr1``, ``hr1_ci`` ([lo, hi] or None), ``paper_hr1``;
    ``chance``: dataset -> chance HR@1.
    """
    def draw(ax, i, r):
        if r.get("hr1") is not None:
            err = None
            if r.get("hr1_ci"):
                lo, hi = r["hr1_ci"]
                err = [[max(0.0, r["hr1"] - lo)], [max(0.0, hi - r["hr1"])]]
            ax.barh(i, r["hr1"], xerr=err, color="tab:blue", alpha=0.75, capsize=3)
        if r.get("paper_hr1") is not None:
            ax.plot(r["paper_hr1"], i, "x", color="tab:red", markersize=8, mew=2)

    legend = [(([], [], "x"), {"color": "tab:red", "label": "paper (Table 1)"}),
              (([], [], "s"), {"color": "tab:blue", "alpha": 0.75, "label": "ours (mean over seeds x sets, 95% CI)"})]
    _method_panels(rows, datasets, draw, chance, legend, title, path)


def plot_seed_spread(rows: list[dict], datasets: list[str], path: str | Path,
                     chance: dict[str, float] | None = None, title: str = "HR@1 per training seed") -> None:
    """One dot per training seed (its HR@1 averaged over candidate sets), the mean over seeds x sets as
    a tick and ± sd as a line, per method and dataset; chance dashed.

    ``rows``: dicts with ``label``, ``dataset``, ``mean``, ``sd`` (or None), ``per_seed`` [(seed, hr1)].
    """
    def draw(ax, i, r):
        if r.get("mean") is None:
            return
        ax.plot([r["mean"], r["mean"]], [i - 0.3, i + 0.3], color="tab:blue", lw=2)
        if r.get("sd") is not None:
            ax.plot([r["mean"] - r["sd"], r["mean"] + r["sd"]], [i, i], color="tab:blue", lw=1, alpha=0.6)
        vals = [v for _, v in r.get("per_seed", []) if v is not None]
        if vals:
            jitter = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(1)
            ax.plot(vals, i + jitter, "o", color="tab:orange", markersize=4, alpha=0.85)

    legend = [(([], [], "o"), {"color": "tab:orange", "markersize": 4, "label": "one seed (mean over sets)"}),
              (([], [], "-"), {"color": "tab:blue", "lw": 2, "label": "mean over seeds x sets (± sd)"})]
    _method_panels(rows, datasets, draw, chance, legend, title, path)


def read_train_log(path: str | Path) -> dict[str, np.ndarray]:
    """train_log.csv (columns step, loss, lr, hybrid_share, tokens_per_s) as float arrays."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = ("step", "loss", "hybrid_share")
    if rows and any(c not in rows[0] for c in need):
        raise ValueError(f"{path}: expected columns {need} (+ lr, tokens_per_s), found {list(rows[0])}")

    def col(name):
        return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows], dtype=float)

    return {c: col(c) for c in (rows[0].keys() if rows else need)}


def plot_training(logs: dict[str, str | Path], path: str | Path) -> None:
    """Loss and hybrid share over steps, one line per run (``logs``: label -> train_log.csv)."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for label, p in logs.items():
        d = read_train_log(p)
        if d["step"].size == 0:
            continue
        ax1.plot(d["step"], d["loss"], label=label, lw=1)
        ax2.plot(d["step"], d["hybrid_share"], label=label, lw=1)
    if not logs:
        ax1.text(0.5, 0.5, "no train_log.csv in this report", ha="center", va="center", transform=ax1.transAxes)
    ax1.set_ylabel("training loss")
    ax2.set_ylabel("hybrid share (curriculum)")
    ax2.set_xlabel("step")
    ax2.set_ylim(-0.05, 1.05)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    if logs:
        ax1.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
