"""Batch sizes fitted to free memory: the sizing rule on made-up numbers (the engine's use of it
is tested in test_fast_path.py)."""

from __future__ import annotations

import pytest
import torch

from culture_neurons.inference.batch_memory import BatchSizer, model_memory
from tests.fake_memory import FakeMemory

GPU0, GPU1 = torch.device("cuda", 0), torch.device("cuda", 1)


def test_the_configured_size_holds_until_a_batch_was_measured() -> None:
    memory = FakeMemory({GPU0: 10**9}, {GPU0: 1000})
    sizer = BatchSizer(8, ceiling=64, memory=memory)
    assert sizer.rows_for(100) == 8
    memory.batch = (8, 100)
    sizer.measured(8, 100)
    assert sizer.bytes_per_row_token == {GPU0: 1000.0}


def test_rows_fit_the_free_memory_of_the_tightest_device_up_to_the_ceiling() -> None:
    memory = FakeMemory({GPU0: 10_000_000, GPU1: 4_000_000}, {GPU0: 100, GPU1: 100})
    sizer = BatchSizer(2, ceiling=500, memory=memory, headroom=0.5)
    memory.batch = (2, 50)
    sizer.measured(2, 50)
    # GPU1: 0.5 * 4e6 / (100 bytes * 100 tokens) = 200 rows; GPU0 would hold 500.
    assert sizer.rows_for(100) == 200
    assert sizer.rows_for(400) == 50  # longer prompts, fewer rows
    assert sizer.rows_for(1) == 500  # the ceiling
    memory.free[GPU1] = 10
    assert sizer.rows_for(100) == 1  # never zero rows


def test_the_largest_use_seen_is_kept() -> None:
    memory = FakeMemory({GPU0: 10**9}, {GPU0: 300})
    sizer = BatchSizer(4, ceiling=64, memory=memory)
    memory.batch = (4, 10)
    sizer.measured(4, 10)
    memory.per_row_token[GPU0] = 100  # a later batch that happened to need less
    memory.batch = (4, 10)
    sizer.measured(4, 10)
    assert sizer.bytes_per_row_token[GPU0] == 300


def test_without_a_ceiling_or_a_monitor_the_size_is_fixed() -> None:
    fixed = BatchSizer(8, memory=FakeMemory({GPU0: 10**12}, {GPU0: 1}))
    fixed.measured(8, 10)
    assert fixed.rows_for(10) == 8 and not fixed.bytes_per_row_token
    assert BatchSizer(8, ceiling=64).rows_for(10) == 8  # no monitor: a CPU run


def test_out_of_memory_halves_the_size_and_lowers_the_ceiling() -> None:
    memory = FakeMemory({GPU0: 10**12}, {GPU0: 1})
    sizer = BatchSizer(8, ceiling=256, memory=memory)
    memory.batch = (8, 10)
    sizer.measured(8, 10)
    assert sizer.rows_for(10) == 256
    assert sizer.out_of_memory(256) == 8
    assert sizer.ceiling == 128 and sizer.rows_for(10) == 128
    with pytest.raises(ValueError, match="one row"):
        sizer.out_of_memory(1)


@pytest.mark.parametrize(("start", "ceiling"), [(0, None), (8, 4)])
def test_bad_sizes_are_refused(start: int, ceiling: int | None) -> None:
    with pytest.raises(ValueError, match="batch size"):
        BatchSizer(start, ceiling=ceiling)


def test_a_cpu_model_has_no_monitor_so_its_batches_stay_fixed() -> None:
    assert model_memory(torch.nn.Linear(4, 4)) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_memory_sees_a_batch_peak_above_what_was_allocated_before() -> None:
    model = torch.nn.Linear(4, 4).cuda()
    monitor = model_memory(model)
    assert monitor is not None and monitor.devices == [torch.device("cuda", 0)]
    monitor.start()
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
    del block
    (device,) = monitor.devices
    assert monitor.used()[device] >= 64 * 2**20
    assert 0 < monitor.available()[device] <= torch.cuda.get_device_properties(0).total_memory
