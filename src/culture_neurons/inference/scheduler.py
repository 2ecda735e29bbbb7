"""The one out-of-memory strategy of the engine, for recording and masked answering alike.

Work is a sequence of units (a record batch's rows, an ablate window's (item, mask) pairs) cut
into batches by a `BatchSizer`. An out-of-memory error on a batch halves the batch size (and the
ceiling of a growing one) for the rest of the run, frees the allocator's cache and retries the
same units; only a single unit that does not fit is raised. A job that still fails is retried by
Snakemake with a smaller batch size, and resumes from its finished chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

from culture_neurons.inference.batch_memory import BatchSizer
from culture_neurons.models.compat import OutOfMemoryError

log = logging.getLogger(__name__)

Unit = TypeVar("Unit")
Result = TypeVar("Result")


def run_batches(
    units: Sequence[Unit],
    answer: Callable[[Sequence[Unit]], Result],
    sizer: BatchSizer,
    *,
    width: Callable[[Sequence[Unit]], int] | None = None,
) -> Iterator[tuple[Sequence[Unit], Result]]:
    """``answer`` over consecutive batches of ``units``; yields each batch with its result.

    ``width(batch)``: the batch's padded tokens per row (prompt + new tokens), which a growing
    sizer needs to fit rows to free memory; units sorted by width only widen a batch as it grows.
    Without it the sizer's size is the batch size.
    """
    if width is None and sizer.adaptive:
        raise ValueError("a batch sizer that grows to free memory needs the batches' widths")
    start = 0
    while start < len(units):
        batch = _next_batch(units, start, sizer, width)
        sizer.begin()
        try:
            result = answer(batch)
        except OutOfMemoryError:
            if len(batch) == 1:
                raise
            size = sizer.out_of_memory(len(batch))
            log.warning("out of memory at %d rows: batch size now %d", len(batch), size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        if width is not None:
            sizer.measured(len(batch), width(batch))
        start += len(batch)
        yield batch, result


def _next_batch(
    units: Sequence[Unit],
    start: int,
    sizer: BatchSizer,
    width: Callable[[Sequence[Unit]], int] | None,
) -> Sequence[Unit]:
    if width is None:
        return units[start : start + sizer.size]
    # More rows only widen the batch: size it for the width of the batch its first guess would
    # make, then for the width of that batch.
    rows = sizer.rows_for(width(units[start : start + sizer.size]))
    rows = min(rows, sizer.rows_for(width(units[start : start + rows])))
    return units[start : start + rows]
