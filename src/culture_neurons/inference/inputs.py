"""Model inputs streamed ahead of the model: a background thread turns the next slice of rows
into prompt items (decoding and downscaling their images) while the model answers this one.

A thread, not a DataLoader's worker processes: Pillow releases the GIL while it decodes and
resizes, so a thread overlaps the model as a process would, without pickling every decoded
image back to the job's process (benchmarks/real_size/memory.md measures both).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

Chunk = TypeVar("Chunk")
Loaded = TypeVar("Loaded")


@dataclass
class InputStats:
    """Where a model job's input time went: ``load_s`` in the background thread (reading,
    decoding and downscaling), ``wait_s`` that the model spent waiting for it (the part not
    hidden), and ``model_s`` the consumer's own time (set by it: answering)."""

    items: int = 0
    load_s: float = 0.0
    wait_s: float = 0.0
    model_s: float = 0.0

    def summary(self) -> str:
        n = max(self.items, 1)
        return (
            f"inputs: {self.items} items loaded in {self.load_s:.2f} s "
            f"({1000 * self.load_s / n:.1f} ms/item) in the background; the model waited "
            f"{self.wait_s:.2f} s for them and answered in {self.model_s:.2f} s "
            f"({1000 * self.model_s / n:.1f} ms/item)"
        )


def stream(
    chunks: Iterable[Chunk],
    load: Callable[[Chunk], Loaded],
    *,
    ahead: int = 1,
    stats: InputStats | None = None,
    size: Callable[[Chunk], int] = lambda chunk: 1,
) -> Iterator[tuple[Chunk, Loaded]]:
    """Yield ``(chunk, load(chunk))`` in order, loading up to ``ahead`` chunks beyond the one
    in use in a background thread: at most ``ahead + 1`` loaded chunks are held at once, so
    memory does not grow with the number of chunks. An error in ``load`` is raised here, at its
    chunk. ``size`` counts a chunk's items for ``stats``."""
    if ahead < 1:
        raise ValueError(f"ahead must be at least 1, got {ahead}")
    stats = stats if stats is not None else InputStats()

    def timed(chunk: Chunk) -> Loaded:
        start = time.perf_counter()
        loaded = load(chunk)
        stats.load_s += time.perf_counter() - start
        stats.items += size(chunk)
        return loaded

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inputs")
    pending: deque[tuple[Chunk, Future[Loaded]]] = deque()
    source = iter(chunks)

    def submit() -> None:
        for chunk in source:
            pending.append((chunk, pool.submit(timed, chunk)))
            return

    try:
        for _ in range(ahead):
            submit()
        while pending:
            chunk, future = pending.popleft()
            start = time.perf_counter()
            loaded = future.result()
            stats.wait_s += time.perf_counter() - start
            submit()  # the next chunk loads while this one is answered
            yield chunk, loaded
    finally:
        # A consumer that stops early (or fails) leaves no thread decoding for nobody.
        pool.shutdown(wait=True, cancel_futures=True)
