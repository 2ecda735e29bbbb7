"""The attribution selectors (attr, attr_general) on hand-made aggregates; their select stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from culture_neurons.errors import InputError
from culture_neurons.record.attribution_store import create_or_resume
from culture_neurons.selection.attribution import (
    attribution_ranks,
    check_params,
    culture_scores,
    rank_attr,
    rank_attr_general,
    top_share,
    zscores,
)
from culture_neurons.selection.masks import ALL_CULTURES, read_masks
from culture_neurons.selection.selectors import has_ranking, is_culture_independent, select
from culture_neurons.stages.select import select_stage

# 3 cultures x 1 layer x 4 neurons.
CULTURAL = np.array(
    [
        [[5.0, 4.0, 1.0, 0.0]],
        [[1.0, 4.0, 2.0, 0.0]],
        [[1.0, 4.0, 0.0, 3.0]],
    ]
)
CONTROL = np.array([[0.0, 3.5, 0.0, 0.0]])


def selected(ranks: np.ndarray, k: int) -> list[list[int]]:
    return [sorted(np.flatnonzero((row >= 0) & (row < k)).tolist()) for row in ranks[:, 0]]


def test_control_is_subtracted_from_every_culture():
    np.testing.assert_array_equal(culture_scores(CULTURAL, CONTROL)[:, 0, 1], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(culture_scores(CULTURAL), CULTURAL)
    with pytest.raises(ValueError, match="do not match"):
        culture_scores(CULTURAL, CONTROL[:, :2])


def test_zscores_across_cultures():
    z = zscores(CULTURAL)
    # Neuron 0: scores 5, 1, 1 -> mean 7/3, population sd sqrt(32/9).
    assert z[0, 0, 0] == pytest.approx((5 - 7 / 3) / np.sqrt(32 / 9))
    assert z[1, 0, 0] == pytest.approx((1 - 7 / 3) / np.sqrt(32 / 9))
    np.testing.assert_array_equal(z[:, 0, 1], [0, 0, 0])  # equal everywhere: 0, not NaN


def test_attr_takes_the_top_k_then_drops_neurons_shared_by_all_cultures():
    ranks = rank_attr(culture_scores(CULTURAL, CONTROL), z_threshold=0.5)
    # Culture 0 ranks 0 > 1 (0.5 after control) > 2 > 3: neuron 1 has z = 0, so at k = 2
    # culture 0 keeps only neuron 0 (filtered after the top k, as CULNIG).
    assert selected(ranks, 2) == [[0], [2], [3]]
    assert selected(ranks, 4) == [[0], [2], [3]]
    assert ranks[1, 0].tolist() == [-1, -1, 0, -1]  # places with gaps; -1 = filtered
    assert ranks[2, 0].tolist() == [-1, -1, -1, 0]
    for k in range(4):  # nested across budgets
        pairs = zip(selected(ranks, k), selected(ranks, k + 1), strict=True)
        assert all(set(a) <= set(b) for a, b in pairs)


def test_a_lower_z_threshold_keeps_more():
    scores = culture_scores(CULTURAL, CONTROL)
    strict = (rank_attr(scores, z_threshold=1.0) >= 0).sum()
    loose = (rank_attr(scores, z_threshold=-10.0) >= 0).sum()
    assert loose == 12 > strict


def test_attr_general_ranks_the_sum_over_cultures_after_the_control():
    # Sums: 7, 12, 3, 3; after the control (3.5 x 3 cultures on neuron 1): 7, 1.5, 3, 3.
    assert selected(rank_attr_general(culture_scores(CULTURAL)), 1) == [[1]]
    assert selected(rank_attr_general(culture_scores(CULTURAL, CONTROL)), 1) == [[0]]
    ranks = rank_attr_general(
        culture_scores(CULTURAL, CONTROL), excluded=np.array([[1, 0, 0, 0]], bool)
    )
    assert selected(ranks, 2) == [[2]]  # neuron 0 excluded; top 2 is {0, 2}


def test_top_share_and_the_exclusion_set():
    scores = np.arange(20, dtype=float).reshape(1, 2, 10)
    assert top_share(scores, 0.1).sum() == 2
    assert top_share(scores, 0.1)[0, 1, 8:].all()
    exclusion = np.zeros((3, 1, 4))
    exclusion[0, 0, 0] = 9.0  # culture 0's reading neuron
    ranks = attribution_ranks(
        "attr", CULTURAL, control=CONTROL, exclusion=exclusion, exclusion_ratio=0.25
    )
    assert selected(ranks, 4) == [[], [2], [3]]
    none_excluded = attribution_ranks("attr", CULTURAL, control=CONTROL, exclusion_ratio=0.25)
    assert selected(none_excluded, 4) == [[0], [2], [3]]


def test_parameters_are_checked_and_defaults_are_seed_004s():
    assert check_params("attr", {}) == {"z_threshold": 0.5, "exclusion_ratio": 0.01}
    with pytest.raises(ValueError, match="unknown parameter"):
        check_params("attr_general", {"z_threshold": 1})
    with pytest.raises(ValueError, match="exclusion_ratio"):
        check_params("attr", {"exclusion_ratio": 1.5})
    with pytest.raises(ValueError, match="scores the attribution store"):
        select("attr", np.ones((2, 1, 4)), np.ones((2, 1, 4)), np.ones(2), ratio=0.5)
    assert is_culture_independent("attr_general") and not is_culture_independent("attr")
    assert has_ranking("attr") and has_ranking("attr_general")


def _store(tmp_path, with_control: bool):
    cultural = np.concatenate([CULTURAL, CULTURAL])  # two items per culture, equal
    rows = [("cultural", c) for c in "ABCABC"] + ([("control", "A")] if with_control else [])
    scores = np.concatenate([cultural, CONTROL[None]]) if with_control else cultural
    store = create_or_resume(
        tmp_path / "a.partial.zarr", item_ids=[f"i{k}" for k in range(len(rows))],
        cultures=[c for _, c in rows], tasks=[t for t, _ in rows], n_layers=1, n_neurons=4,
        chunk_items=4, attrs={"model": "hand", "dataset_fingerprint": "fp"},
    )  # fmt: skip
    for chunk in range(store.n_chunks):
        span = store.chunk_slice(chunk)
        store.write_chunk(chunk, scores[span], np.ones(span.stop - span.start))
    final = tmp_path / "a.zarr"
    store.path.rename(final)
    return final


@pytest.mark.parametrize("with_control", [True, False])
def test_select_stage_writes_masks_and_says_what_applied(tmp_path, with_control):
    store = _store(tmp_path, with_control)
    report = select_stage(
        store, "attr", 0.5, tmp_path / "m.zarr", tmp_path / "m.json", params={"method": "attr"}
    )
    masks, cultures, attrs = read_masks(tmp_path / "m.zarr")
    assert cultures == ["A", "B", "C"]
    assert [sorted(np.flatnonzero(m[0]).tolist()) for m in masks] == [[0], [2], [3]]
    applied = report["control_subtraction"]
    assert applied == ("applied" if with_control else "skipped: no control task")
    assert report["exclusion"] == "skipped: no exclusion task"
    assert json.loads((tmp_path / "m.json").read_text())["budget"] == 2
    general = select_stage(store, "attr_general", 0.25, tmp_path / "g.zarr", tmp_path / "g.json")
    masks, cultures, _ = read_masks(tmp_path / "g.zarr")
    assert cultures == [ALL_CULTURES]
    assert np.flatnonzero(masks[0, 0]).tolist() == ([0] if with_control else [1])
    assert general["selected_per_culture"] == {ALL_CULTURES: 1}


# The exclusion task's per-culture means (1 layer x 4 neurons): each culture's top neuron on it
# (A: 3, B: 2, C: 0) differs from its top on the cultural task (A: 0, B: 1, C: 1), and the top of
# the sum over cultures (0) differs from culture A's alone (3).
EXCLUSION_MEANS = np.array([[[1.0, 0, 0, 2]], [[1.0, 0, 3, 0]], [[2.0, 0, 0, 0]]])
EXCLUSION_ITEMS = [  # (culture, scores): 1, 3 and 2 items whose means are the above
    ("A", [1.0, 0, 0, 2]),
    ("B", [3.0, 0, 9, 0]),
    ("C", [4.0, 0, -1, 0]),
    ("B", [0.0, 0, 0, 0]),
    ("D", [0.0, 50, 0, 0]),  # a culture with no cultural items: not part of any exclusion set
    ("C", [0.0, 0, 1, 0]),
    ("B", [0.0, 0, 0, 0]),
]


def _store_with_exclusion(tmp_path, drop: str = ""):
    """Cultural, control and exclusion items in one store; ``drop``: cultures whose exclusion
    items are left out."""
    excluded = [(c, v) for c, v in EXCLUSION_ITEMS if c not in drop]
    rows = [("cultural", c) for c in "ABCABC"] + [("control", "B")]
    rows += [("exclusion", c) for c, _ in excluded]
    scores = np.concatenate(
        [CULTURAL, CULTURAL, CONTROL[None], np.array([[v] for _, v in excluded])]
    )
    store = create_or_resume(
        tmp_path / "e.partial.zarr", item_ids=[f"i{k}" for k in range(len(rows))],
        cultures=[c for _, c in rows], tasks=[t for t, _ in rows], n_layers=1, n_neurons=4,
        chunk_items=3, attrs={"model": "hand", "dataset_fingerprint": "fp"},
    )  # fmt: skip
    for chunk in range(store.n_chunks):
        span = store.chunk_slice(chunk)
        store.write_chunk(chunk, scores[span], np.ones(span.stop - span.start))
    final = tmp_path / "e.zarr"
    store.path.rename(final)
    return final


def test_the_exclusion_task_end_to_end_from_the_store_to_the_masks(tmp_path):
    store = _store_with_exclusion(tmp_path)
    params = {"method": "attr", "exclusion_ratio": 0.25}  # each culture's top 1 of 4 neurons
    report = select_stage(
        store, "attr-x", 0.5, tmp_path / "m.zarr", tmp_path / "m.json", params=params
    )
    assert report["exclusion"] == "applied" and report["control_subtraction"] == "applied"
    masks, cultures, _ = read_masks(tmp_path / "m.zarr")
    assert cultures == ["A", "B", "C"]
    # Without exclusion: [0], [2], [3] (test_select_stage_writes_masks_and_says_what_applied).
    # B's exclusion set {2} empties its mask; A's {3} and C's {0} hold none of theirs.
    assert [sorted(np.flatnonzero(m[0]).tolist()) for m in masks] == [[0], [], [3]]
    general = {"method": "attr_general", "exclusion_ratio": 0.25}
    select_stage(store, "g", 0.5, tmp_path / "g.zarr", tmp_path / "g.json", params=general)
    masks, cultures, _ = read_masks(tmp_path / "g.zarr")
    assert cultures == [ALL_CULTURES]
    # Sum over cultures of S: 7, 1.5, 3, 3 -> top 2 is {0, 2}; the general exclusion set is the
    # top of the exclusion means summed over ALL cultures (4, 0, 3, 2): neuron 0.
    assert np.flatnonzero(masks[0, 0]).tolist() == [2]


def test_the_general_exclusion_set_sums_every_culture():
    ranks = attribution_ranks(
        "attr_general", CULTURAL, control=CONTROL, exclusion=EXCLUSION_MEANS, exclusion_ratio=0.25
    )
    assert ranks[0, 0].tolist() == [-1, 3, 1, 2]
    ranks = attribution_ranks(
        "attr", CULTURAL, control=CONTROL, exclusion=EXCLUSION_MEANS, exclusion_ratio=0.25,
        z_threshold=-10.0,
    )  # fmt: skip
    # No z filter: the only -1 are each culture's own exclusion set (A: 3, B: 2, C: 0).
    assert np.argwhere(ranks[:, 0] == -1).tolist() == [[0, 3], [1, 2], [2, 0]]


def test_a_culture_without_exclusion_items_has_nothing_excluded():
    exclusion = EXCLUSION_MEANS.copy()
    exclusion[2] = np.nan  # culture C: no exclusion items (`aggregate_attribution`)
    assert not top_share(exclusion, 0.25)[2].any()
    ranks = attribution_ranks(
        "attr", CULTURAL, control=CONTROL, exclusion=exclusion, exclusion_ratio=0.25,
        z_threshold=-10.0,
    )  # fmt: skip
    unfiltered = attribution_ranks("attr", CULTURAL, control=CONTROL, z_threshold=-10.0)
    np.testing.assert_array_equal(ranks[2], unfiltered[2])
    assert ranks[0, 0, 3] == ranks[1, 0, 2] == -1  # A's and B's sets still apply
    # The general set sums A and B only (2, 0, 3, 2): neuron 2, not a NaN row's first neuron.
    general = attribution_ranks(
        "attr_general", CULTURAL, control=CONTROL, exclusion=exclusion, exclusion_ratio=0.25
    )
    assert general[0, 0].tolist() == [0, 3, -1, 2]
    only_c = np.full_like(exclusion, np.nan)
    none = attribution_ranks(
        "attr_general", CULTURAL, control=CONTROL, exclusion=only_c, exclusion_ratio=0.25
    )
    assert (none >= 0).all()


def test_the_report_names_cultures_without_exclusion_items(tmp_path):
    store = _store_with_exclusion(tmp_path, drop="C")
    params = {"method": "attr", "exclusion_ratio": 0.25}
    report = select_stage(store, "a", 0.5, tmp_path / "m.zarr", tmp_path / "m.json", params=params)
    assert report["exclusion"] == "applied; no exclusion items for C (nothing excluded there)"


def test_select_stage_refuses_an_activation_store_for_attr(tmp_path):
    with pytest.raises(InputError, match="needs an attribution store"):
        select_stage(tmp_path / "nothing.zarr", "attr", 0.1, tmp_path / "m", tmp_path / "r")
