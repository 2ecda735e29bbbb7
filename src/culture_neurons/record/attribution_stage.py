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

import numpy as np
import pandas as pd
import torch

from culture_neurons import __version__
from culture_neurons.data.split import IDENTIFICATION, split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import prompt_items
from culture_neurons.models import load_adapter
from culture_neurons.models.base import ModelAdapter
from culture_neurons.models.spec import model_spec_from_config
from culture_neurons.record.attribution import attribution_scores
from culture_neurons.record.attribution_store import (
    AttributionStore,
    create_or_resume,
    open_attribution_store,
)
from culture_neurons.record.chunked_store import ResumablePass

log = logging.getLogger(__name__)

#: What the scores mean, stored with them (docs/selectors-and-attribution.md).
DEFINITION = (
    "p(gold) * max over positions before the reply's last token of act_fn output x "
    "d p(gold) / d output; p(gold) = exp(mean log-probability of the gold option's tokens, "
    "teacher-forced as the reply)"
)


def attribution_rows(
    items: pd.DataFrame,
    control: pd.DataFrame | None = None,
    exclusion: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The rows the store scores, in store order, with a ``task`` column: the identification
    split (cultural), the control task's identification half, every exclusion item."""
    parts = [split_rows(items, IDENTIFICATION).assign(task="cultural")]
    if control is not None and len(control):
        parts.append(split_rows(control, IDENTIFICATION).assign(task="control"))
    if exclusion is not None and len(exclusion):
        parts.append(exclusion.reset_index(drop=True).assign(task="exclusion"))
    rows = pd.concat(parts, ignore_index=True)
    if rows["item_id"].duplicated().any():
        dup = rows.loc[rows["item_id"].duplicated(), "item_id"].iloc[0]
        raise InputError(f"item {dup!r} appears in two of the scored tasks; IDs must be unique")
    hidden = rows[rows["label"] < 0]
    if len(hidden):
        raise InputError(
            f"{len(hidden)} scored item(s) have hidden labels (e.g. {hidden['item_id'].iloc[0]!r}):"
            " attribution needs the correct option (set dataset.labels_file)"
        )
    return rows


def gold_replies(rows: pd.DataFrame) -> list[str]:
    """The text of each row's correct option: the teacher-forced reply."""
    pairs = zip(rows["options"], rows["label"], strict=True)
    return [str(list(options)[int(label)]) for options, label in pairs]


def record_attribution(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    store_path: str | Path,
    *,
    batch_size: int,
    chunk_items: int,
    attrs: dict[str, Any],
    stop_after_chunks: int | None = None,
) -> AttributionStore | None:
    """Score every row into the store at ``store_path``, resuming a partial one; None when
    stopped early (``stop_after_chunks``, for tests)."""
    if batch_size < 1 or chunk_items < 1:
        raise InputError(f"batch_size and chunk_items must be >= 1: {batch_size}, {chunk_items}")
    run = ResumablePass.start(
        lambda partial: create_or_resume(
            partial,
            item_ids=rows["item_id"].tolist(),
            cultures=rows["culture"].tolist(),
            tasks=rows["task"].tolist(),
            n_layers=adapter.n_layers,
            n_neurons=adapter.n_neurons,
            chunk_items=chunk_items,
            attrs=attrs,
        ),
        store_path,
        stop_after_chunks=stop_after_chunks,
    )
    store = run.store
    assert isinstance(store, AttributionStore)
    replies = gold_replies(rows)
    with run.progress("attribute") as progress:
        for chunk in run.chunks:
            span = store.chunk_slice(chunk)
            scores, p_gold = [], []
            for start in range(span.start, span.stop, batch_size):
                stop = min(start + batch_size, span.stop)
                batch_rows = rows.iloc[start:stop]
                items = prompt_items(batch_rows, with_images=adapter.takes_images)
                score, p = attribution_scores(adapter, items, replies[start:stop])
                scores.append(score.numpy())
                p_gold.append(p.numpy())
                progress.update(stop - start)
            store.write_chunk(chunk, np.concatenate(scores), np.concatenate(p_gold))
    final = run.publish()
    return None if final is None else open_attribution_store(final)


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
