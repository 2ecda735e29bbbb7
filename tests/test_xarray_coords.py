"""``xarray.open_zarr`` labels the activation store and the mask stores: per-item ``item_id`` and
``culture`` coordinates, ``layer``/``neuron`` index coordinates, culture names as the masks'
``culture`` index."""

from __future__ import annotations

import numpy as np
import pytest

from culture_neurons.record.store import create_or_resume
from culture_neurons.selection.masks import write_masks

xr = pytest.importorskip("xarray")

ITEMS = ["q0", "q1", "q2", "q3", "q4"]
CULTURES = ["A", "B", "A", "B", "B"]
N_LAYERS, N_NEURONS = 2, 3
# A count that names its own position, so a wrong label picks a visibly wrong value.
COUNTS = (
    100 * np.arange(len(ITEMS))[:, None, None]
    + 10 * np.arange(N_LAYERS)[None, :, None]
    + np.arange(N_NEURONS)[None, None, :]
)


def write_store(path):
    store = create_or_resume(
        path, item_ids=ITEMS, cultures=CULTURES, n_layers=N_LAYERS, n_neurons=N_NEURONS,
        chunk_items=2, attrs={"model": "tiny"},
    )  # fmt: skip
    for chunk in store.pending_chunks():
        rows = store.chunk_slice(chunk)
        n = rows.stop - rows.start
        count = COUNTS[rows]
        store.write_chunk(chunk, count, count / 2, np.full(n, 9), np.ones(n), ["a"] * n, np.ones(n))
    return path


def test_activation_store_opens_with_item_layer_neuron_labels(tmp_path):
    ds = xr.open_zarr(write_store(tmp_path / "s.zarr"), consolidated=False)
    assert set(ds.data_vars) == {
        "fire_count", "pos_sum", "tokens", "correct", "choice", "answer", "chunk_done",
        "act_sum", "chunk_digest",
    }  # fmt: skip
    assert ds.act_sum.dims == ("chunk", "layer", "neuron")
    assert set(ds.coords) == {"item_id", "culture", "layer", "neuron"}
    assert set(ds.indexes) == {"layer", "neuron"}
    assert ds.layer.values.tolist() == [0, 1] and ds.neuron.values.tolist() == [0, 1, 2]
    assert ds.item_id.values.tolist() == ITEMS and ds.culture.values.tolist() == CULTURES
    assert {"item_id", "culture"} <= set(ds.fire_count.coords) and "culture" in ds.tokens.coords
    assert ds.fire_count.sel(layer=1, neuron=2).values.tolist() == [12, 112, 212, 312, 412]
    by_id = ds.swap_dims(item="item_id")
    assert int(by_id.fire_count.sel(item_id="q3", layer=0, neuron=1)) == 301
    per_culture = ds.fire_count.groupby("culture").sum()
    np.testing.assert_array_equal(per_culture.sel(culture="B"), COUNTS[[1, 3, 4]].sum(0))


def test_mask_store_opens_with_culture_names_as_index(tmp_path):
    selected = np.zeros((3, N_LAYERS, N_NEURONS), dtype=bool)
    selected[1, 1, 2] = selected[2, 0, 0] = True
    write_masks(tmp_path / "m.zarr", selected, ["X", "Y", "ALL"], {"selector": "lap"})
    ds = xr.open_zarr(tmp_path / "m.zarr", consolidated=False)
    assert list(ds.data_vars) == ["selected"]
    assert set(ds.indexes) == {"culture", "layer", "neuron"}
    assert ds.indexes["culture"].tolist() == ["X", "Y", "ALL"]
    assert ds.layer.values.tolist() == [0, 1] and ds.neuron.values.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(ds.selected.sel(culture="Y"), selected[1])
    assert bool(ds.selected.sel(culture="ALL", layer=0, neuron=0))
    assert ds.attrs["selector"] == "lap"
