"""The activation store: chunked writes, resume after a kill, refusal to mix inputs."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from culture_neurons.store import StoreMismatchError, create_or_resume, open_store

ITEMS = [f"item{i}" for i in range(10)]
CULTURES = ["A", "B"] * 5
ATTRS = {"model": "tiny", "dataset_fingerprint": "abc", "token_scope": "all"}


def fake_chunk(store, chunk):
    rows = store.chunk_slice(chunk)
    n = rows.stop - rows.start
    rng = np.random.default_rng(chunk)
    return (
        rng.integers(0, 300, size=(n, 2, 8)),
        rng.random((n, 2, 8)).astype(np.float32),
        rng.integers(1, 300, size=n),
        rng.integers(0, 2, size=n),
    )


def make(path):
    return create_or_resume(
        path, item_ids=ITEMS, cultures=CULTURES, n_layers=2, n_neurons=8, chunk_items=4,
        attrs=ATTRS,
    )  # fmt: skip


def fill(store, chunks):
    for chunk in chunks:
        store.write_chunk(chunk, *fake_chunk(store, chunk))


def arrays(path):
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in group.array_keys()}, dict(group.attrs)


def test_resumed_store_equals_uninterrupted(tmp_path):
    whole = make(tmp_path / "whole.zarr")
    assert whole.n_chunks == 3 and whole.chunk_slice(2) == slice(8, 10)
    fill(whole, whole.pending_chunks())
    assert whole.complete

    killed = make(tmp_path / "killed.zarr")
    fill(killed, [0])
    # A kill between a chunk's data and its flag: the data is there, the flag is not.
    rows = killed.chunk_slice(1)
    killed.group["fire_count"][rows] = 7
    resumed = make(tmp_path / "killed.zarr")
    assert resumed.pending_chunks() == [1, 2]
    fill(resumed, resumed.pending_chunks())

    (a, attrs_a), (b, attrs_b) = arrays(tmp_path / "whole.zarr"), arrays(tmp_path / "killed.zarr")
    assert attrs_a == attrs_b
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert open_store(tmp_path / "whole.zarr").complete


def test_store_refuses_other_inputs_and_incomplete_reads(tmp_path):
    store = make(tmp_path / "s.zarr")
    fill(store, [0])
    with pytest.raises(StoreMismatchError, match="delete it"):
        create_or_resume(
            tmp_path / "s.zarr", item_ids=ITEMS, cultures=CULTURES, n_layers=2, n_neurons=8,
            chunk_items=4, attrs={**ATTRS, "dataset_fingerprint": "other"},
        )  # fmt: skip
    with pytest.raises(ValueError, match="incomplete"):
        open_store(tmp_path / "s.zarr")


def test_store_schema_is_xarray_friendly(tmp_path):
    store = make(tmp_path / "s.zarr")
    fill(store, store.pending_chunks())
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group["fire_count"].metadata.dimension_names == ("item", "layer", "neuron")
    assert group["fire_count"].dtype == np.uint16
    assert list(group["item_id"][:]) == ITEMS
    assert group.attrs["model"] == "tiny"


def test_counts_beyond_uint16_are_refused(tmp_path):
    store = make(tmp_path / "s.zarr")
    count, total, tokens, correct = fake_chunk(store, 0)
    count[0, 0, 0] = 70_000
    with pytest.raises(ValueError, match="exceeds"):
        store.write_chunk(0, count, total, tokens, correct)
