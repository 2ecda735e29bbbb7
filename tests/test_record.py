"""baseline_and_record on a tiny Qwen2.5-VL: resumable store, recording leaves answers alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from culture_neurons.data.prepare import DatasetConfig, prepare_dataset
from culture_neurons.data.split import split_rows
from culture_neurons.inference.engine import answer_all
from culture_neurons.record.recording import (
    baseline_table_from_store,
    partial_path,
    record_identification,
    store_attrs,
)
from culture_neurons.record.store import StoreMismatchError
from tests.cvqa_fixture import write_fixture, write_grouping

pytest_plugins = ["tests.tiny_models"]


@pytest.fixture(scope="module")
def identification(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("cvqa")
    source = write_fixture(root / "src", with_bad_rows=False)
    grouping = write_grouping(root / "groups.tsv")
    config = DatasetConfig(
        name="fixture", source="local", local_dir=str(source), grouping=str(grouping)
    )
    prepare_dataset(config, root / "out")
    return split_rows(pd.read_parquet(root / "out" / "items.parquet"), "identification")


def run(adapter, rows, path, **kwargs):
    return record_identification(
        adapter, rows, path, batch_size=2, chunk_batches=2, max_new_tokens=4,
        attrs=store_attrs(adapter, "fp", "tiny"), **kwargs,
    )  # fmt: skip


def arrays(path):
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in group.array_keys()}, dict(group.attrs)


def test_killed_and_resumed_run_equals_uninterrupted(
    load_tiny, identification, tmp_path, one_torch_thread
):
    adapter = load_tiny("qwen2_5_vl")
    rows = identification.head(11)  # 3 chunks of 4, the last one short
    whole, _ = run(adapter, rows, tmp_path / "whole.zarr")
    assert whole is not None and whole.complete

    stopped, _ = run(adapter, rows, tmp_path / "resumed.zarr", stop_after_chunks=1)
    assert stopped is None
    assert partial_path(tmp_path / "resumed.zarr").exists()
    assert not (tmp_path / "resumed.zarr").exists()
    resumed, _ = run(adapter, rows, tmp_path / "resumed.zarr")
    assert not partial_path(tmp_path / "resumed.zarr").exists()

    (a, attrs_a), (b, attrs_b) = arrays(tmp_path / "whole.zarr"), arrays(tmp_path / "resumed.zarr")
    assert attrs_a == attrs_b
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert a["fire_count"].shape == (11, adapter.n_layers, adapter.n_neurons)
    assert (a["tokens"] > 0).all()
    assert (a["fire_count"] <= a["tokens"][:, None, None]).all()


def test_recording_does_not_change_answers(load_tiny, identification, tmp_path, one_torch_thread):
    adapter = load_tiny("qwen2_5_vl")
    rows = identification.head(6)
    store, timings = run(adapter, rows, tmp_path / "s.zarr")
    recorded = baseline_table_from_store(store, rows)
    plain = answer_all(adapter, rows, batch_size=2, max_new_tokens=4, desc="plain")
    pd.testing.assert_frame_equal(recorded, plain)
    assert set(recorded["correct"]) <= {0, 1}
    assert timings["model_s"] > 0


def test_retry_with_half_the_batch_resumes_the_partial_store(
    load_tiny, identification, tmp_path, one_torch_thread
):
    # The workflow halves the batch on a retry and fixes the chunk size (get_chunk_items), so a
    # job that failed after some chunks resumes instead of being refused or starting over.
    adapter = load_tiny("qwen2_5_vl")
    rows = identification.head(11)
    path = tmp_path / "retried.zarr"
    stopped, _ = run(adapter, rows, path, stop_after_chunks=1, chunk_items=4)
    assert stopped is None
    with pytest.raises(StoreMismatchError, match="chunk_items"):
        record_identification(
            adapter, rows, path, batch_size=1, chunk_batches=2, max_new_tokens=4,
            attrs=store_attrs(adapter, "fp", "tiny"),
        )  # fmt: skip
    retried, _ = record_identification(
        adapter, rows, path, batch_size=1, chunk_batches=2, chunk_items=4, max_new_tokens=4,
        attrs=store_attrs(adapter, "fp", "tiny"),
    )  # fmt: skip
    assert retried is not None and retried.complete
    whole, _ = run(adapter, rows, tmp_path / "whole.zarr")
    (a, _), (b, _) = arrays(tmp_path / "whole.zarr"), arrays(path)
    assert a["tokens"].tolist() == b["tokens"].tolist()
    np.testing.assert_allclose(b["pos_sum"], a["pos_sum"], rtol=1e-4, atol=1e-4)
