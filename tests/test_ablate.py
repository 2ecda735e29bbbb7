"""Masked answering: several masks in one batch equal one mask at a time; aggregates and masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from culture_neurons.data.split import split_rows
from culture_neurons.inference.engine import answer_all, answer_masked
from culture_neurons.record.aggregate import aggregate
from culture_neurons.record.store import create_or_resume
from culture_neurons.selection.masks import keep_masks, read_masks, write_masks
from tests.cvqa_fixture import prepare_fixture

pytest_plugins = ["tests.tiny_models"]


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> pd.DataFrame:
    out = prepare_fixture(tmp_path_factory.mktemp("cvqa"))
    return split_rows(pd.read_parquet(out / "items.parquet"), "evaluation").head(5)


def test_mixed_mask_batches_equal_one_mask_at_a_time(load_tiny, evaluation, one_torch_thread):
    adapter = load_tiny("qwen2_5_vl")
    generator = torch.Generator().manual_seed(0)
    keep = (torch.rand(3, adapter.n_layers, adapter.n_neurons, generator=generator) > 0.5).float()
    mixed = answer_masked(adapter, evaluation, keep, batch_size=4, max_new_tokens=4)
    assert len(mixed) == 3
    for m in range(3):
        alone = answer_masked(adapter, evaluation, keep[m : m + 1], batch_size=2, max_new_tokens=4)
        pd.testing.assert_frame_equal(mixed[m], alone[0])
        assert mixed[m]["item_id"].tolist() == evaluation["item_id"].tolist()
    # An all-ones mask is the unmasked model.
    ones = torch.ones(1, adapter.n_layers, adapter.n_neurons)
    unmasked = answer_all(adapter, evaluation, batch_size=2, max_new_tokens=4, desc="plain")
    pd.testing.assert_frame_equal(
        answer_masked(adapter, evaluation, ones, batch_size=3, max_new_tokens=4)[0], unmasked
    )
    # Masks differ in effect: some mask changes some output (half the neurons are off).
    assert any(not mixed[m]["output"].equals(unmasked["output"]) for m in range(3))


def test_aggregate_sums_only_correct_items_per_culture(tmp_path):
    rng = np.random.default_rng(0)
    cultures = ["B", "A", "B", "A", "A", "B"]
    store = create_or_resume(
        tmp_path / "s.zarr", item_ids=[f"i{k}" for k in range(6)], cultures=cultures,
        n_layers=2, n_neurons=3, chunk_items=4, attrs={},
    )  # fmt: skip
    fire = rng.integers(0, 9, size=(6, 2, 3))
    total = rng.random((6, 2, 3)).astype(np.float32)
    tokens = rng.integers(9, 20, size=6)
    correct = np.array([1, 1, 0, 1, -1, 1])
    for chunk in range(store.n_chunks):
        rows = store.chunk_slice(chunk)
        store.write_chunk(chunk, fire[rows], total[rows], tokens[rows], correct[rows])
    agg = aggregate(store)
    assert agg.cultures == ["A", "B"]
    a, b = [1, 3], [0, 5]  # correct items of A and B
    np.testing.assert_array_equal(agg.fire_count[0], fire[a].sum(0))
    np.testing.assert_array_equal(agg.fire_count[1], fire[b].sum(0))
    np.testing.assert_allclose(agg.pos_sum[1], total[b].sum(0), rtol=1e-6)
    np.testing.assert_array_equal(agg.tokens, [tokens[a].sum(), tokens[b].sum()])
    np.testing.assert_array_equal(agg.items_used, [2, 2])
    np.testing.assert_array_equal(agg.items_total, [3, 3])
    assert agg.thin_cultures == ["A", "B"]  # fewer than 20 correct items each
    everything = aggregate(store, only_correct=False)
    np.testing.assert_array_equal(everything.items_used, [3, 3])


def test_masks_round_trip_and_keep_masks(tmp_path):
    selected = np.zeros((2, 2, 4), dtype=bool)
    selected[0, 1, 2] = selected[1, 0, 0] = True
    write_masks(tmp_path / "m.zarr", selected, ["X", "Y"], {"selector": "lap", "ratio": 0.1})
    read, cultures, attrs = read_masks(tmp_path / "m.zarr")
    np.testing.assert_array_equal(read, selected)
    assert cultures == ["X", "Y"] and attrs["selector"] == "lap"
    keep = keep_masks(read, ["Y"], cultures)
    assert keep.shape == (1, 2, 4) and keep[0, 0, 0] == 0 and keep.sum() == 7
    with pytest.raises(ValueError, match="no mask for source"):
        keep_masks(read, ["Z"], cultures)


def test_ablate_stage_serves_every_ratio_and_kind_from_one_ranking(
    tmp_path, tiny_checkpoint, load_tiny, one_torch_thread
):
    from culture_neurons.selection.masks import masks_at_ratio
    from culture_neurons.selection.selectors import budget, mask_from_ranks
    from culture_neurons.stages.ablate import ablate_stage

    out = prepare_fixture(tmp_path / "cvqa")
    items = pd.read_parquet(out / "items.parquet")
    cultures = sorted(items["culture"].unique())
    adapter = load_tiny("qwen2_5_vl")
    shape = (len(cultures), adapter.n_layers, adapter.n_neurons)
    rng = np.random.default_rng(0)
    ranks = np.stack([rng.permutation(shape[1] * shape[2]) for _ in cultures]).reshape(shape)
    ranks = ranks.astype(np.int32)
    headline = 0.1
    selected = mask_from_ranks(ranks, budget(headline, *shape[1:]))
    write_masks(tmp_path / "m.zarr", selected, cultures, {"ratio": headline}, ranks=ranks)
    spec = {"family": "qwen2_5_vl", "path": str(tiny_checkpoint("qwen2_5_vl")), "dtype": "float32"}
    evaluation = split_rows(items, "evaluation")
    for intervention in ({"kind": "zero"}, {"kind": "scale", "factor": 3.0}):
        paths = ablate_stage(
            out / "items.parquet", spec, tmp_path / "m.zarr", tmp_path / intervention["kind"],
            ratios=[0.05, headline, 0.5], intervention=intervention, batch_size=4,
            max_new_tokens=3,
        )  # fmt: skip
        assert len(paths) == 3 * len(cultures)
        for ratio, folder in ((0.05, "r0.05/"), (headline, ""), (0.5, "r0.5/")):
            masks = masks_at_ratio(ranks, ratio)
            factor = 3.0 if intervention["kind"] == "scale" else 0.0
            bank = torch.from_numpy(np.where(masks, factor, 1.0).astype(np.float32))
            expected = answer_masked(adapter, evaluation, bank, batch_size=2, max_new_tokens=3)
            for source, alone in zip(cultures, expected, strict=True):
                table = pd.read_parquet(
                    tmp_path / intervention["kind"] / f"{folder}{source}.parquet"
                )
                assert (table["ratio"] == ratio).all() and (table["source"] == source).all()
                assert (table["intervention"] == ("zero" if factor == 0 else "scale-x3")).all()
                pd.testing.assert_frame_equal(
                    table.drop(columns=["source", "ratio", "intervention"]), alone
                )
    # The headline ratio's masks are the stored selection, and the sweep is nested.
    assert np.array_equal(masks_at_ratio(ranks, headline), selected)
    assert not (masks_at_ratio(ranks, 0.05) & ~masks_at_ratio(ranks, 0.5)).any()
