"""The overlap stage (rule `overlap`, `culture-neurons overlap`): Jaccard overlap of the selected
sets between selectors and between cultures, and its correlation with the cross effect."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.control_figures import plot_overlap
from culture_neurons.analysis.overlap import (
    culture_pairs,
    overlap_correlation,
    selector_overlap,
)
from culture_neurons.errors import InputError
from culture_neurons.selection.masks import ALL_CULTURES, read_masks

log = logging.getLogger(__name__)


def overlap_stage(
    model: str,
    masks: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]],
    matrices: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]],
    selectors_out: str | Path,
    pairs_out: str | Path,
    correlation_out: str | Path,
    figure_prefix: str | Path,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Jaccard between selectors per culture (``selectors_out``), between cultures per selector
    with each pair's cross-deactivation effect (``pairs_out``), and per selector the correlation
    of the two (``correlation_out``, CSV), plus the figure. ``masks``: selector instance -> mask
    store; ``matrices``: culture-specific selector instance -> its matrix."""
    loaded = {}
    for name, path in dict(masks).items():
        selected, cultures, _ = read_masks(path)
        loaded[name] = (selected, cultures)
    by_selector = selector_overlap(loaded)
    pair_tables, correlations = [], []
    for name, path in dict(matrices).items():
        if name not in loaded:
            raise InputError(f"selector {name!r} has a matrix but no masks")
        selected, cultures = loaded[name]
        if cultures == [ALL_CULTURES]:
            continue
        pairs = culture_pairs(name, selected, cultures, pd.read_parquet(path))
        pair_tables.append(pairs)
        for metric in ("delta", "flip_rate"):
            row = overlap_correlation(pairs, metric, n_boot=n_boot, n_perm=n_boot, seed=seed)
            correlations.append({"selector": name, **row})
    pair_columns = ["selector", "source", "target", "jaccard", "delta", "flip_rate"]
    all_pairs = (
        pd.concat(pair_tables, ignore_index=True)
        if pair_tables
        else pd.DataFrame(columns=pair_columns)
    )
    correlation = pd.DataFrame(correlations)
    for path in (selectors_out, pairs_out, correlation_out):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    by_selector.to_parquet(selectors_out, index=False)
    all_pairs.to_parquet(pairs_out, index=False)
    correlation.to_csv(correlation_out, index=False)
    plot_overlap(by_selector, all_pairs, f"{model}: overlap of selected sets", figure_prefix)
    if len(correlation):
        log.info("overlap vs cross effect:\n%s", correlation.round(3).to_string(index=False))
    return correlation
