"""The figures stage (rule `figures`, `culture-neurons figures`): one selector's heatmaps, the
layer distribution of its masks and the forest plot of its per-source gap tests."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.control_figures import plot_significance
from culture_neurons.analysis.figures import (
    plot_ablation_heatmaps,
    plot_layer_distribution,
)
from culture_neurons.errors import InputError
from culture_neurons.selection.masks import read_masks

log = logging.getLogger(__name__)


def figures_stage(
    model: str,
    selector: str,
    matrix: str | Path,
    masks: str | Path,
    heatmap_prefix: str | Path,
    layers_prefix: str | Path,
    significance: str | Path | None = None,
    significance_prefix: str | Path | None = None,
) -> list[Path]:
    """The heatmaps of one selector's matrices, the layer distribution of its masks and, given
    its per-source gap tests (``significance``), their forest plot."""
    selected, cultures, attrs = read_masks(masks)
    title = f"{model}: {selector}"
    paths = plot_ablation_heatmaps(pd.read_parquet(matrix), title, heatmap_prefix)
    paths += plot_layer_distribution(
        selected,
        cultures,
        f"{title} (ratio {attrs.get('ratio')})",
        layers_prefix,
        site=attrs.get("site", "decoder_mlp"),
    )
    if (significance is None) != (significance_prefix is None):
        raise InputError("give both --significance and --significance-prefix, or neither")
    if significance is not None:
        tests = pd.read_parquet(significance)
        paths += plot_significance(tests, title, significance_prefix)
    log.info("wrote %s", ", ".join(map(str, paths)))
    return paths
