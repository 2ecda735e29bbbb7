"""The ablate-shard stage (rule `ablate_shard`, `culture-neurons ablate-shard`): one shard of a
split ablate job's chunks, answered into the job's shared partial folder."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from culture_neurons.ablation.chunks import (
    DEFAULT_CHUNK_ITEMS,
    shard_chunks,
)
from culture_neurons.ablation.partial import open_partial, partial_dir
from culture_neurons.ablation.work import answer_chunks, plan_work
from culture_neurons.errors import InputError

log = logging.getLogger(__name__)


def ablate_shard_stage(
    items: str | Path,
    model: Mapping[str, Any],
    masks: str | Path,
    out_dir: str | Path,
    *,
    shard: int,
    shards: int,
    done: str | Path,
    sources: Sequence[str] = ("all",),
    ratios: Sequence[float] = (),
    intervention: Mapping[str, Any] | None = None,
    store: str | Path | None = None,
    batch_size: int = 8,
    max_batch_size: int = 0,
    max_new_tokens: int = 20,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
) -> list[int]:
    """Shard ``shard`` of ``shards`` of the ablate job of ``out_dir``: answer its share of the
    chunks (`shard_chunks`) into the shared `partial_dir`, then touch ``done``. The ablate job
    with ``gather`` writes the tables once every shard is done. Returns the shard's chunks."""
    if shards < 1 or not 0 <= shard < shards:
        raise InputError(f"--shard {shard} of --shards {shards}: need 0 <= shard < shards")
    work = plan_work(
        items, model, masks, sources=sources, ratios=ratios, intervention=intervention,
        store=store, batch_size=batch_size, max_batch_size=max_batch_size,
        max_new_tokens=max_new_tokens, chunk_items=chunk_items,
    )  # fmt: skip
    partial = open_partial(partial_dir(out_dir), work.manifest, len(work.bounds))
    mine = shard_chunks(len(work.bounds), shard, shards)
    log.info("shard %d of %d: chunks %s of %d", shard, shards, mine, len(work.bounds))
    answer_chunks(
        work, partial, mine, model, batch_size=batch_size, max_batch_size=max_batch_size,
        max_new_tokens=max_new_tokens, desc=f"ablate {work.kind.name} shard {shard}/{shards}",
    )  # fmt: skip
    Path(done).parent.mkdir(parents=True, exist_ok=True)
    Path(done).touch()
    return mine
