"""The baseline-figure stage (rule `baseline_figure`, `culture-neurons baseline-figure`):
unmasked accuracy per culture and split of every model."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.figures import (
    plot_baseline_accuracy,
)
from culture_neurons.analysis.metrics import (
    baseline_accuracy,
)

log = logging.getLogger(__name__)


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
