"""The matrices stage (rule `matrices`, `culture-neurons matrices`): one selector's source x
target accuracy change and flip rate, its self / cross / gap summary and per-source gap tests, at
the headline ratio and, with a sweep, at every ratio."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.metrics import (
    read_ablations,
    write_matrix,
    write_summary,
)
from culture_neurons.analysis.significance import condition_tables
from culture_neurons.errors import InputError

log = logging.getLogger(__name__)


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
