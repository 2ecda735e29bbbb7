"""The attribute stage (rule `attribute`, `culture-neurons attribute`): attribution scores of every
decoder-MLP neuron on the identification split, the control task's identification half and the
exclusion task, into the attribution store (resumable, chunk by chunk), plus a JSON report."""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from culture_neurons import __version__
from culture_neurons.models import load_adapter
from culture_neurons.models.spec import model_spec_from_config
from culture_neurons.record.attribution_recording import (
    DEFINITION,
    attribution_rows,
    record_attribution,
)

log = logging.getLogger(__name__)


def _read_optional(path: str | Path | None) -> pd.DataFrame | None:
    return None if path is None else pd.read_parquet(path)


def _scored(table: pd.DataFrame | None) -> str:
    return "scored" if table is not None and len(table) else "none configured"


def peak_memory_mb() -> dict[str, float]:
    """Peak host memory of this process (and of the GPU, when used), in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = {"host_peak_mb": round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def attribute_stage(
    items: str | Path,
    data_report: str | Path,
    model_name: str,
    model: Mapping[str, Any],
    store: str | Path,
    report: str | Path,
    *,
    control_items: str | Path | None = None,
    exclusion_items: str | Path | None = None,
    batch_size: int = 4,
    chunk_items: int = 32,
) -> dict[str, Any]:
    """Score ``model`` (a `models:` entry) into the attribution store ``store``; writes the
    JSON report ``report`` (items per task, mean p(gold), time, peak memory) and returns it."""
    start = time.perf_counter()
    control = _read_optional(control_items)
    exclusion = _read_optional(exclusion_items)
    rows = attribution_rows(pd.read_parquet(items), control, exclusion)
    fingerprint = json.loads(Path(data_report).read_text())["fingerprint"]
    adapter = load_adapter(model_spec_from_config(model))
    attrs = {
        "model": model_name,
        **adapter.metadata(),
        "dataset_fingerprint": fingerprint,
        "package_version": __version__,
        "definition": DEFINITION,
    }
    finished = record_attribution(
        adapter, rows, store, batch_size=batch_size, chunk_items=chunk_items, attrs=attrs
    )
    assert finished is not None
    p_gold = finished.group["p_gold"][:]
    summary = {
        "model": model_name,
        "definition": DEFINITION,
        "items": rows.groupby("task").size().to_dict(),
        "items_per_culture": {
            task: group.groupby("culture").size().to_dict() for task, group in rows.groupby("task")
        },
        "mean_p_gold": {
            task: float(p_gold[(rows["task"] == task).to_numpy()].mean())
            for task in rows["task"].unique()
        },
        "control_task": _scored(control),
        "exclusion_task": _scored(exclusion),
        "batch_size": batch_size,
        "seconds": round(time.perf_counter() - start, 2),
        **peak_memory_mb(),
    }
    Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("attribution of %d items in %.1f s", len(rows), summary["seconds"])
    return summary
