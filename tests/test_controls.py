"""The layer-matched random control: per culture and layer exactly the reference's counts,
uniform within the layer, independent of which other cultures are present."""

from __future__ import annotations

import numpy as np
import pytest

from culture_neurons.selection.controls import layer_matched_random_ranks
from culture_neurons.selection.selectors import is_culture_independent


def ranks_of(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A ranking whose candidates are ``mask``'s neurons, in a random order across layers."""
    rng = np.random.default_rng(seed)
    ranks = np.full(mask.shape, -1, dtype=np.int32)
    for c in range(mask.shape[0]):
        flat = np.flatnonzero(mask[c])
        ranks[c].reshape(-1)[rng.permutation(flat)] = np.arange(flat.size)
    return ranks


def top(ranks: np.ndarray, k: int) -> np.ndarray:
    return (ranks >= 0) & (ranks < k)


@pytest.fixture
def reference() -> np.ndarray:
    rng = np.random.default_rng(0)
    mask = np.zeros((3, 4, 50), dtype=bool)
    mask[0, 3, :20] = True  # culture 0: everything in the last layer
    mask[1] = rng.random((4, 50)) < 0.1
    return ranks_of(mask)  # culture 2: ranks nothing


def test_counts_per_culture_and_layer_equal_the_reference_at_every_k(reference):
    matched = layer_matched_random_ranks(reference, ["a", "b", "c"], seed=1)
    previous = np.zeros(matched.shape, dtype=bool)
    for k in range(0, 30):
        mine, theirs = top(matched, k), top(reference, k)
        np.testing.assert_array_equal(mine.sum(axis=2), theirs.sum(axis=2))
        assert not (previous & ~mine).any()  # nested: a smaller k's neurons stay selected
        previous = mine
    assert (matched[2] == -1).all()
    # Random within the layer: not just the reference again.
    assert (top(matched, 20)[0, 3] != top(reference, 20)[0, 3]).any()


def test_a_cultures_mask_depends_on_its_name_and_seed_only(reference):
    both = layer_matched_random_ranks(reference, ["a", "b", "c"], seed=1)
    alone = layer_matched_random_ranks(reference[[1]], ["b"], seed=1)
    np.testing.assert_array_equal(both[1], alone[0])
    other_seed = layer_matched_random_ranks(reference, ["a", "b", "c"], seed=2)
    assert (other_seed[1] != both[1]).any()


def test_uniform_within_the_layer():
    mask = np.zeros((1, 1, 10), dtype=bool)
    mask[0, 0, :3] = True
    reference = ranks_of(mask)
    hits = sum(
        top(layer_matched_random_ranks(reference, ["a"], seed=s), 3)[0, 0] for s in range(3000)
    )
    # Each neuron is picked with probability 3/10: 900 of 3000, sd about 25.
    assert np.abs(hits - 900).max() < 6 * 25


def test_bad_input_is_refused(reference):
    with pytest.raises(ValueError, match="culture names"):
        layer_matched_random_ranks(reference, ["a"], seed=0)
    with pytest.raises(ValueError, match="seed"):
        layer_matched_random_ranks(reference, ["a", "b", "c"], seed=-1)
    with pytest.raises(ValueError, match="integer"):
        layer_matched_random_ranks(reference >= 0, ["a", "b", "c"])


def test_the_control_is_culture_specific():
    assert not is_culture_independent("rnd_matched")
    assert is_culture_independent("rnd")


def test_select_stage_draws_the_control_from_the_reference_masks(tmp_path):
    import json

    from culture_neurons.benchmark.synthetic import write_synthetic_store
    from culture_neurons.errors import InputError
    from culture_neurons.selection.masks import read_masks, read_ranks, write_masks
    from culture_neurons.stages.select import select_stage

    store = tmp_path / "store.zarr"
    write_synthetic_store(store, n_cultures=3, items_per_culture=10, n_layers=2, n_neurons=30)
    select_stage(store, "cas", 0.1, tmp_path / "cas.zarr", tmp_path / "cas.json")
    control = {"method": "rnd_matched", "reference": "cas", "seed": 0}
    report = select_stage(store, "rnd_matched-s0", 0.1, tmp_path / "m.zarr", tmp_path / "m.json",
                          params=control, reference_masks=tmp_path / "cas.zarr")  # fmt: skip
    reference, cultures, _ = read_masks(tmp_path / "cas.zarr")
    matched, matched_cultures, attrs = read_masks(tmp_path / "m.zarr")
    assert matched_cultures == cultures
    np.testing.assert_array_equal(matched.sum(axis=2), reference.sum(axis=2))
    assert attrs["reference_selector"] == "cas" and attrs["ratio"] == 0.1
    assert json.loads((tmp_path / "m.json").read_text())["selected_per_culture"] == dict(
        zip(cultures, reference.sum(axis=(1, 2)).tolist(), strict=True)
    )
    assert report["empty_reference_cultures"] == []

    # A reference with one empty culture: flagged, and that culture's control is empty too.
    reference_ranks = read_ranks(tmp_path / "cas.zarr")[0]
    reference[1], reference_ranks[1] = False, -1
    write_masks(tmp_path / "holey.zarr", reference, cultures, attrs, ranks=reference_ranks)
    report = select_stage(store, "m2", 0.1, tmp_path / "m2.zarr", tmp_path / "m2.json",
                          params=control, reference_masks=tmp_path / "holey.zarr")  # fmt: skip
    assert report["empty_reference_cultures"] == [cultures[1]]
    assert not read_masks(tmp_path / "m2.zarr")[0][1].any()

    select_stage(store, "rnd-s0", 0.1, tmp_path / "rnd.zarr", tmp_path / "rnd.json",
                 params={"method": "rnd", "seed": 0})  # fmt: skip
    with pytest.raises(InputError, match="culture-independent"):
        select_stage(store, "m3", 0.1, tmp_path / "m3.zarr", tmp_path / "m3.json",
                     params=control, reference_masks=tmp_path / "rnd.zarr")  # fmt: skip
    write_masks(tmp_path / "old.zarr", reference, cultures, attrs)  # before ratio sweeps
    with pytest.raises(InputError, match="no ranking.*rerun its select job"):
        select_stage(store, "m6", 0.1, tmp_path / "m6.zarr", tmp_path / "m6.json",
                     params=control, reference_masks=tmp_path / "old.zarr")  # fmt: skip
    with pytest.raises(InputError, match="needs --reference-masks"):
        select_stage(store, "m4", 0.1, tmp_path / "m4.zarr", tmp_path / "m4.json", params=control)
    other = tmp_path / "other.zarr"
    write_synthetic_store(other, n_cultures=3, items_per_culture=10, n_layers=2, n_neurons=30,
                          seed=9)  # fmt: skip
    with pytest.raises(InputError, match="another activation store"):
        select_stage(other, "m5", 0.1, tmp_path / "m5.zarr", tmp_path / "m5.json",
                     params=control, reference_masks=tmp_path / "cas.zarr")  # fmt: skip


def test_select_stage_stores_a_ranking_that_serves_other_ratios(tmp_path):
    from culture_neurons.benchmark.synthetic import write_synthetic_store
    from culture_neurons.selection.masks import masks_at_ratio, read_masks, read_ranks
    from culture_neurons.selection.selectors import select
    from culture_neurons.stages.select import select_stage

    store = tmp_path / "store.zarr"
    write_synthetic_store(store, n_cultures=3, items_per_culture=10, n_layers=2, n_neurons=30)
    select_stage(store, "cas", 0.1, tmp_path / "cas.zarr", tmp_path / "cas.json",
                 only_correct=False)  # fmt: skip
    selected, cultures, attrs = read_masks(tmp_path / "cas.zarr")
    ranks = read_ranks(tmp_path / "cas.zarr")[0]
    assert attrs["ranked"] and attrs["nested"]
    assert attrs["candidates_per_culture"] == dict(
        zip(cultures, (ranks >= 0).sum(axis=(1, 2)).tolist(), strict=True)
    )
    np.testing.assert_array_equal(masks_at_ratio(ranks, 0.1), selected)
    # Another ratio's mask from the stored ranking is what selecting at that ratio gives.
    from culture_neurons.record.aggregate import aggregate
    from culture_neurons.record.store import open_store

    agg = aggregate(open_store(store), only_correct=False)
    at_30 = select("cas", agg.fire_count, agg.pos_sum, agg.tokens, ratio=0.3)
    np.testing.assert_array_equal(masks_at_ratio(ranks, 0.3), at_30)

    control = {"method": "rnd_matched", "reference": "cas", "seed": 0}
    select_stage(store, "rnd_matched-s0", 0.1, tmp_path / "m.zarr", tmp_path / "m.json",
                 params=control, reference_masks=tmp_path / "cas.zarr")  # fmt: skip
    matched = read_ranks(tmp_path / "m.zarr")[0]
    for ratio in (0.05, 0.1, 0.3, 1.0):
        np.testing.assert_array_equal(
            masks_at_ratio(matched, ratio).sum(axis=2), masks_at_ratio(ranks, ratio).sum(axis=2)
        )
