"""The dose-response stage (rule `dose_response`, `culture-neurons dose-response`): self, cross
and gap against the ratio for every selector of one model."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from culture_neurons.analysis.dose_response import dose_response_table, plot_dose_response
from culture_neurons.selection.conventions import DECODER_MLP, split_site

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
    and one figure per intervention, ``figure_dir/dose_response_{intervention}.png`` / ``.pdf``
    (a site other than the decoder MLP: ``{site}_dose_response_{intervention}``).
    ``sweeps``: (selector instance, sweep matrix) pairs, several per instance when it runs under
    several interventions."""
    matrices: dict[str, list[pd.DataFrame]] = {}
    for name, path in sweeps:
        matrices.setdefault(name, []).append(pd.read_parquet(path))
    # One table (and figure) per site, the decoder MLP's first: a site's lines share its units.
    by_site: dict[str, dict[str, pd.DataFrame]] = {DECODER_MLP: {}}
    for name, parts in matrices.items():
        by_site.setdefault(split_site(name)[0], {})[name] = pd.concat(parts, ignore_index=True)
    tables = []
    for site, site_sweeps in by_site.items():
        if not site_sweeps:
            continue
        table = dose_response_table(site_sweeps, n_boot=n_boot, seed=seed)
        tables.append(table)
        for intervention, part in table.groupby("intervention", sort=False):
            name = f"dose_response_{intervention}"
            title = f"{model}: dose-response, {intervention}"
            if site != DECODER_MLP:
                name, title = f"{site}_{name}", f"{title}, {site}"
            plot_dose_response(part, title, Path(figure_dir) / name, site)
    table = pd.concat(tables, ignore_index=True)
    Path(table_out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(table_out, index=False)
    return table
