"""The neuron atlas: content checked against the store, not only that files exist."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from culture_neurons.atlas.choose import Choice, chosen_neurons, top_of_ranking
from culture_neurons.atlas.profile import culture_profile, top_items
from culture_neurons.atlas.scan import scan_store
from culture_neurons.benchmark.synthetic import write_synthetic_store
from culture_neurons.errors import InputError
from culture_neurons.record.store import open_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    # Uneven chunks (7 items) and varied token counts: a chunk boundary inside a culture.
    path = tmp_path_factory.mktemp("atlas") / "activations.zarr"
    write_synthetic_store(
        path, n_cultures=3, items_per_culture=11, n_layers=3, n_neurons=40, chunk_items=7,
        own_share=0.1, signal=0.5, tokens=30, seed=3,
    )  # fmt: skip
    return path


def test_top_of_ranking_takes_each_cultures_best_ranks():
    ranks = np.full((2, 2, 5), -1, np.int32)
    ranks[0, 1, 3], ranks[0, 0, 2], ranks[0, 0, 4] = 0, 1, 2
    ranks[1, 0, 0] = 0  # one candidate only
    chosen = top_of_ranking("cas", ranks, ["A", "B"], 2)
    assert chosen == [
        Choice("cas", "A", 0, 1, 3), Choice("cas", "A", 1, 0, 2), Choice("cas", "B", 0, 0, 0)
    ]  # fmt: skip
    assert chosen_neurons(chosen) == [(0, 0), (0, 2), (1, 3)]
    with pytest.raises(InputError, match="does not match"):
        top_of_ranking("cas", ranks, ["A"], 2)


def test_scan_reads_the_stores_values_of_the_chosen_neurons(store_path):
    neurons = [(0, 5), (2, 39), (1, 0)]
    activity = scan_store(open_store(store_path), neurons, progress=False)
    ds = xr.open_zarr(store_path, consolidated=False)
    for column, (layer, neuron) in enumerate(neurons):
        cell = dict(layer=layer, neuron=neuron)
        np.testing.assert_array_equal(activity.pos_sum[:, column], ds.pos_sum.sel(**cell).values)
        np.testing.assert_array_equal(
            activity.fire_count[:, column], ds.fire_count.sel(**cell).values
        )
    assert list(activity.item_id) == list(ds.item_id.values)
    with pytest.raises(InputError, match="outside the store"):
        scan_store(open_store(store_path), [(3, 0)], progress=False)


def test_top_items_are_the_items_with_the_largest_activation(store_path):
    ds = xr.open_zarr(store_path, consolidated=False)
    neurons = [(l, n) for l in range(3) for n in range(0, 40, 7)]  # noqa: E741
    activity = scan_store(open_store(store_path), neurons, progress=False)
    top, bottom = top_items(activity.activation, 5), top_items(activity.activation, 5, lowest=True)
    tokens = ds.tokens.values.astype(np.float64)
    for column, (layer, neuron) in enumerate(neurons):
        per_token = ds.pos_sum.sel(layer=layer, neuron=neuron).values / tokens
        listed = per_token[top[:, column]]
        # Best first, and nothing outside the list is larger than its smallest.
        assert np.all(np.diff(listed) <= 0)
        rest = np.delete(per_token, top[:, column])
        assert listed.min() >= rest.max()
        lowest = per_token[bottom[:, column]]
        assert np.all(np.diff(lowest) >= 0)
        assert lowest.max() <= np.delete(per_token, bottom[:, column]).min()


def test_profile_equals_the_stores_per_culture_statistics(store_path):
    ds = xr.open_zarr(store_path, consolidated=False)
    neurons = [(0, 1), (1, 17), (2, 33)]
    activity = scan_store(open_store(store_path), neurons, progress=False)
    profile = culture_profile(activity, n_boot=300, seed=1)
    tokens = ds.tokens.astype(np.float64).groupby("culture").sum()
    assert profile.cultures == sorted(tokens.culture.values.tolist())
    for column, (layer, neuron) in enumerate(neurons):
        cell = ds.sel(layer=layer, neuron=neuron)
        pos = cell.pos_sum.astype(np.float64).groupby("culture").sum() / tokens
        fire = cell.fire_count.astype(np.float64).groupby("culture").sum() / tokens
        np.testing.assert_allclose(profile.activation[:, column], pos.sel(culture=profile.cultures))
        np.testing.assert_allclose(profile.firing[:, column], fire.sel(culture=profile.cultures))
    # The interval holds the estimate, and has width exactly where the culture's items differ.
    assert np.all(profile.activation_lo <= profile.activation + 1e-12)
    assert np.all(profile.activation_hi >= profile.activation - 1e-12)
    rates = activity.firing_rate
    varies = np.array([rates[activity.culture == c].std(axis=0) > 0 for c in profile.cultures])
    assert varies.any() and not varies.all()
    np.testing.assert_array_equal(profile.firing_hi - profile.firing_lo > 0, varies)
    assert profile.items.tolist() == [11, 11, 11]
