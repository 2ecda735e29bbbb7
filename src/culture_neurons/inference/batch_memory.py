"""Batch sizes fitted to free device memory, from what earlier batches were measured to use.

A batch's peak memory grows with rows x padded tokens (the KV cache, the MLP activations of the
prefill, the keep-mask factors). The first batches run at the configured size; each one's peak
above what was allocated before it gives bytes per row-token on every device the model sits on
(the largest seen is kept). Later batches then take as many rows as the memory free at that
moment holds, with headroom, up to a ceiling. Only CUDA reports peaks, so elsewhere the
configured size stays. An out-of-memory error still halves the batch, and lowers the ceiling
for the rest of the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import torch

from culture_neurons.errors import InputError


class MemoryMonitor(Protocol):
    """Peak use and free memory per device, in bytes."""

    def start(self) -> None:
        """Forget earlier peaks: what `used` reports next is this batch's."""

    def used(self) -> Mapping[torch.device, int]:
        """Peak bytes allocated since `start`, above what was allocated at `start`."""

    def available(self) -> Mapping[torch.device, int]:
        """Bytes a new allocation could take now (free, plus what the allocator caches)."""


class CudaMemory:
    """`MemoryMonitor` of the CUDA devices among ``devices``, from torch's allocator statistics."""

    def __init__(self, devices: Iterable[torch.device]) -> None:
        self.devices = sorted({d for d in devices if d.type == "cuda"}, key=lambda d: d.index or 0)
        self._base: dict[torch.device, int] = {}

    def start(self) -> None:
        for device in self.devices:
            torch.cuda.reset_peak_memory_stats(device)
            self._base[device] = torch.cuda.memory_allocated(device)

    def used(self) -> dict[torch.device, int]:
        return {d: torch.cuda.max_memory_allocated(d) - self._base.get(d, 0) for d in self.devices}

    def available(self) -> dict[torch.device, int]:
        free = {}
        for device in self.devices:
            free_bytes, _ = torch.cuda.mem_get_info(device)
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            free[device] = free_bytes + cached
        return free


def model_memory(model: torch.nn.Module) -> CudaMemory | None:
    """The monitor of the CUDA devices the model's weights sit on; None off CUDA."""
    monitor = CudaMemory(p.device for p in model.parameters())
    return monitor if monitor.devices else None


class BatchSizer:
    """How many rows the next batch takes: ``start`` rows, or with a ``ceiling`` above ``start``
    and a memory monitor, as many as fit (between 1 and the ceiling) once a batch was measured."""

    def __init__(
        self,
        start: int,
        *,
        ceiling: int | None = None,
        memory: MemoryMonitor | None = None,
        headroom: float = 0.85,
    ) -> None:
        if start < 1:
            raise ValueError(f"batch size must be at least 1, got {start}")
        if ceiling is not None and ceiling < start:
            raise ValueError(f"max batch size {ceiling} is below the batch size {start}")
        self.size = start
        self.ceiling = ceiling
        self.memory = memory
        self.headroom = headroom
        self.bytes_per_row_token: dict[torch.device, float] = {}

    @property
    def adaptive(self) -> bool:
        return self.ceiling is not None and self.memory is not None

    def rows_for(self, tokens: int) -> int:
        """Rows of ``tokens`` padded tokens each (prompt + new tokens) that the next batch takes."""
        if not self.adaptive or not self.bytes_per_row_token:
            return self.size
        assert self.memory is not None and self.ceiling is not None
        available = self.memory.available()
        fits = [
            int(self.headroom * available[device] // (per_row_token * tokens))
            for device, per_row_token in self.bytes_per_row_token.items()
            if per_row_token > 0
        ]
        return max(1, min([self.ceiling, *fits]))

    def begin(self) -> None:
        if self.adaptive:
            assert self.memory is not None
            self.memory.start()

    def measured(self, rows: int, tokens: int) -> None:
        """A batch of ``rows`` x ``tokens`` finished: keep the largest bytes per row-token seen."""
        if not self.adaptive:
            return
        assert self.memory is not None
        for device, used in self.memory.used().items():
            per_row_token = used / (rows * tokens)
            self.bytes_per_row_token[device] = max(
                self.bytes_per_row_token.get(device, 0.0), per_row_token
            )

    def out_of_memory(self, rows: int) -> int:
        """A batch of ``rows`` did not fit: the size (and ceiling) become half of it."""
        if rows <= 1:
            raise ValueError("a batch of one row does not fit")
        self.size = max(1, min(self.size, rows // 2))
        if self.ceiling is not None:
            self.ceiling = max(1, min(self.ceiling, rows // 2))
            self.size = min(self.size, self.ceiling)
        return self.size


def checked_ceiling(batch_size: int, max_batch_size: int) -> int | None:
    """The adaptive batch ceiling from the batch flags, checked before a model loads.

    ``max_batch_size`` 0 keeps ``batch_size`` fixed (returns None).
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if max_batch_size == 0:
        return None
    if max_batch_size < batch_size:
        raise InputError(
            f"--max-batch-size {max_batch_size} is below --batch-size {batch_size} "
            "(0 keeps the batch size fixed)"
        )
    return max_batch_size
