"""record: one pass over the identification split (answers + activation statistics
into the store, chunk by chunk, resumable) and the unmasked baseline of the evaluation split."""

from __future__ import annotations

import logging
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from culture_neurons import __version__
from culture_neurons.inference.batch_memory import BatchSizer
from culture_neurons.inference.engine import (
    BatchAnswers,
    answer_all,
    answer_table,
    batches,
    model_items,
    record_batch,
)
from culture_neurons.inference.inputs import InputStats, stream
from culture_neurons.models.base import ModelAdapter
from culture_neurons.record.chunked_store import ResumablePass
from culture_neurons.record.store import ActivationStore, create_or_resume, open_store

log = logging.getLogger(__name__)


def record_identification(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    store_path: str | Path,
    *,
    batch_size: int,
    chunk_batches: int,
    max_new_tokens: int,
    attrs: dict[str, Any],
    stop_after_chunks: int | None = None,
    chunk_items: int | None = None,
) -> tuple[ActivationStore | None, dict[str, float]]:
    """Answer and record every row into the store at ``store_path``, resuming a partial one.

    Chunks hold whole batches, so a resumed run batches exactly as an uninterrupted one and
    writes identical values. ``chunk_items`` (default ``batch_size * chunk_batches``) fixes the
    chunk size instead: a retry with a smaller batch then resumes the same partial store (its
    answers may then differ from an unbatched run's in float rounding, as any batch change can).
    ``stop_after_chunks`` ends early (as a kill would; for tests).
    Returns the finished store (None if stopped early) and timings.
    """
    run = ResumablePass.start(
        lambda partial: create_or_resume(
            partial,
            item_ids=rows["item_id"].tolist(),
            cultures=rows["culture"].tolist(),
            n_layers=adapter.n_layers,
            n_neurons=adapter.n_neurons,
            chunk_items=chunk_items or batch_size * chunk_batches,
            attrs=attrs,
        ),
        store_path,
        stop_after_chunks=stop_after_chunks,
    )
    store = run.store
    assert isinstance(store, ActivationStore)
    timings = {"model_s": 0.0, "write_s": 0.0}
    work = [
        (chunk, batch_rows)
        for chunk in run.chunks
        for batch_rows in batches(rows.iloc[store.chunk_slice(chunk)], batch_size)
    ]
    inputs = InputStats()
    # The next batch's images are decoded in the background while this one is answered.
    loaded = stream(
        work, lambda piece: model_items(adapter, piece[1]), stats=inputs, size=lambda p: len(p[1])
    )
    parts: list[BatchAnswers] = []
    sizer = BatchSizer(batch_size)  # an out-of-memory error halves it for the rest of the run
    start = time.perf_counter()
    with closing(loaded), run.progress("record") as progress:
        for index, ((chunk, batch_rows), items) in enumerate(loaded):
            parts += record_batch(
                adapter, batch_rows, sizer, max_new_tokens=max_new_tokens, items=items
            )
            progress.update(len(batch_rows))
            if index + 1 < len(work) and work[index + 1][0] == chunk:
                continue
            timings["model_s"] += time.perf_counter() - start
            start = time.perf_counter()
            _write_chunk(store, chunk, parts)
            parts = []
            timings["write_s"] += time.perf_counter() - start
            start = time.perf_counter()
    inputs.model_s = timings["model_s"] - inputs.wait_s
    log.info("record: %s", inputs.summary())
    final = run.publish()
    return (None if final is None else open_store(final)), timings


def _write_chunk(store: ActivationStore, chunk: int, parts: list[BatchAnswers]) -> None:
    store.write_chunk(
        chunk,
        np.concatenate([p.fire_count for p in parts]),
        np.concatenate([p.pos_sum for p in parts]),
        np.concatenate([p.tokens for p in parts]),
        np.concatenate([p.correct for p in parts]),
        answers=[t for p in parts for t in p.texts],
        choices=np.concatenate([p.choices for p in parts]),
        act_sum=np.sum([p.act_sum for p in parts], axis=0),
    )


def baseline_table_from_store(store: ActivationStore, rows: pd.DataFrame) -> pd.DataFrame:
    group = store.group
    if list(group["item_id"][:]) != rows["item_id"].tolist():
        raise ValueError("the activation store's items differ from the identification split")
    return answer_table(rows, list(group["answer"][:]), group["choice"][:], group["correct"][:])


def store_attrs(adapter: ModelAdapter, dataset_fingerprint: str, model_name: str) -> dict:
    return {
        "model": model_name,
        **adapter.metadata(),
        "dataset_fingerprint": dataset_fingerprint,
        "package_version": __version__,
    }


def evaluation_baseline(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    *,
    batch_size: int,
    max_new_tokens: int,
    max_batch_size: int | None = None,
) -> pd.DataFrame:
    return answer_all(
        adapter,
        rows,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        desc="baseline",
        max_batch_size=max_batch_size,
    )
