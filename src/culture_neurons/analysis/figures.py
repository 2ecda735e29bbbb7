"""Figures: ablation heatmaps (the paper's Figure 4), layer distributions (Figure 5) and baseline
accuracy per culture (Figure 3).

Every function writes ``<out_prefix>.png`` and ``<out_prefix>.pdf`` and returns those paths.
Figures are built as ``matplotlib.figure.Figure`` objects on an explicit Agg canvas, never through
``pyplot``: nothing is registered globally, so there is no window, no backend switch for the rest
of the process and nothing to close (the figure is freed with its last reference). The PDF's
creation date is dropped, so reruns give identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from culture_neurons.errors import InputError

__all__ = ["plot_ablation_heatmaps", "plot_baseline_accuracy", "plot_layer_distribution"]

# Above this many cultures the cell values would overlap; the colour scale carries them.
MAX_ANNOTATED = 30
_BLANK = "#f2f2f2"  # NaN / zero cells: visibly "nothing" without competing with the scale


def _save(fig: Figure, out_prefix: str | Path) -> list[Path]:
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = []
    for ext, metadata in ((".png", None), (".pdf", {"CreationDate": None})):
        path = prefix.with_name(prefix.name + ext)
        # No bbox_inches="tight": the constrained layout already fits, and it would draw twice.
        fig.savefig(path, dpi=150, metadata=metadata)
        paths.append(path)
    return paths


def _cmap(name: str) -> Colormap:
    return colormaps[name].with_extremes(bad=_BLANK)


def _cell_fontsize(n: int) -> float:
    return float(np.clip(11.0 - 0.25 * n, 4.5, 9.0))


def _annotate(ax: Axes, values: np.ndarray, cmap: Colormap, norm: Normalize, fmt: str) -> None:
    size = _cell_fontsize(max(values.shape))
    for (i, j), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        red, green, blue, _ = cmap(norm(value))
        # White text on dark cells, black on light ones (relative luminance).
        dark = 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.5
        ax.text(
            j,
            i,
            format(value, fmt),
            ha="center",
            va="center",
            fontsize=size,
            color="white" if dark else "black",
            # Cell texts lie inside the axes: measuring each for the layout costs seconds at 25.
            in_layout=False,
        )


def _heatmap(
    ax: Axes,
    fig: Figure,
    grid: pd.DataFrame,
    *,
    cmap: Colormap,
    norm: Normalize,
    fmt: str,
    label: str,
    annotate: bool,
) -> None:
    values = grid.to_numpy(dtype=np.float64)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    if annotate:
        _annotate(ax, values, cmap, norm, fmt)
    fontsize = max(7.0, _cell_fontsize(max(values.shape)) + 1)
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns], rotation=90)
    ax.set_yticks(range(len(grid.index)), [str(c) for c in grid.index])
    ax.tick_params(labelsize=fontsize, length=0)
    ax.set_xlabel("target culture (evaluated)")
    # A culture-independent mask (one "ALL" row) has no source culture; its tick says so.
    if len(grid.index) > 1 or grid.index[0] in grid.columns:
        ax.set_ylabel("source culture (neurons deactivated)")
    # Self-deactivation cells, the ones the paper reads first.
    columns = list(grid.columns)
    for i, source in enumerate(grid.index):
        if source in columns:
            j = columns.index(source)
            ax.add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.4)
            )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label=label)


def plot_ablation_heatmaps(matrix: pd.DataFrame, title: str, out_prefix: str | Path) -> list[Path]:
    """Accuracy-change and flip-rate heatmaps of one selector, side by side (Figure 4).

    Source culture (whose neurons were deactivated) on y, evaluated culture on x; self-deactivation
    cells outlined. Δ uses a diverging map with symmetric limits around 0 (red = accuracy lost),
    flip rate a sequential map from 0. Cell values are printed up to :data:`MAX_ANNOTATED`
    cultures. When the matrix has no accuracy (label-free run) only the flip-rate panel is drawn.
    A culture-independent selector (source ``ALL``) gives one row.

    Args:
        matrix: :func:`culture_neurons.analysis.metrics.ablation_matrix` of one selector.
        title: figure title, e.g. ``"Qwen2.5-VL-7B, CAS"``.
        out_prefix: path without extension.

    Returns:
        The written ``.png`` and ``.pdf`` paths.
    """
    missing = [c for c in ("source", "target", "delta", "flip_rate") if c not in matrix.columns]
    if missing:
        raise InputError(f"matrix: missing column(s) {', '.join(missing)}")
    if matrix.empty:
        raise InputError("matrix is empty: nothing to plot")
    # Sources follow the target order where they are targets, so the diagonal is a diagonal.
    targets = sorted(matrix["target"].unique())
    present = set(matrix["source"])
    sources = [t for t in targets if t in present] + sorted(present.difference(targets))
    delta = matrix.pivot(index="source", columns="target", values="delta").reindex(
        index=sources, columns=targets
    )
    flip = matrix.pivot(index="source", columns="target", values="flip_rate").reindex(
        index=sources, columns=targets
    )
    labelled = bool(np.isfinite(delta.to_numpy(dtype=np.float64)).any())
    annotate = max(len(sources), len(targets)) <= MAX_ANNOTATED

    panels = 2 if labelled else 1
    cell = 0.42 if annotate else 0.3
    width = max(4.5, 1.8 + cell * len(targets)) * panels
    height = max(2.6, 1.8 + cell * len(sources))
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if labelled:
        limit = float(np.nanmax(np.abs(delta.to_numpy(dtype=np.float64))))
        limit = limit if limit > 0 else 1.0
        _heatmap(
            axes[0],
            fig,
            delta,
            cmap=_cmap("RdBu"),
            norm=Normalize(-limit, limit),
            fmt="+.1f",
            label="accuracy change Δ (pp)",
            annotate=annotate,
        )
        axes[0].set_title("accuracy change Δ")
    flips = flip.to_numpy(dtype=np.float64)
    top = float(np.nanmax(flips)) if np.isfinite(flips).any() else 0.0
    _heatmap(
        axes[-1],
        fig,
        flip,
        cmap=_cmap("YlOrRd"),
        norm=Normalize(0.0, top if top > 0 else 1.0),
        fmt=".1f",
        label="flip rate (%)",
        annotate=annotate,
    )
    axes[-1].set_title("flip rate" if labelled else "flip rate (labels hidden: no accuracy)")
    fig.suptitle(title)
    return _save(fig, out_prefix)


#: The axes of a site's layer distribution: (layer axis, unit name).
SITE_AXES: dict[str, tuple[str, str]] = {
    "decoder_mlp": ("decoder layer", "neurons"),
    "vision_mlp": ("vision-tower layer", "neurons"),
    "attention_heads": ("decoder layer", "heads"),
}


def plot_layer_distribution(
    selected: np.ndarray,
    cultures: Sequence[str],
    title: str,
    out_prefix: str | Path,
    site: str = "decoder_mlp",
) -> list[Path]:
    """Selected neurons per layer (x) and culture (y) on a log colour scale (Figure 5).

    Zero cells stay blank (a log scale has no 0); the colour scale starts at 1 neuron.

    Args:
        selected: bool mask ``[culture, layer, neuron]``.
        cultures: culture names, one per first-axis entry.
        title: figure title, e.g. ``"Qwen2.5-VL-7B, CAS"``.
        out_prefix: path without extension.
        site: whose units the mask holds (`SITE_AXES`), for the axis labels.
    """
    layer_axis, units = SITE_AXES[site]
    selected = np.asarray(selected)
    if selected.ndim != 3:
        raise InputError(f"selected must be [culture, layer, neuron], got shape {selected.shape}")
    if len(cultures) != selected.shape[0]:
        raise InputError(f"{len(cultures)} culture names for {selected.shape[0]} mask rows")
    counts = selected.astype(bool).sum(axis=2).astype(np.float64)
    n_cultures, n_layers = counts.shape
    top = counts.max() if counts.size else 0.0

    fig = Figure(
        figsize=(max(5.0, 2.2 + 0.28 * n_layers), max(2.4, 1.4 + 0.3 * n_cultures)),
        layout="constrained",
    )
    ax = fig.subplots()
    # vmax > vmin even when every nonzero count is 1, which LogNorm would reject.
    norm = LogNorm(vmin=1.0, vmax=max(top, 2.0))
    image = ax.imshow(
        np.ma.masked_less(counts, 1.0), cmap=_cmap("viridis"), norm=norm, aspect="auto"
    )
    step = 1 if n_layers <= 40 else int(np.ceil(n_layers / 40))
    ax.set_xticks(range(0, n_layers, step), [str(k) for k in range(0, n_layers, step)])
    ax.set_yticks(range(n_cultures), [str(c) for c in cultures])
    ax.tick_params(labelsize=7, length=0)
    ax.set_xlabel(layer_axis)
    ax.set_ylabel("culture")
    label = f"selected {units} (log scale)"
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label=label)
    # Plain numbers at 1-2-5 steps: powers of ten alone leave a 1..30 scale with two labels.
    bar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    if top == 0:
        ax.text(0.5, 0.5, f"no {units} selected", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    return _save(fig, out_prefix)


def plot_baseline_accuracy(table: pd.DataFrame, out_prefix: str | Path) -> list[Path]:
    """Unmasked accuracy per culture: evaluation split as bars, identification split as dots.

    One panel per model, stacked vertically with a shared culture axis, so 25 cultures stay
    readable and models compare culture by culture (the paper's Figure 3 shows the same data as
    distributions). Each panel's legend gives the median over cultures of both splits.

    Args:
        table: :func:`culture_neurons.analysis.metrics.baseline_accuracy`, optionally with a
            ``model`` column (one panel per model, in order of appearance); without it, one
            panel.
        out_prefix: path without extension.
    """
    missing = [c for c in ("culture", "split", "accuracy") if c not in table.columns]
    if missing:
        raise InputError(f"baseline accuracy table: missing column(s) {', '.join(missing)}")
    table = table.copy()
    if "model" not in table.columns:
        table["model"] = ""
    models = list(dict.fromkeys(table["model"]))
    cultures = sorted(table["culture"].astype(str).unique())
    x = np.arange(len(cultures))

    fig = Figure(
        figsize=(max(6.0, 1.5 + 0.38 * len(cultures)), 0.6 + 2.6 * len(models)),
        layout="constrained",
    )
    axes = fig.subplots(len(models), 1, sharex=True, squeeze=False)[:, 0]
    for ax, model in zip(axes, models, strict=True):
        rows = table[table["model"] == model]
        by_split = {
            split: rows[rows["split"] == split]
            .set_index(rows[rows["split"] == split]["culture"].astype(str))["accuracy"]
            .reindex(cultures)
            .to_numpy(dtype=np.float64)
            for split in ("evaluation", "identification")
        }
        evaluation, identification = by_split["evaluation"], by_split["identification"]
        ax.bar(
            x,
            evaluation,
            color="#4c72b0",
            width=0.7,
            label=f"evaluation (median {np.nanmedian(evaluation):.1f})"
            if np.isfinite(evaluation).any()
            else "evaluation",
        )
        ax.plot(
            x,
            identification,
            "o",
            color="#dd8452",
            markeredgecolor="black",
            markersize=5,
            label=f"identification (median {np.nanmedian(identification):.1f})"
            if np.isfinite(identification).any()
            else "identification",
        )
        if not (np.isfinite(evaluation).any() or np.isfinite(identification).any()):
            ax.text(
                0.5,
                0.5,
                "labels hidden: no accuracy",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.axhline(25.0, color="grey", linestyle=":", linewidth=1, label="chance (4 options)")
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        if model:
            ax.set_title(str(model), loc="left")
        # Above the axes: inside, it would hide the bars of high-accuracy cultures.
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, ncols=3, frameon=False)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(x, cultures, rotation=90)
    axes[-1].set_xlabel("culture")
    return _save(fig, out_prefix)
