"""A simulated device for batch sizing: its use grows with rows x tokens of the last batch."""

from __future__ import annotations

import torch


class FakeMemory:
    """A device that uses ``per_row_token`` bytes per row x token and has ``free`` bytes."""

    def __init__(self, free: dict[torch.device, int], per_row_token: dict[torch.device, int]):
        self.free = free
        self.per_row_token = per_row_token
        self.batch: tuple[int, int] = (0, 0)  # rows, tokens of the batch that ran last
        self.starts = 0

    def start(self) -> None:
        self.starts += 1

    def used(self) -> dict[torch.device, int]:
        rows, tokens = self.batch
        return {d: b * rows * tokens for d, b in self.per_row_token.items()}

    def available(self) -> dict[torch.device, int]:
        return dict(self.free)
