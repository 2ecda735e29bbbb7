"""Recording attributions (the attribute stage's pass): attribution scores of every decoder-MLP
neuron on the identification split, the control task's identification half and the exclusion
task, into the attribution store, resumable chunk by chunk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from culture_neurons.data.split import IDENTIFICATION, split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import prompt_items
from culture_neurons.models.base import ModelAdapter
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
