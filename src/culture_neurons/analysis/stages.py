"""The analysis stages (rules in `analysis.smk`): source x target matrices, each selector's
figures, the baseline figure and the paper's Table 2. Each reads artifacts, writes artifacts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.figures import (
    plot_ablation_heatmaps,
    plot_baseline_accuracy,
    plot_layer_distribution,
)
from culture_neurons.analysis.metrics import (
    ablation_matrix,
    baseline_accuracy,
    read_ablations,
    self_cross_summary,
    write_matrix,
    write_summary,
)
from culture_neurons.analysis.tables import table2, write_table2
from culture_neurons.selection.masks import read_masks

log = logging.getLogger(__name__)


def matrices_stage(
    baseline: str | Path,
    ablations: Sequence[str | Path],
    selector: str,
    out: str | Path,
    summary_out: str | Path,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Source x target accuracy change and flip rate of one selector (``out``) and its self /
    cross / gap summary (``summary_out``), from the evaluation baseline and its ablation tables."""
    matrix = ablation_matrix(
        pd.read_parquet(baseline), read_ablations(ablations), n_boot=n_boot, seed=seed
    )
    matrix.insert(0, "selector", selector)
    summary = self_cross_summary(matrix, n_boot=n_boot, seed=seed)
    write_matrix(matrix, out)
    write_summary(summary, summary_out)
    log.info("%s: %d source x target cells", selector, len(matrix))
    return matrix, summary


def figures_stage(
    model: str,
    selector: str,
    matrix: str | Path,
    masks: str | Path,
    heatmap_prefix: str | Path,
    layers_prefix: str | Path,
) -> list[Path]:
    """The heatmaps of one selector's matrices and the layer distribution of its masks."""
    selected, cultures, attrs = read_masks(masks)
    title = f"{model}: {selector}"
    paths = plot_ablation_heatmaps(pd.read_parquet(matrix), title, heatmap_prefix)
    paths += plot_layer_distribution(
        selected, cultures, f"{title} (ratio {attrs.get('ratio')})", layers_prefix
    )
    log.info("wrote %s", ", ".join(map(str, paths)))
    return paths


def baseline_figure_stage(
    baselines: Mapping[str, tuple[str | Path, str | Path]]
    | Iterable[tuple[str, tuple[str | Path, str | Path]]],
    table: str | Path,
    out_prefix: str | Path,
) -> list[Path]:
    """Unmasked accuracy per culture and split of every model; ``baselines`` maps a model name to
    its (identification, evaluation) baseline tables (or give the pairs). Writes the plotted
    values to ``table``."""
    parts = []
    for model, (identification, evaluation) in dict(baselines).items():
        part = baseline_accuracy(pd.read_parquet(identification), pd.read_parquet(evaluation))
        part.insert(0, "model", model)
        parts.append(part)
    values = pd.concat(parts, ignore_index=True)
    Path(table).parent.mkdir(parents=True, exist_ok=True)
    values.to_csv(table, index=False)
    paths = plot_baseline_accuracy(values, out_prefix)
    log.info("wrote %s", ", ".join(map(str, paths)))
    return paths


def summary_stage(
    summaries: Mapping[tuple[str, str], str | Path] | Iterable[tuple[tuple[str, str], str | Path]],
    out_prefix: str | Path,
) -> list[Path]:
    """The paper's Table 2 over (model, selector) -> summary-table paths (a mapping or pairs);
    writes PREFIX.csv, .md and .tex."""
    tables = {key: pd.read_parquet(path) for key, path in dict(summaries).items()}
    paths = write_table2(table2(tables), out_prefix)
    log.info("wrote %s", ", ".join(map(str, paths)))
    return paths
