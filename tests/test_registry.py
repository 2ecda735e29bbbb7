"""The selector registry: what each built-in method declares, the one parameter check, and a
selector added with one function and one entry, selected through the select stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from culture_neurons.errors import InputError
from culture_neurons.record import store as activation_store
from culture_neurons.selection import registry
from culture_neurons.selection.masks import read_masks, read_ranks
from culture_neurons.selection.registry import (
    ACTIVATION_STORE,
    ATTRIBUTION_SCORES,
    ATTRIBUTION_STORE,
    FIRING,
    REFERENCE_MASKS,
    SelectorSpec,
    check_params,
    firing_selector,
)
from culture_neurons.selection.selectors import budget
from culture_neurons.stages.select import select_stage

CULTURES = ["ko", "mx", "sw"]
LAYERS, NEURONS = 2, 6


def test_the_built_in_methods_and_what_they_declare():
    table = {
        name: (s.inputs, s.store, s.culture_independent, s.reference, s.data_driven)
        for name in registry.methods()
        for s in [registry.spec(name)]
    }
    assert table == {
        "rnd": (FIRING, ACTIVATION_STORE, True, None, False),
        "lap": (FIRING, ACTIVATION_STORE, False, None, True),
        "lape": (FIRING, ACTIVATION_STORE, False, None, True),
        "mad": (FIRING, ACTIVATION_STORE, False, None, True),
        "cas": (FIRING, ACTIVATION_STORE, False, None, True),
        "conact": (FIRING, ACTIVATION_STORE, False, None, True),
        "attr": (ATTRIBUTION_SCORES, ATTRIBUTION_STORE, False, None, False),
        "attr_general": (ATTRIBUTION_SCORES, ATTRIBUTION_STORE, True, None, False),
        "rnd_matched": (REFERENCE_MASKS, ACTIVATION_STORE, False, "reference", False),
    }
    assert all(registry.has_ranking(name) for name in table)
    assert registry.is_control("rnd_matched") and not registry.is_control("nope")
    with pytest.raises(ValueError, match="unknown selector method 'nope'; valid: attr, "):
        registry.input_store("nope")


def test_defaults_come_from_one_place_and_every_method_checks_a_name_alike():
    assert check_params("lape", {}) == {"alpha": 95, "beta": 90, "rho": 1.0}
    assert check_params("cas", {"alpha": None}) == {"alpha": None}  # no gate
    assert check_params("attr", {"z_threshold": 1}) == {"z_threshold": 1.0, "exclusion_ratio": 0.01}
    assert check_params("rnd_matched", {"reference": "cas"}) == {"reference": "cas", "seed": 0}
    for method in ("lap", "mad", "cas", "lape"):
        with pytest.raises(ValueError, match=f"{method}: alpha must be a percentile"):
            check_params(method, {"alpha": 101})
    for method in ("rnd", "rnd_matched"):
        with pytest.raises(ValueError, match=f"{method}: seed must be a non-negative integer"):
            check_params(
                method, {"reference": "cas", "seed": -1} if "matched" in method else {"seed": 1.5}
            )
    with pytest.raises(ValueError, match="attr_general: exclusion_ratio must be in"):
        check_params("attr_general", {"exclusion_ratio": 1.0})
    with pytest.raises(ValueError, match="unknown parameter 'z_threshold'.*valid: exclusion_ratio"):
        check_params("attr_general", {"z_threshold": 1})
    with pytest.raises(ValueError, match=r"'rnd_matched' needs the parameter\(s\) \['reference'\]"):
        check_params("rnd_matched", {"seed": 3})


def test_a_spec_is_refused_when_it_cannot_work():
    with pytest.raises(ValueError, match="inputs must be one of"):
        SelectorSpec("x", "pixels", lambda P, M: P)
    with pytest.raises(ValueError, match="needs a ranking"):
        SelectorSpec("x", ATTRIBUTION_SCORES, None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(firing_selector("cas", lambda P, M: P))


# -- a toy selector through the select stage ------------------------------------------------------


def rank_loudest(P: np.ndarray, M: np.ndarray, *, floor: float = 0.0) -> np.ndarray:
    """Each culture's neurons by M descending (ties: flat index), those with M <= floor unranked."""
    flat = M.reshape(M.shape[0], -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty(flat.shape, dtype=np.int32)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1], dtype=np.int32)[None], axis=1)
    ranks[flat <= floor] = -1
    return ranks.reshape(M.shape)


@pytest.fixture
def toy_selector():
    registry.register(firing_selector("loudest", rank_loudest))
    yield "loudest"
    registry.unregister("loudest")


def _store(path):
    """An activation store of 3 cultures with 2-5 correctly answered items each (one culture's
    wrong answers must not count), and per-culture mean activations M the test can rank by hand."""
    rng = np.random.default_rng(4)
    per_culture = {"ko": 2, "mx": 5, "sw": 3}
    cultures = [c for c, n in per_culture.items() for _ in range(n)] + ["mx"]
    n = len(cultures)
    s = activation_store.create_or_resume(
        path,
        item_ids=[f"i{k}" for k in range(n)],
        cultures=cultures,
        n_layers=LAYERS,
        n_neurons=NEURONS,
        chunk_items=4,
        attrs={"model": "toy", "dataset_fingerprint": "f"},
    )
    pos = rng.random((n, LAYERS, NEURONS)).astype(np.float32) * 5
    tokens = rng.integers(10, 20, n)
    fire = np.minimum(rng.integers(0, 10, (n, LAYERS, NEURONS)), tokens[:, None, None])
    correct = np.ones(n, dtype=np.int8)
    correct[-1] = 0  # an mx item answered wrongly: excluded from the sums
    for chunk in s.pending_chunks():
        rows = s.chunk_slice(chunk)
        s.write_chunk(chunk, fire[rows], pos[rows], tokens[rows], correct[rows])
    used = correct == 1
    cultures_a = np.asarray(cultures)
    M = np.stack(
        [
            pos[used & (cultures_a == c)].sum(axis=0, dtype=np.float64)
            / tokens[used & (cultures_a == c)].sum()
            for c in CULTURES
        ]
    )
    return path, M


def test_a_registered_toy_selector_selects_through_the_select_stage(toy_selector, tmp_path):
    path, M = _store(tmp_path / "activations.zarr")
    ratio = 0.25  # budget(0.25, 2, 6) = 3 neurons per culture
    summary = select_stage(
        path,
        "loudest-f1",
        ratio,
        tmp_path / "masks.zarr",
        tmp_path / "report.json",
        params={"method": toy_selector, "floor": 0.15},
    )
    selected, cultures, attrs = read_masks(tmp_path / "masks.zarr")
    ranks, _, _ = read_ranks(tmp_path / "masks.zarr")
    assert cultures == CULTURES and attrs["method"] == "loudest" and attrs["ranked"]
    k = budget(ratio, LAYERS, NEURONS)
    assert k == 3
    for c, culture in enumerate(CULTURES):
        loud = [int(i) for i in np.argsort(-M[c].ravel(), kind="stable") if M[c].ravel()[i] > 0.15]
        assert sorted(np.flatnonzero(selected[c].ravel()).tolist()) == sorted(loud[:k]), culture
        assert (ranks[c].ravel() >= 0).sum() == len(loud)
        assert k < len(loud) < LAYERS * NEURONS  # the floor and the budget both bite
    assert json.loads((tmp_path / "report.json").read_text())["params"] == {"floor": 0.15}
    assert summary["selected_per_culture"] == {c: 3 for c in CULTURES}
    # Its parameters are checked like any selector's: unknown names are refused.
    with pytest.raises(InputError, match="selector 'loudest-x'.*unknown parameter 'alpha'"):
        select_stage(
            path, "loudest-x", ratio, tmp_path / "m2.zarr", tmp_path / "r2.json",
            params={"method": "loudest", "alpha": 90},
        )  # fmt: skip


def test_a_removed_selector_is_unknown_again(tmp_path):
    registry.register(firing_selector("loudest", rank_loudest))
    registry.unregister("loudest")
    path, _ = _store(tmp_path / "activations.zarr")
    with pytest.raises(InputError, match="selector 'loudest': unknown selector method 'loudest'"):
        select_stage(path, "loudest", 0.25, tmp_path / "m.zarr", tmp_path / "r.json")
