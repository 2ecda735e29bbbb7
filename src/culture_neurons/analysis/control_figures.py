"""Figures of the analyses beyond the paper: per-source gap tests, stability of the selected
sets, and overlap between sets. Same conventions as :mod:`culture_neurons.analysis.figures`
(explicit Agg canvas, ``<out_prefix>.png`` and ``.pdf``, reproducible PDFs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from culture_neurons.analysis.figures import MAX_ANNOTATED, _annotate, _cmap, _save

__all__ = ["plot_overlap", "plot_significance", "plot_stability"]

_METRIC_LABELS = {
    "delta": "self-cross gap of Δ (points)",
    "flip_rate": "self-cross gap of flip rate (points)",
}


def plot_significance(tests: pd.DataFrame, title: str, out_prefix: str | Path) -> list[Path]:
    """Per source culture, the self-cross gap with its item-bootstrap 95% interval; filled
    markers where the gap is significant after Benjamini–Hochberg (q < 0.05)."""
    metrics = [m for m in _METRIC_LABELS if tests["gap"][tests["metric"] == m].notna().any()]
    fig = Figure(figsize=(4.2 * max(len(metrics), 1), 0.8 + 0.28 * tests["source"].nunique()))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
    if not metrics:
        axes[0].text(0.5, 0.5, "no culture-specific gaps", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, metric in zip(axes, metrics, strict=False):
        rows = tests[tests["metric"] == metric].sort_values("source", ascending=False)
        y = np.arange(len(rows))
        gap = rows["gap"].to_numpy(dtype=float)
        err = np.vstack(
            [gap - rows["gap_lo"].to_numpy(float), rows["gap_hi"].to_numpy(float) - gap]
        )
        ax.errorbar(gap, y, xerr=np.nan_to_num(err), fmt="none", ecolor="0.4", elinewidth=1)
        significant = rows["significant"].fillna(False).to_numpy(dtype=bool)
        ax.scatter(gap[significant], y[significant], color="tab:red", zorder=3, label="q < 0.05")
        ax.scatter(
            gap[~significant], y[~significant], facecolor="white", edgecolor="0.3", zorder=3,
            label="not significant",
        )  # fmt: skip
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, rows["source"].tolist())
        ax.set_xlabel(_METRIC_LABELS[metric])
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}: per-source gap tests (paired item bootstrap, BH)", fontsize=10)
    return _save(fig, out_prefix)


def plot_stability(summary: pd.DataFrame, title: str, out_prefix: str | Path) -> list[Path]:
    """Selectors x cultures heatmap of the mean Jaccard overlap between the full selection and
    its bootstrap re-selections; each cell also prints the permutation null's mean (``n …``)."""
    boot = summary[summary["kind"] == "bootstrap"]
    null = summary[summary["kind"] == "permuted"]
    grid = boot.pivot(index="selector", columns="culture", values="mean")
    null_grid = null.pivot(index="selector", columns="culture", values="mean").reindex_like(grid)
    values = grid.to_numpy(dtype=float)
    fig = Figure(figsize=(1.6 + 0.62 * grid.shape[1], 1.4 + 0.5 * grid.shape[0]))
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    cmap, norm = _cmap("viridis"), Normalize(0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    if max(grid.shape) <= MAX_ANNOTATED:
        _annotate(ax, values, cmap, norm, ".2f")
        for (i, j), level in np.ndenumerate(null_grid.to_numpy(dtype=float)):
            if np.isnan(level):
                continue
            # Same contrast rule as the cell's own number: the cell colour is its mean.
            red, green, blue, _ = cmap(norm(0.0 if np.isnan(values[i, j]) else values[i, j]))
            dark = 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.5
            ax.text(j, i + 0.32, f"n {level:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if dark else "black", in_layout=False)  # fmt: skip
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], rotation=90)
    ax.set_yticks(range(grid.shape[0]), [str(s) for s in grid.index])
    ax.set_xlabel("culture")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="mean Jaccard (full vs resample)")
    ax.set_title(f"{title}: stability of the selected sets (n: permutation null)", fontsize=10)
    return _save(fig, out_prefix)


def plot_overlap(
    selector_overlap: pd.DataFrame,
    culture_pairs: pd.DataFrame,
    title: str,
    out_prefix: str | Path,
) -> list[Path]:
    """Left: selectors x selectors Jaccard of their sets (mean over cultures). Right: per
    selector, each ordered culture pair's neuron overlap against the cross-deactivation Δ of the
    source's neurons on the target."""
    mean = selector_overlap.groupby(["selector_a", "selector_b"])["jaccard"].mean().unstack()
    names = sorted(set(mean.index) | set(mean.columns))
    mean = mean.reindex(index=names, columns=names)
    width = max(4.5, 0.62 * len(names) + 1.5)
    fig = Figure(figsize=(width + 5.5, max(4.2, 0.5 * len(names) + 1.8)))
    fig.set_layout_engine("constrained")
    left, right = fig.subplots(1, 2, width_ratios=[width, 5.5])
    cmap, norm = _cmap("magma"), Normalize(0.0, 1.0)
    values = mean.to_numpy(dtype=float)
    image = left.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm)
    _annotate(left, values, cmap, norm, ".2f")
    left.set_xticks(range(len(names)), names, rotation=90)
    left.set_yticks(range(len(names)), names)
    left.set_title("Jaccard between selectors (mean over cultures)", fontsize=9)
    fig.colorbar(image, ax=left, fraction=0.046, pad=0.02)
    if culture_pairs.empty:
        right.text(0.5, 0.5, "no culture-specific selectors", ha="center", va="center")
    for selector, rows in culture_pairs.groupby("selector"):
        right.scatter(rows["jaccard"], rows["delta"], s=12, label=str(selector), alpha=0.8)
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xlabel("Jaccard of the two cultures' neuron sets")
    right.set_ylabel("cross-deactivation Δ (points)")
    right.set_title("culture overlap vs cross effect", fontsize=9)
    if not culture_pairs.empty:
        right.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out_prefix)
