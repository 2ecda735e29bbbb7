"""How an ablate job's evaluation rows are cut into chunks (the unit of resuming) and how the
chunks are shared out among the shard jobs of a split ablate job. Pure arithmetic, no I/O."""

from __future__ import annotations

# Items per chunk when the configuration names none (models.<name>.ablate_chunk_items in the
# schema says the same). At the paper's size (5,196 evaluation items x 25 masks, ~20 answers/s
# on an H100) 240 items x 25 masks = 6,000 answers is about 5 minutes of GPU work: a kill loses
# at most that, and the 22 chunks cost 22 small parquet files. 240 = 2^4 x 3 x 5 is a multiple
# of most window sizes (`items_per_window`), so the chunk size rarely needs rounding.
DEFAULT_CHUNK_ITEMS = 240


def chunk_size(chunk_items: int, window: int) -> int:
    """``chunk_items`` rounded up to whole windows of ``window`` items, so that answering chunk
    by chunk forms exactly the batches of one uninterrupted run."""
    if chunk_items < 1 or window < 1:
        raise ValueError(f"chunk_items ({chunk_items}) and window ({window}) must be >= 1")
    return -(-chunk_items // window) * window


def chunk_bounds(n_items: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) of each chunk of ``size`` items over ``n_items`` rows (the last may be
    shorter); no chunk for no rows."""
    return [(start, min(start + size, n_items)) for start in range(0, n_items, size)]


def shard_chunks(n_chunks: int, shard: int, shards: int) -> list[int]:
    """The chunks shard ``shard`` of ``shards`` answers: every ``shards``-th from ``shard``, so
    each shard gets a spread of the rows (and about as much work) whatever their order."""
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: need 0 <= shard < shards")
    return list(range(shard, n_chunks, shards))
