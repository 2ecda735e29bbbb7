"""The record_site stage (rule `record_site`, `culture-neurons record-site`): one site's
activation store over the identification split (`culture_neurons.record.site_recording`) and a
report of what it cost: seconds and store bytes per item."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from culture_neurons.data.split import IDENTIFICATION, split_rows
from culture_neurons.errors import InputError
from culture_neurons.models import load_adapter
from culture_neurons.models.sites import site_shape
from culture_neurons.models.spec import model_spec_from_config
from culture_neurons.record.recording import store_attrs
from culture_neurons.record.site_recording import record_site_pass

log = logging.getLogger(__name__)


def directory_bytes(path: str | Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(
        os.lstat(os.path.join(root, name)).st_size
        for root, _dirs, files in os.walk(path)
        for name in files
    )


def record_site_stage(
    items: str | Path,
    data_report: str | Path,
    baseline: str | Path,
    model_name: str,
    model: Mapping[str, Any],
    site: str,
    store: str | Path,
    report: str | Path,
    *,
    batch_size: int = 8,
    chunk_items: int = 32,
) -> dict[str, Any]:
    """Record ``site`` of ``model`` (a `models:` config entry) on the identification split of
    ``items`` into ``store``; answers and correctness come from the identification
    ``baseline`` of rule record. Writes ``report`` (JSON) and returns it."""
    began = time.perf_counter()
    fingerprint = json.loads(Path(data_report).read_text())["fingerprint"]
    rows = split_rows(pd.read_parquet(items), IDENTIFICATION)
    answered = pd.read_parquet(baseline)
    adapter = load_adapter(model_spec_from_config(model))
    loaded = time.perf_counter()
    shape = site_shape(adapter, site)
    if shape.in_vision_tower and not adapter.takes_images:
        raise InputError(
            f"model {model_name} answers without images (image: drop, or a text-only "
            f"processor): its {site} site sees nothing; remove {site} from sites for this run"
        )
    log.info("%s %s: %d layers x %d units", model_name, site, shape.n_layers, shape.n_units)
    attrs = {
        **store_attrs(adapter, fingerprint, model_name),
        "site": site,
        "statistic": shape.statistic,
        "site_layers_path": shape.layers_path,
        "n_layers": shape.n_layers,
        "n_neurons": shape.n_units,
    }
    recorded, timings = record_site_pass(
        adapter, rows, answered, shape, store,
        batch_size=batch_size, chunk_items=chunk_items, attrs=attrs,
    )  # fmt: skip
    assert recorded is not None
    size = directory_bytes(store)
    summary = {
        "model": model_name,
        "site": site,
        "statistic": shape.statistic,
        "layers": shape.n_layers,
        "units_per_layer": shape.n_units,
        "units": shape.n_layers * shape.n_units,
        "items": len(rows),
        "load_s": round(loaded - began, 3),
        "model_s": round(timings["model_s"], 3),
        "write_s": round(timings["write_s"], 3),
        "seconds_per_item": round((timings["model_s"] + timings["write_s"]) / len(rows), 6),
        "store_bytes": size,
        "store_bytes_per_item": round(size / len(rows), 1),
    }
    Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "recorded %s on %d items: %.4f s and %.0f store bytes per item",
        site, len(rows), summary["seconds_per_item"], summary["store_bytes_per_item"],
    )  # fmt: skip
    return summary
