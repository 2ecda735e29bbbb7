"""Dose-response over the share of neurons: self, cross and gap against the ratio, per selector.

From the sweep matrices (``results/{model}/matrices/sweep/{selector}.parquet``: every ratio's
source x target cells), per selector line and ratio: ``self`` = mean over source cultures of the
diagonal cell, ``cross`` = mean over sources of the mean off-diagonal cell, ``gap = self - cross``
(Table 2's definitions). Seeded instances (``rnd-s0``, ``rnd-s1``, ...) are one line: each source's
values are averaged over seeds first. Intervals: percentile bootstrap over source cultures (one
draw shared by self, cross and gap, as in
:func:`~culture_neurons.analysis.metrics.self_cross_summary`).
A culture-independent selector (RND: source ``ALL``) has one row of cells; its ``self`` is the
mean over target cultures, with a bootstrap over targets, and no cross or gap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from culture_neurons.analysis.figures import _save
from culture_neurons.analysis.metrics import RANDOM_SOURCE
from culture_neurons.analysis.tables import selector_column
from culture_neurons.errors import InputError
from culture_neurons.selection.conventions import DECODER_MLP, split_site
from culture_neurons.statistics import CI_LEVEL, percentile_interval

__all__ = ["dose_response_table", "plot_dose_response"]

COLUMNS = [
    "intervention", "line", "ratio", "metric", "setting", "value", "lo", "hi", "n_sources",
    "n_instances",
]  # fmt: skip
SETTINGS = ("self", "cross", "gap")
_SEEDED = re.compile(r"-s\d+$")
_METRIC_LABELS = {"delta": "accuracy Δ (points)", "flip_rate": "flip rate (%)"}
# Reference lines: drawn dashed and grey-toned so the data-driven selectors stand out.
_REFERENCES = ("RND", "RND-LM")


def line_name(instance: str) -> str:
    """The line of a selector instance: its Table 2 column, seeds pooled, and its site when it
    is not the decoder MLP (``vision_mlp.rnd-s0`` -> ``RND (vision_mlp)``)."""
    site, name = split_site(instance)
    column = selector_column(_SEEDED.sub("", name))[0]
    return column if site == DECODER_MLP else f"{column} ({site})"


def _per_source(cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per source: self (diagonal) and cross (mean off-diagonal) of one instance at one ratio."""
    grid = cells.pivot(index="source", columns="target", values=metric)
    rows = []
    for source in grid.index:
        row = grid.loc[source]
        if source == RANDOM_SOURCE:
            rows += [{"source": t, "self": float(v), "cross": np.nan} for t, v in row.items()]
            continue
        if source not in row.index:
            raise InputError(f"source {source!r} has no self cell (not among the targets)")
        rows.append(
            {"source": source, "self": float(row[source]), "cross": float(row.drop(source).mean())}
        )
    return pd.DataFrame(rows)


def _interval(values: np.ndarray, draws: np.ndarray) -> tuple[float, float]:
    if draws.size == 0 or np.isnan(values).any() or len(values) < 2:
        return np.nan, np.nan
    lo, hi = percentile_interval(values[draws].mean(axis=1))
    return float(lo), float(hi)


def dose_response_table(
    sweeps: Mapping[str, pd.DataFrame], *, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Long table of :data:`COLUMNS` from selector instance -> its sweep matrix (one intervention
    or several, told apart by the matrix's ``intervention`` column)."""
    grouped: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for instance, matrix in sweeps.items():
        missing = {"intervention", "ratio", "source", "target", "delta", "flip_rate"} - set(matrix)
        if missing:
            raise InputError(f"sweep matrix of {instance!r}: missing column(s) {sorted(missing)}")
        line = line_name(instance)
        for intervention, part in matrix.groupby("intervention", sort=False):
            grouped.setdefault((str(intervention), line), []).append(part)
    rows = []
    rng = np.random.default_rng(seed)
    for (intervention, line), parts in grouped.items():
        ratios = sorted(set.intersection(*(set(p["ratio"]) for p in parts)))
        for ratio in ratios:
            for metric in ("delta", "flip_rate"):
                per_instance = [
                    _per_source(p[p["ratio"] == ratio], metric).set_index("source") for p in parts
                ]
                if all(t[["self", "cross"]].isna().all().all() for t in per_instance):
                    continue  # label-free delta
                mean = sum(t[["self", "cross"]] for t in per_instance) / len(per_instance)
                self_, cross = mean["self"].to_numpy(), mean["cross"].to_numpy()
                gap = self_ - cross
                draws = rng.integers(0, len(mean), size=(n_boot, len(mean)))
                for setting, values in zip(SETTINGS, (self_, cross, gap), strict=True):
                    if np.isnan(values).all():
                        continue
                    lo, hi = _interval(values, draws)
                    rows.append({
                        "intervention": intervention, "line": line, "ratio": float(ratio),
                        "metric": metric, "setting": setting, "value": float(values.mean()),
                        "lo": lo, "hi": hi, "n_sources": len(values),
                        "n_instances": len(per_instance),
                    })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


#: What the x axis shares out at each site.
SITE_UNITS = {
    DECODER_MLP: "decoder-MLP neurons",
    "vision_mlp": "vision-MLP neurons",
    "attention_heads": "attention heads",
}


def plot_dose_response(
    table: pd.DataFrame, title: str, out_prefix: str | Path, site: str = DECODER_MLP
) -> list[Path]:
    """Rows: accuracy Δ, flip rate; columns: self, cross, gap; x the share of ``site``'s units,
    one line per selector with its bootstrap interval as a band; RND and the layer-matched
    control dashed."""
    metrics = [m for m in _METRIC_LABELS if (table["metric"] == m).any()]
    fig = Figure(figsize=(11, 3.1 * max(len(metrics), 1)))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(max(len(metrics), 1), len(SETTINGS), squeeze=False)
    lines = list(dict.fromkeys(table["line"]))
    colours = {line: f"C{i}" for i, line in enumerate(lines)}
    for row, metric in enumerate(metrics):
        for col, setting in enumerate(SETTINGS):
            ax = axes[row, col]
            cells = table[(table["metric"] == metric) & (table["setting"] == setting)]
            for line in lines:
                points = cells[cells["line"] == line].sort_values("ratio")
                if points.empty:
                    continue
                x = points["ratio"].to_numpy() * 100
                style = "--" if line.split(" ")[0] in _REFERENCES else "-"
                ax.plot(
                    x, points["value"], style, marker="o", ms=3, color=colours[line], label=line
                )
                ax.fill_between(x, points["lo"], points["hi"], color=colours[line], alpha=0.15)
            ax.axhline(0, color="black", linewidth=0.6)
            if row == len(metrics) - 1:
                label = f"requested share of {SITE_UNITS[site]} per culture (%)"
                ax.set_xlabel(label, fontsize=8)
            ax.set_xticks(sorted(set(table["ratio"] * 100)))
            ax.set_title(f"{setting}: {_METRIC_LABELS[metric]}", fontsize=9)
    if metrics:
        axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{title} ({CI_LEVEL:g}% bootstrap intervals over source cultures)", fontsize=10)
    return _save(fig, out_prefix)
