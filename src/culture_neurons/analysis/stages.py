"""The analysis stages (rules in `analysis.smk`): source x target matrices, each selector's
figures, the baseline figure and the paper's Table 2. Each reads artifacts, writes artifacts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.control_figures import plot_overlap, plot_significance
from culture_neurons.analysis.dose_response import dose_response_table, plot_dose_response
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
from culture_neurons.analysis.tables import markdown_table2, table2, write_table2
from culture_neurons.errors import InputError
from culture_neurons.selection.masks import ALL_CULTURES, read_masks

log = logging.getLogger(__name__)


def condition_tables(
    base: pd.DataFrame,
    masked: Mapping[str, pd.DataFrame],
    selector: str,
    *,
    n_boot: int,
    seed: int,
    significance: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Matrix, self / cross / gap summary and (optionally) per-source gap tests of one ablation
    condition (one ratio, one intervention): ``masked`` maps source culture -> answers."""
    matrix = ablation_matrix(base, masked, n_boot=n_boot, seed=seed)
    matrix.insert(0, "selector", selector)
    summary = self_cross_summary(matrix, n_boot=n_boot, seed=seed)
    tests = None
    if significance:
        tests = source_gap_tests(base, masked, n_boot=n_boot, seed=seed)
        tests.insert(0, "selector", selector)
        for metric, (k, c) in significant_sources(tests).items():
            log.info("%s %s: %d of %d sources with a significant gap", selector, metric, k, c)
    return matrix, summary, tests


def _write_parquet(table: pd.DataFrame, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)


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
    ratio: float | None = None,
    intervention: str = "zero",
    sweep_ablations: Sequence[str | Path] = (),
    sweep_out: str | Path | None = None,
    sweep_summary_out: str | Path | None = None,
    sweep_significance_out: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Source x target accuracy change and flip rate of one selector (``out``), its self /
    cross / gap summary (``summary_out``) and, with ``significance_out``, the per-source gap
    tests (:func:`~culture_neurons.analysis.significance.source_gap_tests`), from the evaluation
    baseline and its ablation tables at the headline ``ratio``.

    With ``sweep_out`` (and the two other sweep outputs), the same three tables for every ratio
    long-format (columns ``intervention`` and ``ratio`` first): the headline's and those of the
    ``sweep_ablations`` tables, grouped by their ``ratio`` column."""
    base = pd.read_parquet(baseline)
    matrix, summary, tests = condition_tables(
        base, read_ablations(ablations), selector, n_boot=n_boot, seed=seed,
        significance=significance_out is not None or sweep_out is not None,
    )  # fmt: skip
    if "model" in base.attrs:  # which model answered, on to Table 2's notes
        summary.attrs["model"] = base.attrs["model"]
    write_matrix(matrix, out)
    write_summary(summary, summary_out)
    if significance_out is not None and tests is not None:
        _write_parquet(tests, significance_out)
    log.info("%s: %d source x target cells", selector, len(matrix))
    if sweep_out is None:
        return matrix, summary
    if ratio is None or sweep_summary_out is None or sweep_significance_out is None:
        raise InputError("a sweep needs --ratio and all three --sweep-*-out paths")
    conditions = {float(ratio): (matrix, summary, tests)}
    by_ratio: dict[float, list[Path]] = {}
    for path in map(Path, sweep_ablations):
        ratios = pd.read_parquet(path, columns=["ratio"])["ratio"].unique()
        if len(ratios) != 1:
            raise InputError(f"{path}: expected one ratio per ablation table, got {ratios}")
        by_ratio.setdefault(float(ratios[0]), []).append(path)
    if float(ratio) in by_ratio:
        raise InputError(f"the headline ratio {ratio:g} is also among the sweep tables")
    for value, paths in sorted(by_ratio.items()):
        conditions[value] = condition_tables(
            base, read_ablations(paths), selector, n_boot=n_boot, seed=seed
        )
    for position, target in enumerate((sweep_out, sweep_summary_out, sweep_significance_out)):
        parts = []
        for value in sorted(conditions):
            part = conditions[value][position].copy()
            part.insert(0, "ratio", value)
            part.insert(0, "intervention", intervention)
            parts.append(part)
        _write_parquet(pd.concat(parts, ignore_index=True), target)
    log.info("%s %s: ratios %s", selector, intervention, ", ".join(f"{r:g}" for r in conditions))
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


def models_loaded_note(summaries: Mapping[tuple[str, str], pd.DataFrame]) -> list[str]:
    """Table 2's note naming the model files each row came from (path, requested revision,
    commit loaded), as the summaries carry them from the baseline tables; none if none do."""
    loaded: dict[str, str] = {}
    for (model, _), table in summaries.items():
        source = table.attrs.get("model")
        if source and model not in loaded:
            commit = source.get("commit")
            where = f"commit {commit}" if commit else "a local folder, no hub commit"
            revision = source.get("revision")
            asked = f", revision {revision}" if revision and revision != commit else ""
            loaded[model] = f"{model}: {source.get('model_path')} ({where}{asked})"
    return [f"Models loaded: {'; '.join(loaded.values())}."] if loaded else []


def summary_stage(
    summaries: Mapping[tuple[str, str], str | Path] | Iterable[tuple[tuple[str, str], str | Path]],
    out_prefix: str | Path,
    significance: Mapping[tuple[str, str], str | Path]
    | Iterable[tuple[tuple[str, str], str | Path]]
    | None = None,
    sweep_summaries: Iterable[tuple[tuple[str, str], str | Path]] = (),
    sweep_significance: Iterable[tuple[tuple[str, str], str | Path]] = (),
) -> list[Path]:
    """The paper's Table 2 over (model, selector) -> summary-table paths (a mapping or pairs);
    writes PREFIX.csv, .md and .tex. ``significance``, the same keys -> per-source gap tests,
    adds the "sources with a significant gap" rows and writes them all to
    PREFIX_significance.csv."""
    tables = {key: pd.read_parquet(path) for key, path in dict(summaries).items()}
    tests = {key: pd.read_parquet(path) for key, path in dict(significance or {}).items()}
    table = table2(tables, tests or None)
    table.attrs["notes"] = [*table.attrs.get("notes", []), *models_loaded_note(tables)]
    paths = write_table2(table, out_prefix)
    if tests:
        rows = [t.assign(model=model) for (model, _), t in tests.items() if len(t)]
        merged = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
        if len(merged):
            merged = merged[["model", *[c for c in merged.columns if c != "model"]]]
        prefix = Path(out_prefix)
        paths.append(prefix.with_name(prefix.name + "_significance.csv"))
        merged.to_csv(paths[-1], index=False)
    if sweep_summaries:
        paths += _sweep_tables(sweep_summaries, sweep_significance, Path(out_prefix))
    log.info("wrote %s", ", ".join(map(str, paths)))
    return paths


def _by_condition(
    specs: Iterable[tuple[tuple[str, str], str | Path]],
) -> dict[tuple[str, float], dict[tuple[str, str], pd.DataFrame]]:
    """(intervention, ratio) -> (model, selector) -> that condition's rows of a sweep table."""
    conditions: dict[tuple[str, float], dict[tuple[str, str], pd.DataFrame]] = {}
    for key, path in specs:
        table = pd.read_parquet(path)
        for (intervention, ratio), part in table.groupby(["intervention", "ratio"], sort=True):
            rows = part.drop(columns=["intervention", "ratio"]).reset_index(drop=True)
            conditions.setdefault((str(intervention), float(ratio)), {})[key] = rows
    return conditions


def _sweep_tables(
    summaries: Iterable[tuple[tuple[str, str], str | Path]],
    significance: Iterable[tuple[tuple[str, str], str | Path]],
    prefix: Path,
) -> list[Path]:
    """Table 2 of every (intervention, ratio) condition: ``PREFIX_sweep.csv`` (long, condition
    columns first) and ``PREFIX_sweep.md`` (one section per condition)."""
    tests = _by_condition(significance)
    parts, sections = [], []
    # The paper's zeroing first, then the other kinds; ratios ascending within each.
    by_condition = sorted(
        _by_condition(summaries).items(), key=lambda kv: (kv[0][0] != "zero", kv[0])
    )
    for (intervention, ratio), tables in by_condition:
        table = table2(tables, tests.get((intervention, ratio)) or None)
        sections.append(f"## {intervention}, ratio {ratio:g}\n\n{markdown_table2(table)}")
        flat = table.reset_index()
        flat.insert(0, "ratio", ratio)
        flat.insert(0, "intervention", intervention)
        parts.append(flat)
    paths = [prefix.with_name(prefix.name + "_sweep" + ext) for ext in (".csv", ".md")]
    pd.concat(parts, ignore_index=True).to_csv(paths[0], index=False, encoding="utf-8")
    paths[1].write_text("\n".join(sections), encoding="utf-8")
    return paths


def dose_response_stage(
    model: str,
    sweeps: Iterable[tuple[str, str | Path]],
    table_out: str | Path,
    figure_dir: str | Path,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Self, cross and gap against the ratio for every selector of one model (``table_out``, CSV)
    and one figure per intervention, ``figure_dir/dose_response_{intervention}.png`` / ``.pdf``.
    ``sweeps``: (selector instance, sweep matrix) pairs, several per instance when it runs under
    several interventions."""
    matrices: dict[str, list[pd.DataFrame]] = {}
    for name, path in sweeps:
        matrices.setdefault(name, []).append(pd.read_parquet(path))
    table = dose_response_table(
        {name: pd.concat(parts, ignore_index=True) for name, parts in matrices.items()},
        n_boot=n_boot, seed=seed,
    )  # fmt: skip
    Path(table_out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(table_out, index=False)
    for intervention, part in table.groupby("intervention", sort=False):
        prefix = Path(figure_dir) / f"dose_response_{intervention}"
        plot_dose_response(part, f"{model}: dose-response, {intervention}", prefix)
    return table


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
