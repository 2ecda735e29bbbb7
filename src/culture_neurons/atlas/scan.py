"""One pass over the activation store: the per-item statistics of the atlas's neurons."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from culture_neurons.errors import InputError
from culture_neurons.record.store import ActivationStore


@dataclass(frozen=True)
class NeuronActivity:
    """Per-item statistics of ``neurons`` (``[N, 2]``: layer, neuron), read from one store.

    ``fire_count`` and ``pos_sum`` are ``[items, N]``; the per-item labels and the unmasked
    answer come from the store too, in its item order.
    """

    neurons: np.ndarray
    fire_count: np.ndarray
    pos_sum: np.ndarray
    tokens: np.ndarray
    item_id: np.ndarray
    culture: np.ndarray
    answer: np.ndarray
    choice: np.ndarray
    correct: np.ndarray

    # Cached: the pages read them once per listed item, and each is an [items, N] array.
    @functools.cached_property
    def activation(self) -> np.ndarray:
        """Mean positive activation per valid token, ``[items, N]`` (0 for an item without
        valid tokens): the value items are ranked by."""
        return _per_token(self.pos_sum, self.tokens)

    @functools.cached_property
    def firing_rate(self) -> np.ndarray:
        """Share of an item's valid tokens on which the neuron fires, ``[items, N]``."""
        return _per_token(self.fire_count, self.tokens)

    def column(self, layer: int, neuron: int) -> int:
        hits = np.flatnonzero((self.neurons[:, 0] == layer) & (self.neurons[:, 1] == neuron))
        if not len(hits):
            raise KeyError(f"neuron L{layer}/{neuron} was not scanned")
        return int(hits[0])


def _strings(values: np.ndarray) -> np.ndarray:
    # Zarr v3 returns numpy's variable-width StringDType, which numpy will not cast to "<U".
    return np.array([str(v) for v in values], dtype=object)


def _per_token(values: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    tokens = tokens.astype(np.float64)[:, None]
    out = np.zeros(values.shape, np.float64)
    np.divide(values, tokens, out=out, where=tokens > 0)
    return out


def scan_store(
    store: ActivationStore, neurons: list[tuple[int, int]], *, progress: bool = True
) -> NeuronActivity:
    """Read ``fire_count`` and ``pos_sum`` of ``neurons`` for every item, chunk by chunk (each
    chunk checked against its checksum), keeping only those columns: one pass, and memory of
    one chunk plus ``items x len(neurons)``."""
    group = store.group
    n_items, n_layers, n_neurons = group["fire_count"].shape
    cells = np.asarray(neurons, dtype=np.int64).reshape(-1, 2)
    bad = cells[(cells[:, 0] >= n_layers) | (cells[:, 1] >= n_neurons) | (cells < 0).any(1)]
    if len(bad):
        raise InputError(
            f"neurons {bad[:3].tolist()} lie outside the store {store.path} "
            f"({n_layers} layers x {n_neurons} neurons): masks of another model?"
        )
    fire = np.zeros((n_items, len(cells)), np.uint16)
    sums = np.zeros((n_items, len(cells)), np.float32)
    chunks = range(store.n_chunks)
    for chunk in tqdm(chunks, desc="atlas: reading the store", unit="chunk", disable=not progress):
        rows = store.chunk_slice(chunk)
        fire_rows, sum_rows = store.checked_rows(chunk)
        fire[rows] = fire_rows[:, cells[:, 0], cells[:, 1]]
        sums[rows] = sum_rows[:, cells[:, 0], cells[:, 1]]
    return NeuronActivity(
        neurons=cells,
        fire_count=fire,
        pos_sum=sums,
        tokens=group["tokens"][:],
        item_id=_strings(group["item_id"][:]),
        culture=_strings(group["culture"][:]),
        answer=_strings(group["answer"][:]),
        choice=group["choice"][:],
        correct=group["correct"][:],
    )
