"""The ablate stage (rule `ablate`, `culture-neurons ablate`): one model load serves every source
culture's mask of one selector at every swept ratio, under one intervention kind; one answer
table per ratio and source culture (`culture_neurons.ablation.work`)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from culture_neurons.ablation.chunks import (
    DEFAULT_CHUNK_ITEMS,
)
from culture_neurons.ablation.partial import open_partial, partial_dir
from culture_neurons.ablation.work import answer_chunks, plan_work, write_tables

log = logging.getLogger(__name__)


def ablate_stage(
    items: str | Path,
    model: Mapping[str, Any],
    masks: str | Path,
    out_dir: str | Path,
    *,
    sources: Sequence[str] = ("all",),
    ratios: Sequence[float] = (),
    intervention: Mapping[str, Any] | None = None,
    store: str | Path | None = None,
    sweep_dir: str | Path | None = None,
    batch_size: int = 8,
    max_batch_size: int = 0,
    max_new_tokens: int = 20,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
    gather: bool = False,
) -> list[Path]:
    """Answer the evaluation split of ``items`` once per source culture of ``masks`` (``all``:
    every culture in the mask store) and ratio (default: only the store's headline ``ratio``)
    with ``intervention`` (``{"kind": "zero" | "mean" | "scale", "factor": k}``) applied to that
    mask's neurons; ``mean`` needs the activation ``store``. Tables of ratios other than the
    headline go to ``sweep_dir`` (default ``out_dir``, see `table_path`). Returns their paths.

    The rows are answered ``chunk_items`` at a time (rounded up to whole windows of
    `items_per_window`, so the batches are those of one run over all rows), every mask per
    chunk; finished chunks go to `partial_dir` and a rerun for the same work answers only the
    missing ones. With ``gather`` nothing is answered and the model is not loaded: the chunks
    come from the `ablate_shard_stage` jobs of a split ablate job.
    """
    work = plan_work(
        items, model, masks, sources=sources, ratios=ratios, intervention=intervention,
        store=store, batch_size=batch_size, max_batch_size=max_batch_size,
        max_new_tokens=max_new_tokens, chunk_items=chunk_items,
    )  # fmt: skip
    root = partial_dir(out_dir)
    partial = open_partial(root, work.manifest, len(work.bounds), create=not gather)
    n_sources = len({source for _, source in work.keys})
    log.info(
        "%s: %d masks (%d ratios x %d sources), %d items in %d chunks of %d",
        work.kind.name, len(work.keys), len(work.keys) // n_sources, n_sources,
        len(work.evaluation), len(work.bounds), work.manifest["chunk_items"],
    )  # fmt: skip
    if not gather:
        answer_chunks(
            work, partial, range(len(work.bounds)), model, batch_size=batch_size,
            max_batch_size=max_batch_size, max_new_tokens=max_new_tokens,
            desc=f"ablate {work.kind.name} {','.join(sorted({s for _, s in work.keys}))}",
        )  # fmt: skip
    paths = write_tables(work, partial, out_dir, sweep_dir)
    shutil.rmtree(root)
    return paths
