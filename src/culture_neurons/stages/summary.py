"""The summary stage (rule `summary`, `culture-neurons summary`): the paper's Table 2 over every
(model, selector), its significance rows and, with a sweep, one Table 2 per condition."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.tables import (
    markdown_table2,
    models_loaded_note,
    table2,
    write_table2,
)
from culture_neurons.selection.conventions import DECODER_MLP, split_site

log = logging.getLogger(__name__)


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
    PREFIX_significance.csv. Selectors at a site other than the decoder MLP (named
    ``<site>.<instance>``) get their own PREFIX_<site>.* tables; the sweep tables hold every
    site's."""
    prefix = Path(out_prefix)
    paths = []
    tests_by_site = _by_site(dict(significance or {}))
    for site, specs in _by_site(dict(summaries)).items():
        if not specs:
            continue
        # The decoder MLP's table keeps its name; each other site gets PREFIX_<site>.*, its
        # columns named as the decoder's (the site is the file).
        at = prefix if site == DECODER_MLP else prefix.with_name(f"{prefix.name}_{site}")
        paths += _headline_tables(specs, tests_by_site.get(site, {}), at)
    if sweep_summaries:
        paths += _sweep_tables(sweep_summaries, sweep_significance, prefix)
    log.info("wrote %s", ", ".join(map(str, paths)))
    return paths


def _by_site(
    specs: Mapping[tuple[str, str], str | Path],
) -> dict[str, dict[tuple[str, str], str | Path]]:
    """site -> (model, selector instance at that site) -> path, the decoder MLP first."""
    grouped: dict[str, dict[tuple[str, str], str | Path]] = {DECODER_MLP: {}}
    for (model, selector), path in specs.items():
        site, instance = split_site(selector)
        grouped.setdefault(site, {})[(model, instance)] = path
    return grouped


def _headline_tables(
    summaries: Mapping[tuple[str, str], str | Path],
    significance: Mapping[tuple[str, str], str | Path],
    prefix: Path,
) -> list[Path]:
    """Table 2 (PREFIX.csv, .md, .tex) and, with significance tests, PREFIX_significance.csv."""
    tables = {key: pd.read_parquet(path) for key, path in summaries.items()}
    tests = {key: pd.read_parquet(path) for key, path in significance.items()}
    table = table2(tables, tests or None)
    table.attrs["notes"] = [*table.attrs.get("notes", []), *models_loaded_note(tables)]
    paths = write_table2(table, prefix)
    if tests:
        rows = [t.assign(model=model) for (model, _), t in tests.items() if len(t)]
        merged = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
        if len(merged):
            merged = merged[["model", *[c for c in merged.columns if c != "model"]]]
        paths.append(prefix.with_name(prefix.name + "_significance.csv"))
        merged.to_csv(paths[-1], index=False)
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
