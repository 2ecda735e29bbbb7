"""The activation store: per-item neuron statistics in a Zarr v3 group, written chunk by chunk.

Layout (all arrays share the ``item`` dimension, ``dimension_names`` set for xarray):
``fire_count[item, layer, neuron]`` valid tokens with act_fn output > 0, ``pos_sum[item, layer,
neuron]`` sum of positive outputs, ``tokens[item]`` valid tokens, ``item_id``, ``culture``,
``correct[item]`` (1, 0, or -1 when labels are hidden), the unmasked answer (``answer[item]``,
``choice[item]``: extracted option, -1 for none) and ``chunk_done[chunk]``. ``act_sum[chunk, layer,
neuron]`` (float64) sums each chunk's act_fn outputs (any sign) over its valid tokens: with
``tokens`` it gives each neuron's mean on the identification split, which the mean intervention
patches in (:func:`identification_means`); NaN marks a chunk written without it. The group attribute
``statistics`` lists what the store records.

Labels follow xarray's Zarr conventions, so ``xarray.open_zarr`` shows them as coordinates:
``layer`` and ``neuron`` are index arrays named like their dimension, and every per-item data
array lists ``item_id culture`` in its ``coordinates`` attribute.

The two big arrays are compressed losslessly (:func:`neuron_codecs`): inside a chunk the values
are laid out item-fastest, so one neuron's values over the chunk's items sit together, then
bit-shuffled and compressed with zstd (Blosc). Counts and float32 sums read back bit for bit.

A chunk's data is written before its ``chunk_done`` flag, so a job killed at any point resumes
at the first chunk not flagged and rewrites it whole: the finished store is identical to one
written without interruption.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from culture_neurons.errors import InputError

ITEM_ARRAYS = ("fire_count", "pos_sum", "tokens", "correct")
#: What a store made by this version records (the ``statistics`` attribute).
STATISTICS = ("fire_count", "pos_sum", "act_sum")
# The attribute xarray itself writes on data arrays: it opens the arrays named there as
# coordinates, so item labels stay attached to selections instead of being data variables.
ITEM_COORDS: dict[str, str] = {"coordinates": "item_id culture"}
# uint16 counts are exact up to 65,535 valid tokens per item (prompts are capped far below).
COUNT_DTYPE = np.uint16
MAX_COUNT = np.iinfo(COUNT_DTYPE).max
SUM_DTYPE = np.float32
# Float32 bytes per chunk of fire_count/pos_sum at most: a large model's store chunk is split
# over layers, so zarr compresses the pieces in parallel (Blosc refuses buffers over 2 GiB).
MAX_CHUNK_BYTES = 16 * 2**20


class StoreMismatchError(InputError):
    """A partial store exists but was started for other inputs."""


@dataclass
class ActivationStore:
    group: zarr.Group
    path: Path

    @property
    def n_items(self) -> int:
        return int(self.group["tokens"].shape[0])

    @property
    def chunk_items(self) -> int:
        return int(self.group.attrs["chunk_items"])

    @property
    def n_chunks(self) -> int:
        return int(self.group["chunk_done"].shape[0])

    def chunk_slice(self, chunk: int) -> slice:
        start = chunk * self.chunk_items
        return slice(start, min(start + self.chunk_items, self.n_items))

    def pending_chunks(self) -> list[int]:
        done = self.group["chunk_done"][:]
        return [int(k) for k in np.flatnonzero(~done)]

    def write_chunk(
        self,
        chunk: int,
        fire_count: np.ndarray,
        pos_sum: np.ndarray,
        tokens: np.ndarray,
        correct: np.ndarray,
        answers: list[str] | None = None,
        choices: np.ndarray | None = None,
        act_sum: np.ndarray | None = None,
    ) -> None:
        rows = self.chunk_slice(chunk)
        n = rows.stop - rows.start
        if fire_count.shape[0] != n:
            raise ValueError(f"chunk {chunk} holds {n} items, got {fire_count.shape[0]}")
        if fire_count.size and int(fire_count.max()) > MAX_COUNT:
            raise ValueError(f"a fire count exceeds {MAX_COUNT}: too many valid tokens per item")
        self.group["fire_count"][rows] = fire_count.astype(COUNT_DTYPE)
        self.group["pos_sum"][rows] = pos_sum.astype(SUM_DTYPE)
        self.group["tokens"][rows] = tokens.astype(np.uint32)
        self.group["correct"][rows] = correct.astype(np.int8)
        if answers is not None:
            self.group["answer"][rows] = np.asarray(answers, dtype=str)
        if choices is not None:
            self.group["choice"][rows] = np.asarray(choices, dtype=np.int8)
        if act_sum is not None:
            if act_sum.shape != tuple(self.group["act_sum"].shape[1:]):
                raise ValueError(f"chunk {chunk}: act_sum of shape {act_sum.shape}, not [L, D]")
            self.group["act_sum"][chunk] = act_sum.astype(np.float64)
        # The flag goes last: a chunk counts as written only once all of its data is there.
        self.group["chunk_done"][chunk] = True

    @property
    def complete(self) -> bool:
        return bool(self.group["chunk_done"][:].all())


def create_or_resume(
    path: str | Path,
    *,
    item_ids: list[str],
    cultures: list[str],
    n_layers: int,
    n_neurons: int,
    chunk_items: int,
    attrs: dict[str, Any],
) -> ActivationStore:
    """Open the partial store at ``path`` if it was started for the same inputs, else create it.

    ``attrs`` must describe everything that determines the content (model, revision, dtype,
    token scope, dataset fingerprint, package version); a partial store with other attrs is
    refused rather than silently mixed.
    """
    path = Path(path)
    expected = {
        **attrs,
        "chunk_items": chunk_items,
        "n_layers": n_layers,
        "n_neurons": n_neurons,
        "statistics": list(STATISTICS),
    }
    if path.exists():
        group = zarr.open_group(str(path), mode="r+")
        found = {k: group.attrs.get(k) for k in expected}
        same_items = "item_id" in group and list(group["item_id"][:]) == list(item_ids)
        if found != _jsonable(expected) or not same_items:
            raise StoreMismatchError(
                f"partial activation store {path} was started for other inputs "
                f"(found {found}); delete it to start over"
            )
        return ActivationStore(group, path)
    tmp = path.with_name(path.name + ".creating")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    n_items = len(item_ids)
    block = neuron_chunks(chunk_items, n_layers, n_neurons)
    dims3 = ["item", "layer", "neuron"]
    for name, dtype in (("fire_count", COUNT_DTYPE), ("pos_sum", SUM_DTYPE)):
        filters, compressor = neuron_codecs(dtype)
        group.create_array(
            name, shape=(n_items, n_layers, n_neurons), chunks=block, dtype=dtype, fill_value=0,
            filters=filters, compressors=compressor, dimension_names=dims3,
            attributes=ITEM_COORDS,
        )  # fmt: skip
    for name, dtype, fill in (
        ("tokens", np.uint32, 0),
        ("correct", np.int8, -1),
        ("choice", np.int8, -1),
    ):
        group.create_array(
            name, shape=(n_items,), chunks=(chunk_items,), dtype=dtype, fill_value=fill,
            dimension_names=["item"], attributes=ITEM_COORDS,
        )  # fmt: skip
    group.create_array(
        "answer", shape=(n_items,), chunks=(chunk_items,), dtype=str, dimension_names=["item"],
        attributes=ITEM_COORDS,
    )  # fmt: skip
    write_index_coords(group, layer=n_layers, neuron=n_neurons)
    for name, values in (("item_id", item_ids), ("culture", cultures)):
        array = group.create_array(
            name, shape=(n_items,), chunks=(max(n_items, 1),), dtype=str, dimension_names=["item"]
        )
        array[:] = np.asarray(values, dtype=str)
    n_chunks = -(-n_items // chunk_items)
    done = group.create_array(
        "chunk_done", shape=(n_chunks,), chunks=(max(n_chunks, 1),), dtype=bool, fill_value=False,
        dimension_names=["chunk"],
    )  # fmt: skip
    done[:] = False
    group.create_array(
        "act_sum", shape=(n_chunks, n_layers, n_neurons), chunks=(1, n_layers, n_neurons),
        dtype=np.float64, fill_value=np.nan, dimension_names=["chunk", "layer", "neuron"],
    )  # fmt: skip
    group.attrs.update(_jsonable(expected))
    # Renamed into place only once fully laid out, so a crash here leaves no half-made store.
    tmp.rename(path)
    return ActivationStore(zarr.open_group(str(path), mode="r+"), path)


def write_index_coords(group: zarr.Group, **sizes: int) -> None:
    """An array ``0..n-1`` named like each dimension, which xarray takes as its index coordinate
    (so ``.sel(layer=3)`` works)."""
    for dim, n in sizes.items():
        array = group.create_array(
            dim, shape=(n,), chunks=(max(n, 1),), dtype=np.int64, dimension_names=[dim]
        )
        array[:] = np.arange(n, dtype=np.int64)


def neuron_chunks(chunk_items: int, n_layers: int, n_neurons: int) -> tuple[int, int, int]:
    """Chunk shape of ``fire_count`` and ``pos_sum``: a store chunk's items and all layers and
    neurons (the demo), or, past ``MAX_CHUNK_BYTES`` of float32, as many layers (at least one) as
    fit, split evenly; were one layer still too big, fewer neurons. Every zarr chunk lies inside
    one store chunk's rows, so ``write_chunk`` still rewrites whole zarr chunks."""
    per_neuron = chunk_items * np.dtype(SUM_DTYPE).itemsize
    neurons = max(1, min(n_neurons, MAX_CHUNK_BYTES // per_neuron))
    fit = max(1, min(n_layers, MAX_CHUNK_BYTES // (per_neuron * n_neurons)))
    groups = -(-n_layers // fit)
    return (chunk_items, -(-n_layers // groups), neurons)


def neuron_codecs(dtype: Any) -> tuple[list[zarr.codecs.TransposeCodec], zarr.codecs.BloscCodec]:
    """Lossless codecs for an ``[item, layer, neuron]`` array: transpose to item-fastest (a
    neuron's values over items are alike), bit-shuffle, zstd. On the demo this takes the two
    arrays from 4.6 to 3.9 bytes per item per neuron (0.69 for counts, 3.22 for sums, whose
    mantissas are nearly incompressible), at about the write speed of plain zstd."""
    filters = [zarr.codecs.TransposeCodec(order=(1, 2, 0))]
    compressor = zarr.codecs.BloscCodec(
        cname="zstd", clevel=5, shuffle=zarr.codecs.BloscShuffle.bitshuffle,
        typesize=np.dtype(dtype).itemsize,
    )  # fmt: skip
    return filters, compressor


def store_bytes_per_item_neuron(path: str | Path) -> float:
    """Bytes on disk (every file under ``path``, directories not counted) per item per neuron:
    the total over ``items x layers x neurons`` of ``fire_count``'s shape."""
    path = Path(path)
    n_items, n_layers, n_neurons = zarr.open_group(str(path), mode="r")["fire_count"].shape
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total / max(n_items * n_layers * n_neurons, 1)


def _jsonable(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, tuple) else list(v)) for k, v in mapping.items()}


def open_store(path: str | Path) -> ActivationStore:
    group = zarr.open_group(str(path), mode="r")
    store = ActivationStore(group, Path(path))
    if not store.complete:
        raise InputError(f"activation store {path} is incomplete ({store.pending_chunks()[:5]}…)")
    return store


def identification_means(store: ActivationStore) -> np.ndarray:
    """Each neuron's mean act_fn output over the store's valid tokens (every identification item,
    answered correctly or not): float64 ``[L, D]``.

    A store recorded before ``act_sum`` existed, or with chunks written without it, is refused
    with what to rerun: its means are unknown, not zero.
    """
    group = store.group
    rerun = (
        f"activation store {store.path} (model {group.attrs.get('model')!r}) {{}}; the mean "
        "intervention needs act_sum: delete the store and rerun baseline_and_record"
    )
    if "act_sum" not in group:
        raise InputError(rerun.format("predates the act_sum statistic"))
    sums = group["act_sum"][:]
    missing = np.flatnonzero(np.isnan(sums).any(axis=(1, 2))).tolist()
    if missing:
        raise InputError(rerun.format(f"has chunks {missing[:5]} written without act_sum"))
    tokens = int(group["tokens"][:].astype(np.int64).sum())
    if tokens == 0:
        raise InputError(f"activation store {store.path} holds no valid tokens")
    return sums.sum(axis=0) / tokens
