"""The estimate stage (`culture-neurons estimate`, no rule): every model job of a config with its
work, GPU-hours and the Slurm runtime and memory the workflow asks for it
(`culture_neurons.planning.estimate`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from culture_neurons.errors import InputError
from culture_neurons.planning.estimate import CHECKOUT, item_counts, load_config, n_cultures
from culture_neurons.planning.work import Estimate, estimate, render_estimate

log = logging.getLogger(__name__)


def load_bench(config: Mapping[str, Any], bench: str | Path | None) -> dict[str, Any] | None:
    path = bench or config["planning"]["bench"]
    if not path:
        return None
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = CHECKOUT / path
    if not path.exists():
        raise InputError(f"bench file {path} not found (planning.bench or --bench)")
    return json.loads(path.read_text())


def estimate_stage(
    config: str | Path,
    items: str | None = None,
    bench: str | None = None,
    out: str | None = None,
) -> list[Estimate]:
    """Print (and write to ``out``) the estimate of ``config``'s model jobs."""
    settings = load_config(config)
    counts = item_counts(settings, items)
    cultures = n_cultures(settings, items)
    bench_result = load_bench(settings, bench)
    rows = estimate(settings, counts, cultures, bench_result)
    text = f"# Work and resources of {config}\n\n" + render_estimate(rows, counts, cultures)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    print(text)
    return rows
