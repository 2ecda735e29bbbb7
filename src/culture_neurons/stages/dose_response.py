"""The dose-response stage (rule `dose_response`, `culture-neurons dose-response`): self, cross
and gap against the ratio for every selector of one model."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.dose_response import dose_response_table, plot_dose_response

log = logging.getLogger(__name__)


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
