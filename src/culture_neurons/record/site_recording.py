"""record_site: the activation statistics of one site other than the decoder MLP (vision tower
MLPs, attention heads; docs/sites.md) over the identification split, into a store of its own.

Only the prompt's forward is recorded (as for the decoder MLP: generation adds nothing), so the
pass runs no generation: the vision tower alone for a vision site (`capture_prompts` stops the
model at its decoder), one decoder forward for the attention heads. The correctness filter and
the answers come from rule record's identification baseline, which the store copies, so that
selection reads a site's store exactly as it reads the decoder's.
"""

from __future__ import annotations

import inspect
import logging
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from culture_neurons.errors import InputError
from culture_neurons.inference.batch_memory import BatchSizer
from culture_neurons.inference.decoding import capture_prompts
from culture_neurons.inference.engine import batches, model_items
from culture_neurons.inference.inputs import InputStats, stream
from culture_neurons.inference.scheduler import run_batches
from culture_neurons.models.base import ModelAdapter
from culture_neurons.models.hooks import ActivationStats
from culture_neurons.models.sites import SiteShape, record_site
from culture_neurons.record.chunked_store import ResumablePass
from culture_neurons.record.store import ActivationStore, create_or_resume, open_store

log = logging.getLogger(__name__)


def check_baseline(rows: pd.DataFrame, baseline: pd.DataFrame) -> None:
    """The identification baseline answers exactly ``rows``, in their order."""
    if baseline["item_id"].tolist() != rows["item_id"].tolist():
        raise InputError(
            "the identification baseline's items differ from the identification split of the "
            "items table (another dataset or split?): rerun rule record"
        )


@torch.inference_mode()
def prefill(adapter: ModelAdapter, batch: Any, shape: SiteShape) -> None:
    """The forward a site's recording needs: the vision tower (the model stops before its
    decoder), or one decoder forward over the prompts that keeps only the last logits."""
    if shape.in_vision_tower:
        capture_prompts(adapter, batch)
        return
    options: dict[str, Any] = {"use_cache": False}
    if "logits_to_keep" in inspect.signature(adapter.model.forward).parameters:
        options["logits_to_keep"] = 1  # a [B, T, vocab] logits tensor is GiBs at 7B
    adapter.model(**batch, **options)


def record_batch_stats(
    adapter: ModelAdapter, rows: pd.DataFrame, items: list[dict[str, Any]], shape: SiteShape
) -> ActivationStats:
    batch = adapter.build_batch(items)
    with record_site(adapter, shape.site, batch) as recorder:
        prefill(adapter, batch, shape)
    return recorder.stats


def record_site_pass(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    baseline: pd.DataFrame,
    shape: SiteShape,
    store_path: str | Path,
    *,
    batch_size: int,
    chunk_items: int,
    attrs: dict[str, Any],
    stop_after_chunks: int | None = None,
) -> tuple[ActivationStore | None, dict[str, float]]:
    """Record ``shape.site`` for every row into the store at ``store_path`` (resuming a partial
    one), each row's answer and correctness taken from ``baseline``. Returns the finished store
    (None if stopped early) and the model and write seconds."""
    check_baseline(rows, baseline)
    run = ResumablePass.start(
        lambda partial: create_or_resume(
            partial,
            item_ids=rows["item_id"].tolist(),
            cultures=rows["culture"].tolist(),
            n_layers=shape.n_layers,
            n_neurons=shape.n_units,
            chunk_items=chunk_items,
            attrs=attrs,
        ),
        store_path,
        stop_after_chunks=stop_after_chunks,
    )
    store = run.store
    assert isinstance(store, ActivationStore)
    timings = {"model_s": 0.0, "write_s": 0.0}
    work = [
        (chunk, part)
        for chunk in run.chunks
        for part in batches(rows.iloc[store.chunk_slice(chunk)], batch_size)
    ]
    inputs = InputStats()
    loaded = stream(
        work, lambda piece: model_items(adapter, piece[1]), stats=inputs, size=lambda p: len(p[1])
    )
    sizer = BatchSizer(batch_size)  # an out-of-memory error halves it for the rest of the run
    parts: list[ActivationStats] = []
    start = time.perf_counter()
    with closing(loaded), run.progress(f"record {shape.site}") as progress:
        for index, ((chunk, part), items) in enumerate(loaded):

            def answer(positions, part=part, items=items) -> ActivationStats:
                piece = part.iloc[positions[0] : positions[-1] + 1]
                return record_batch_stats(adapter, piece, [items[i] for i in positions], shape)

            parts += [stats for _, stats in run_batches(range(len(part)), answer, sizer)]
            progress.update(len(part))
            if index + 1 < len(work) and work[index + 1][0] == chunk:
                continue
            timings["model_s"] += time.perf_counter() - start
            start = time.perf_counter()
            _write_chunk(store, chunk, parts, baseline.iloc[store.chunk_slice(chunk)])
            parts = []
            timings["write_s"] += time.perf_counter() - start
            start = time.perf_counter()
    inputs.model_s = timings["model_s"] - inputs.wait_s
    log.info("record %s: %s", shape.site, inputs.summary())
    final = run.publish()
    return (None if final is None else open_store(final)), timings


def _write_chunk(
    store: ActivationStore, chunk: int, parts: list[ActivationStats], answered: pd.DataFrame
) -> None:
    store.write_chunk(
        chunk,
        np.concatenate([p.fire_count.numpy() for p in parts]),
        np.concatenate([p.pos_sum.numpy() for p in parts]),
        np.concatenate([p.tokens.numpy() for p in parts]),
        answered["correct"].to_numpy(dtype=np.int8),
        answers=answered["output"].astype(str).tolist(),
        choices=answered["choice"].to_numpy(dtype=np.int8),
        act_sum=np.sum([p.act_sum.numpy() for p in parts], axis=0),
    )
