"""The record stage (rule `record`, `culture-neurons record`).

One pass over the identification split answers every item and records its activation statistics
into the store; the evaluation split is then answered unmasked. Both baselines go to
``baseline_dir`` as ``{split}.parquet``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from culture_neurons.data.split import EVALUATION, IDENTIFICATION, split_rows
from culture_neurons.inference.batch_memory import checked_ceiling
from culture_neurons.models import load_adapter
from culture_neurons.models.loading import model_provenance
from culture_neurons.models.spec import model_spec_from_config
from culture_neurons.record.recording import (
    baseline_table_from_store,
    evaluation_baseline,
    record_identification,
    store_attrs,
)

log = logging.getLogger(__name__)


def record_stage(
    items: str | Path,
    data_report: str | Path,
    model_name: str,
    model: Mapping[str, Any],
    store: str | Path,
    baseline_dir: str | Path,
    *,
    batch_size: int = 8,
    max_batch_size: int = 0,
    chunk_batches: int = 4,
    chunk_items: int | None = None,
    max_new_tokens: int = 20,
) -> dict[str, Any]:
    """Record ``model`` (a `models:` config entry) on the items table ``items``.

    Writes the activation store at ``store`` (resuming a partial one) and the identification and
    evaluation baselines under ``baseline_dir``; returns counts and timings.
    """
    ceiling = checked_ceiling(batch_size, max_batch_size)
    table = pd.read_parquet(items)
    fingerprint = json.loads(Path(data_report).read_text())["fingerprint"]
    adapter = load_adapter(model_spec_from_config(model))
    log.info("loaded %s: %d layers x %d neurons", model_name, adapter.n_layers, adapter.n_neurons)
    identification = split_rows(table, IDENTIFICATION)
    recorded, timings = record_identification(
        adapter,
        identification,
        store,
        batch_size=batch_size,
        chunk_batches=chunk_batches,
        chunk_items=chunk_items,
        max_new_tokens=max_new_tokens,
        attrs=store_attrs(adapter, fingerprint, model_name),
    )
    out = Path(baseline_dir)
    out.mkdir(parents=True, exist_ok=True)
    provenance = model_provenance(adapter.spec, adapter.model)
    identification_table = baseline_table_from_store(recorded, identification)
    identification_table.attrs["model"] = provenance
    identification_table.to_parquet(out / f"{IDENTIFICATION}.parquet", index=False)
    evaluation = evaluation_baseline(
        adapter,
        split_rows(table, EVALUATION),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        max_batch_size=ceiling,
    )
    evaluation.attrs["model"] = provenance
    evaluation.to_parquet(out / f"{EVALUATION}.parquet", index=False)
    summary = {
        "identification_items": len(identification),
        "evaluation_items": len(evaluation),
        **timings,
    }
    log.info(
        "recorded %d items (model %.1f s, store writes %.2f s); evaluation baseline %d items",
        len(identification),
        timings["model_s"],
        timings["write_s"],
        len(evaluation),
    )
    return summary
