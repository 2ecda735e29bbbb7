"""A KV cache that reserves room for the decode steps, so a step writes in place.

transformers' `DynamicLayer` appends a step's key/value by concatenation: every decode step copies
the whole cache (every row, every position). `ReservedLayer` keeps its keys and values at the
front of buffers with ``room`` positions to spare and exposes the filled part as the plain
layer's ``keys``/``values``. It is the only code that sets `DynamicLayer`'s state fields (``keys``,
``values``, ``device``, ``dtype``, ``is_initialized``, as transformers 4.56-5.25 name them): the
cache's other methods (sequence length, mask sizes) read them, and `test_kv_cache` checks that
they see what a plain layer would show.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from culture_neurons.models.compat import cache_layers


class ReservedLayer(DynamicLayer):
    """A full-attention cache layer held at the front of buffers with ``room`` positions to
    spare; the first update (the prefill) sizes the buffers."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self._length = 0

    @staticmethod
    def _reserve(states: torch.Tensor, room: int) -> torch.Tensor:
        rows, heads, length, dim = states.shape
        buffer = states.new_empty(rows, heads, length + room, dim)
        buffer[:, :, :length] = states
        return buffer

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self._length]
        self.values = self._values[:, :, : self._length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if not self.is_initialized:
            self.device, self.dtype, self.is_initialized = key_states.device, key_states.dtype, True
            self._keys = key_states.new_empty(*key_states.shape[:2], new + self.room,
                                              key_states.shape[3])  # fmt: skip
            self._values = value_states.new_empty(*value_states.shape[:2], new + self.room,
                                                  value_states.shape[3])  # fmt: skip
        elif self._length + new > self._keys.shape[-2]:  # out of room: reserve as much again
            self._keys = self._reserve(self.keys, self._length + new)
            self._values = self._reserve(self.values, self._length + new)
        self._keys[:, :, self._length : self._length + new] = key_states
        self._values[:, :, self._length : self._length + new] = value_states
        self._length += new
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys = self._keys[indices]
        self._values = self._values[indices]
        self._expose()

    def crop(self, max_length: int) -> None:  # pragma: no cover - greedy decoding never crops
        raise NotImplementedError("a reserved cache layer is not cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:  # pragma: no cover
        raise NotImplementedError("a reserved cache layer is not repeated")

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError("a reserved cache layer is not reordered")


def reserved_cache(config: Any, room: int) -> DynamicCache:
    """The model's dynamic cache with every full-attention layer a `ReservedLayer` (a
    sliding-window layer keeps its own update)."""
    cache = DynamicCache(config=config)
    for index, layer in enumerate(cache_layers(cache)):
        if type(layer) is DynamicLayer:
            cache.layers[index] = ReservedLayer(room)
    return cache
