"""Figures: every function writes one PNG and one PDF, deterministically, for 8 and 25 cultures,
and what the figures draw (cell colours' values, bars, dots, tick labels) is the data given."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from culture_neurons.analysis import figures
from culture_neurons.analysis.figures import (
    MAX_ANNOTATED,
    plot_ablation_heatmaps,
    plot_baseline_accuracy,
    plot_layer_distribution,
)
from culture_neurons.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def check_written(paths: list[Path], prefix: Path) -> None:
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.with_suffix("") == prefix for p in paths)
    assert sorted(prefix.parent.iterdir()) == sorted(paths)  # nothing else, nothing missing
    assert paths[0].read_bytes()[:8] == PNG_SIGNATURE and paths[0].stat().st_size > 2000
    pdf = paths[1].read_bytes()
    assert pdf[:5] == b"%PDF-" and b"%%EOF" in pdf[-64:] and len(pdf) > 2000


def matrix_of(cultures: list[str], *, labelled: bool = True, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for source in cultures:
        for target in cultures:
            own = source == target
            rows.append(
                {
                    "source": source,
                    "target": target,
                    "n": 50,
                    "delta": rng.normal(-5.0 if own else 0.0, 1.5) if labelled else np.nan,
                    "flip_rate": rng.uniform(10, 25) if own else rng.uniform(0, 6),
                }
            )
    return pd.DataFrame(rows)


DEMO = ["KEL", "MOR", "PEL", "TAR", "VEL", "ZAN", "IRR", "BRU"]
# The paper's 25 CVQA culture codes.
CVQA = list(
    ("ARG", "BGR", "BRA", "CHN", "EGY", "ESP", "ETH", "FRA", "IDN", "IND", "IRL", "JPN", "KEN")
    + ("KOR", "MEX", "MNG", "MYS", "NGA", "NOR", "PAK", "PHL", "ROU", "RUS", "RWA", "SGP")
)


@pytest.fixture(scope="module")
def demo_heatmaps(tmp_path_factory) -> tuple[list[Path], Path]:
    # Drawn once: several tests look at it, and a labelled heatmap costs about a second.
    prefix = tmp_path_factory.mktemp("figs") / "heat"
    return plot_ablation_heatmaps(matrix_of(DEMO), "demo, CAS", prefix), prefix


def test_heatmaps_written(demo_heatmaps):
    check_written(*demo_heatmaps)


def test_label_free_heatmap_has_only_the_flip_panel(tmp_path, demo_heatmaps):
    both = demo_heatmaps[0]
    flip_only = plot_ablation_heatmaps(
        matrix_of(DEMO, labelled=False), "label-free", tmp_path / "b" / "heat"
    )
    check_written(flip_only, tmp_path / "b" / "heat")
    (width_both, height_both), (width_one, height_one) = png_size(both[0]), png_size(flip_only[0])
    assert width_one < 0.65 * width_both and abs(height_one - height_both) < 0.2 * height_both


def test_heatmap_of_the_random_selector(tmp_path):
    rng = np.random.default_rng(1)
    matrix = pd.DataFrame(
        {
            "source": "ALL",
            "target": DEMO,
            "delta": rng.normal(0, 1, len(DEMO)),
            "flip_rate": rng.uniform(0, 5, len(DEMO)),
        }
    )
    check_written(plot_ablation_heatmaps(matrix, "RND", tmp_path / "rnd"), tmp_path / "rnd")


@pytest.mark.parametrize("n_cultures", [len(CVQA), MAX_ANNOTATED + 1])
def test_heatmaps_with_many_cultures(tmp_path, n_cultures):
    cultures = (CVQA + [f"X{k}" for k in range(n_cultures)])[:n_cultures]
    # Past the annotation limit the label-free variant keeps the test fast; the labelled one
    # shares all code paths with the 25-culture case.
    matrix = matrix_of(cultures, labelled=n_cultures <= MAX_ANNOTATED)
    matrix.loc[3, "flip_rate"] = np.nan  # a missing cell is drawn blank, not an error
    prefix = tmp_path / f"heat{n_cultures}"
    check_written(plot_ablation_heatmaps(matrix, "CVQA", prefix), prefix)


def test_heatmap_refuses_bad_input(tmp_path):
    with pytest.raises(InputError, match="flip_rate"):
        plot_ablation_heatmaps(matrix_of(DEMO).drop(columns="flip_rate"), "x", tmp_path / "x")
    with pytest.raises(InputError, match="empty"):
        plot_ablation_heatmaps(matrix_of(DEMO).iloc[:0], "x", tmp_path / "x")


def test_figures_are_deterministic(tmp_path):
    first = plot_ablation_heatmaps(matrix_of(DEMO[:3]), "demo", tmp_path / "a" / "heat")
    second = plot_ablation_heatmaps(matrix_of(DEMO[:3]), "demo", tmp_path / "b" / "heat")
    for one, two in zip(first, second, strict=True):
        assert one.read_bytes() == two.read_bytes()


def selected_mask(n_cultures: int, n_layers: int = 28, n_neurons: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    density = np.linspace(0.0, 0.08, n_layers)[None, :, None]
    return rng.random((n_cultures, n_layers, n_neurons)) < density


@pytest.mark.parametrize("cultures", [DEMO, CVQA], ids=["8", "25"])
def test_layer_distribution_written(tmp_path, cultures):
    selected = selected_mask(len(cultures))
    selected[1] = False  # a culture with no neurons: blank row, not a log(0) error
    prefix = tmp_path / "layers"
    check_written(plot_layer_distribution(selected, cultures, "CAS", prefix), prefix)


def test_layer_distribution_edge_cases(tmp_path):
    empty = np.zeros((3, 4, 5), dtype=bool)
    prefix = tmp_path / "empty" / "layers"
    check_written(plot_layer_distribution(empty, ["A", "B", "C"], "none", prefix), prefix)
    ones = np.zeros((2, 4, 5), dtype=bool)
    ones[:, 1, 0] = True  # every count is 1: the log scale still needs vmax > vmin
    prefix = tmp_path / "ones" / "layers"
    check_written(plot_layer_distribution(ones, ["A", "B"], "ones", prefix), prefix)
    with pytest.raises(InputError, match="2 culture names for 3"):
        plot_layer_distribution(empty, ["A", "B"], "x", tmp_path / "x")
    with pytest.raises(InputError, match="shape"):
        plot_layer_distribution(empty[0], ["A"], "x", tmp_path / "x")


def accuracy_table(cultures: list[str], *, labelled: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = [
        {
            "culture": culture,
            "split": split,
            "n": 40,
            "accuracy": rng.uniform(30, 80) if labelled else np.nan,
            "no_choice": 0.0,
        }
        for culture in cultures
        for split in ("identification", "evaluation")
    ]
    return pd.DataFrame(rows)


def test_baseline_accuracy_one_panel_per_model(tmp_path):
    table = pd.concat(
        [
            accuracy_table(DEMO).assign(model="Qwen2.5-VL-7B"),
            accuracy_table(DEMO).assign(model="Pangea-7B"),
            accuracy_table(DEMO).assign(model="LLaVA-v1.6-Mistral-7B"),
        ],
        ignore_index=True,
    )
    one = plot_baseline_accuracy(accuracy_table(CVQA), tmp_path / "one" / "acc")  # 25 cultures
    check_written(one, tmp_path / "one" / "acc")
    three = plot_baseline_accuracy(table, tmp_path / "three" / "acc")
    check_written(three, tmp_path / "three" / "acc")
    assert png_size(three[0])[1] > 2 * png_size(one[0])[1]  # panels stacked vertically


def test_baseline_accuracy_label_free(tmp_path):
    prefix = tmp_path / "acc"
    check_written(plot_baseline_accuracy(accuracy_table(DEMO, labelled=False), prefix), prefix)
    with pytest.raises(InputError, match="accuracy"):
        plot_baseline_accuracy(accuracy_table(DEMO).drop(columns="accuracy"), prefix)


# What the figures draw: the Figure handed to _save, inspected instead of the written files.


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """The figures the plot functions build, captured at ``_save`` (nothing is written)."""
    captured: list[Figure] = []

    def capture(fig: Figure, out_prefix) -> list[Path]:
        captured.append(fig)
        return []

    monkeypatch.setattr(figures, "_save", capture)
    return captured


def titled(fig: Figure, title: str) -> Axes:
    (ax,) = [a for a in fig.axes if title in (a.get_title(), a.get_title(loc="left"))]
    return ax


def texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


def image_values(ax: Axes) -> np.ndarray:
    """The array behind the axes' one image, NaN where it is masked (drawn blank)."""
    (image,) = ax.images
    return np.ma.filled(np.ma.masked_invalid(image.get_array()).astype(np.float64), np.nan)


def expected_grid(matrix: pd.DataFrame, column: str, rows: list[str], cols: list[str]):
    """``column`` of the (row source, column target) cell, looked up row by row; NaN if absent."""
    cells = {(r["source"], r["target"]): r[column] for _, r in matrix.iterrows()}
    return np.array([[cells.get((s, t), np.nan) for t in cols] for s in rows], dtype=np.float64)


def check_heatmap(ax: Axes, matrix: pd.DataFrame, column: str, fmt: str) -> None:
    sources, targets = texts(ax.get_yticklabels()), texts(ax.get_xticklabels())
    assert "source" in ax.get_ylabel() and "target" in ax.get_xlabel()
    expected = expected_grid(matrix, column, sources, targets)
    np.testing.assert_array_equal(image_values(ax), expected)  # rows = sources, cols = targets
    # Each printed value sits on its own cell (x = target column, y = source row).
    printed = {
        (round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts
    }
    assert printed == {
        (j, i): format(value, fmt)
        for (i, j), value in np.ndenumerate(expected)
        if not np.isnan(value)
    }
    # Self-deactivation cells outlined: one square per source that is also a target.
    outlined = {
        (round(p.get_x() + 0.5), round(p.get_y() + 0.5))
        for p in ax.patches
        if isinstance(p, Rectangle) and not p.get_fill()
    }
    assert outlined == {(targets.index(s), i) for i, s in enumerate(sources) if s in targets}


def test_heatmaps_draw_the_matrix_source_by_target(drawn):
    # Five targets, four sources (one culture's neurons were not ablated): not square, so a
    # transposed grid cannot pass; values differ cell by cell, a missing cell is NaN.
    cultures = DEMO[:5]
    matrix = matrix_of(cultures, seed=3)
    matrix = matrix[matrix["source"] != cultures[2]].sample(frac=1.0, random_state=4)
    matrix.loc[matrix.index[0], "delta"] = np.nan
    plot_ablation_heatmaps(matrix, "demo, CAS", "unused")
    (fig,) = drawn
    delta_ax, flip_ax = titled(fig, "accuracy change Δ"), titled(fig, "flip rate")
    targets = sorted(cultures)
    sources = [c for c in targets if c != cultures[2]]
    for ax in (delta_ax, flip_ax):
        assert texts(ax.get_xticklabels()) == targets
        assert texts(ax.get_yticklabels()) == sources
        assert image_values(ax).shape == (len(sources), len(targets))
    check_heatmap(delta_ax, matrix, "delta", "+.1f")
    check_heatmap(flip_ax, matrix, "flip_rate", ".1f")
    # Δ on a scale symmetric around 0, the flip rate from 0 to its largest cell.
    limit = np.nanmax(np.abs(matrix["delta"]))
    delta_norm, flip_norm = delta_ax.images[0].norm, flip_ax.images[0].norm
    assert (delta_norm.vmin, delta_norm.vmax) == pytest.approx((-limit, limit))
    assert (flip_norm.vmin, flip_norm.vmax) == pytest.approx((0.0, matrix["flip_rate"].max()))


def test_label_free_heatmap_draws_the_flip_rates(drawn):
    matrix = matrix_of(DEMO[:4], labelled=False, seed=5)
    plot_ablation_heatmaps(matrix, "label-free", "unused")
    (fig,) = drawn
    (ax,) = [a for a in fig.axes if a.images]
    assert ax.get_title().startswith("flip rate")
    check_heatmap(ax, matrix, "flip_rate", ".1f")


def test_layer_distribution_draws_counts_per_culture_and_layer(drawn):
    rng = np.random.default_rng(6)
    n_layers, n_neurons = 12, 30
    density = rng.uniform(0.0, 0.6, (len(DEMO), n_layers, 1))
    selected = rng.random((len(DEMO), n_layers, n_neurons)) < density
    selected[1] = False  # a culture with no neurons
    selected[:, 4] = False  # a layer with none
    # DEMO is not in sorted order: rows follow the given culture order.
    plot_layer_distribution(selected, DEMO, "CAS", "unused")
    (fig,) = drawn
    ax = titled(fig, "CAS")
    counts = np.array(
        [[np.count_nonzero(selected[c, layer]) for layer in range(n_layers)] for c in range(8)],
        dtype=np.float64,
    )
    assert texts(ax.get_yticklabels()) == DEMO
    assert texts(ax.get_xticklabels()) == [str(k) for k in range(n_layers)]
    assert "culture" in ax.get_ylabel() and "layer" in ax.get_xlabel()
    # Zero counts are masked (blank on the log scale), every other cell is the count.
    np.testing.assert_array_equal(image_values(ax), np.where(counts > 0, counts, np.nan))
    assert len(np.unique(counts)) > 5


def test_baseline_accuracy_draws_the_table(drawn):
    first = accuracy_table(DEMO).assign(model="Qwen2.5-VL-7B")
    second = accuracy_table(DEMO).assign(model="Pangea-7B")
    second["accuracy"] = 100.0 - second["accuracy"]
    second.loc[second.index[3], "accuracy"] = np.nan  # drawn as nothing, not as 0
    # Rows in table order (cultures unsorted, models interleaved): the x axis is sorted cultures.
    table = pd.concat([first, second], ignore_index=True).sample(frac=1.0, random_state=7)
    plot_baseline_accuracy(table, "unused")
    (fig,) = drawn
    cultures = sorted(DEMO)
    axes = [titled(fig, model) for model in ("Qwen2.5-VL-7B", "Pangea-7B")]
    assert fig.axes == axes  # one panel per model, in order of first appearance
    assert texts(axes[-1].get_xticklabels()) == cultures
    for ax, model in zip(axes, ("Qwen2.5-VL-7B", "Pangea-7B"), strict=True):
        accuracy = {
            (r["culture"], r["split"]): r["accuracy"]
            for _, r in table[table["model"] == model].iterrows()
        }
        evaluation = [accuracy[(c, "evaluation")] for c in cultures]
        identification = [accuracy[(c, "identification")] for c in cultures]
        (bars,) = ax.containers
        np.testing.assert_array_equal([b.get_x() + b.get_width() / 2 for b in bars], range(8))
        np.testing.assert_array_equal([b.get_height() for b in bars], evaluation)
        (dots,) = [line for line in ax.lines if line.get_marker() == "o"]
        np.testing.assert_array_equal(dots.get_xdata(), range(8))
        np.testing.assert_array_equal(dots.get_ydata(), identification)
