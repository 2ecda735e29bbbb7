"""One out-of-memory strategy for recording and masked answering (`inference.scheduler`): a batch
that does not fit is halved, the smaller size holds for the rest of the run, the same units are
retried, and only a single unit that does not fit is raised. Both paths are driven by the same
simulated device (a batch of more than ``FITS`` rows "runs out of memory") and must split their
work identically and keep every answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from culture_neurons.inference import engine
from culture_neurons.inference.batch_memory import BatchSizer
from culture_neurons.inference.decoding import OutOfMemoryError
from culture_neurons.inference.scheduler import run_batches
from culture_neurons.record.recording import record_identification, store_attrs
from tests.fake_memory import FakeMemory

pytest_plugins = ["tests.tiny_models"]

FITS = 2  # rows a batch may have on the simulated device
GPU0 = torch.device("cuda", 0)


def _small_device(monkeypatch, fits: int = FITS) -> list[int]:
    """Every decoder batch goes through a device that holds ``fits`` rows; returns the sizes of
    the batches tried, in order."""
    real_decode = engine.greedy_decode
    sizes: list[int] = []

    def decode(adapter, prompts, **kwargs):
        sizes.append(len(prompts))
        if len(prompts) > fits:
            raise OutOfMemoryError("CUDA out of memory (simulated)")
        return real_decode(adapter, prompts, **kwargs)

    monkeypatch.setattr(engine, "greedy_decode", decode)
    return sizes


def _record(adapter, rows, path):
    store, _ = record_identification(
        adapter, rows, path, batch_size=4, chunk_batches=2, max_new_tokens=4,
        attrs=store_attrs(adapter, "fp", "tiny"),
    )  # fmt: skip
    return store


def _ablate(adapter, rows):
    keep = torch.ones(1, adapter.n_layers, adapter.n_neurons)
    return engine.answer_masked(adapter, rows, keep, batch_size=4, max_new_tokens=4,
                                drafts=False)  # fmt: skip


def test_record_and_ablate_halve_the_same_way_and_keep_every_answer(
    load_tiny, varied_evaluation, tmp_path, one_torch_thread, monkeypatch
):
    adapter = load_tiny("qwen2_5_vl")
    rows = varied_evaluation.head(6).reset_index(drop=True)
    plain_store = _record(adapter, rows, tmp_path / "plain.zarr")
    (plain_table,) = _ablate(adapter, rows)

    sizes = _small_device(monkeypatch)
    store = _record(adapter, rows, tmp_path / "oom.zarr")
    record_sizes = list(sizes)
    sizes.clear()
    (table,) = _ablate(adapter, rows)
    # 6 units at batch size 4: 4 rows do not fit, so 2 and 2; the halved size holds for the
    # next batch (record's next batch of 2 configured rows, ablate's last 2 pairs).
    assert record_sizes == sizes == [4, 2, 2, 2]

    pd.testing.assert_frame_equal(table, plain_table)
    assert store is not None and store.complete
    for name in ("answer", "choice", "correct", "tokens", "fire_count"):
        np.testing.assert_array_equal(
            store.group[name][:], plain_store.group[name][:], err_msg=name
        )
    # Split batches pad differently, which may move float sums in their last bits only.
    np.testing.assert_allclose(store.group["pos_sum"][:], plain_store.group["pos_sum"][:],
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_a_single_row_that_does_not_fit_is_raised_on_both_paths(
    load_tiny, varied_evaluation, tmp_path, monkeypatch
):
    adapter = load_tiny("qwen2_5_vl")
    sizes = _small_device(monkeypatch, fits=0)
    rows = varied_evaluation.head(2)
    with pytest.raises(OutOfMemoryError):
        _record(adapter, rows, tmp_path / "never.zarr")
    assert sizes == [2, 1]
    sizes.clear()
    with pytest.raises(OutOfMemoryError):
        _ablate(adapter, rows)
    assert sizes == [2, 1]


def test_run_batches_halves_keeps_the_order_and_lowers_a_growing_ceiling():
    memory = FakeMemory({GPU0: 10**12}, {GPU0: 1})  # the monitor sees room for any batch
    sizer = BatchSizer(2, ceiling=16, memory=memory)
    tried: list[int] = []

    def answer(batch):
        tried.append(len(batch))
        if len(batch) > 5:
            raise OutOfMemoryError("CUDA out of memory (simulated)")
        memory.batch = (len(batch), 10)
        return [unit * 10 for unit in batch]

    done = list(run_batches(list(range(30)), answer, sizer, width=lambda batch: 10))
    assert tried[:4] == [2, 16, 8, 4]  # measured, grown to the ceiling, halved until it fits
    assert max(tried[3:]) <= 4 and sizer.ceiling == 4
    assert [unit for batch, _ in done for unit in batch] == list(range(30))
    assert [r for _, result in done for r in result] == [unit * 10 for unit in range(30)]


def test_a_growing_sizer_needs_the_batches_widths():
    sizer = BatchSizer(2, ceiling=8, memory=FakeMemory({GPU0: 1}, {GPU0: 1}))
    with pytest.raises(ValueError, match="widths"):
        list(run_batches([1, 2, 3], lambda batch: batch, sizer))
