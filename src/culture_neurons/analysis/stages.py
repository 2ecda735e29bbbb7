"""The analysis stages (rules in `analysis.smk`): source x target matrices, each selector's
figures, the baseline figure and the paper's Table 2. Each reads artifacts, writes artifacts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.control_figures import plot_overlap, plot_significance
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
from culture_neurons.analysis.overlap import (
    culture_pairs,
    overlap_correlation,
    selector_overlap,
)
from culture_neurons.analysis.significance import significant_sources, source_gap_tests
from culture_neurons.analysis.tables import table2, write_table2
from culture_neurons.errors import InputError
from culture_neurons.selection.masks import ALL_CULTURES, read_masks

log = logging.getLogger(__name__)


def matrices_stage(
    baseline: str | Path,
    ablations: Sequence[str | Path],
    selector: str,
    out: str | Path,
    summary_out: str | Path,
    *,
    significance_out: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Source x target accuracy change and flip rate of one selector (``out``), its self /
    cross / gap summary (``summary_out``) and, with ``significance_out``, the per-source gap
    tests (:func:`~culture_neurons.analysis.significance.source_gap_tests`), from the evaluation
    baseline and its ablation tables."""
    base, masked = pd.read_parquet(baseline), read_ablations(ablations)
    matrix = ablation_matrix(base, masked, n_boot=n_boot, seed=seed)
    matrix.insert(0, "selector", selector)
    summary = self_cross_summary(matrix, n_boot=n_boot, seed=seed)
    write_matrix(matrix, out)
    write_summary(summary, summary_out)
    if significance_out is not None:
        tests = source_gap_tests(base, masked, n_boot=n_boot, seed=seed)
        tests.insert(0, "selector", selector)
        Path(significance_out).parent.mkdir(parents=True, exist_ok=True)
        tests.to_parquet(significance_out, index=False)
        for metric, (k, c) in significant_sources(tests).items():
            log.info("%s %s: %d of %d sources with a significant gap", selector, metric, k, c)
    log.info("%s: %d source x target cells", selector, len(matrix))
    return matrix, summary


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
        selected, cultures, f"{title} (ratio {attrs.get('ratio')})", layers_prefix
    )
    if (significance is None) != (significance_prefix is None):
        raise InputError("give both --significance and --significance-prefix, or neither")
    if significance is not None:
        tests = pd.read_parquet(significance)
        paths += plot_significance(tests, title, significance_prefix)
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
    significance: Mapping[tuple[str, str], str | Path]
    | Iterable[tuple[tuple[str, str], str | Path]]
    | None = None,
) -> list[Path]:
    """The paper's Table 2 over (model, selector) -> summary-table paths (a mapping or pairs);
    writes PREFIX.csv, .md and .tex. ``significance``, the same keys -> per-source gap tests,
    adds the "sources with a significant gap" rows and writes them all to
    PREFIX_significance.csv."""
    tables = {key: pd.read_parquet(path) for key, path in dict(summaries).items()}
    tests = {key: pd.read_parquet(path) for key, path in dict(significance or {}).items()}
    paths = write_table2(table2(tables, tests or None), out_prefix)
    if tests:
        rows = [t.assign(model=model) for (model, _), t in tests.items() if len(t)]
        merged = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
        if len(merged):
            merged = merged[["model", *[c for c in merged.columns if c != "model"]]]
        prefix = Path(out_prefix)
        paths.append(prefix.with_name(prefix.name + "_significance.csv"))
        merged.to_csv(paths[-1], index=False)
    log.info("wrote %s", ", ".join(map(str, paths)))
    return paths


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
