"""The select stage's default correctness filter (the paper's Step 1), run as the workflow runs it.

configs/paper.yaml sets ``only_correct: true``, so rule `select` passes no ``--all-items``: the
statistics come from the correctly answered items only. The store here is built so that a
culture's wrong items fire on other neurons than its correct ones; masks selected from all items
then differ from the filtered ones, and the test can tell which items the stage used.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from culture_neurons.cli import main
from culture_neurons.record.store import create_or_resume
from culture_neurons.selection import selectors
from culture_neurons.selection.masks import read_masks

CULTURES = ["AAA", "BBB", "CCC"]
ITEMS_PER_CULTURE = 8
CORRECT_PER_CULTURE = {"AAA": 5, "BBB": 3, "CCC": 4}
N_LAYERS, N_NEURONS = 2, 40
TOKENS = 50
RATIO = 0.1  # 8 of the 80 neurons per culture


def planted_store(path):
    """Items grouped by culture; correct items fire on 30% of their tokens in their culture's
    "correct" block of 8 neurons, wrong items on every token in a disjoint "wrong" block, so the
    wrong block wins once the wrong items count; the background fires on 5%."""
    rng = np.random.default_rng(0)
    cells = N_LAYERS * N_NEURONS
    cultures, correct = [], []
    for culture in CULTURES:
        cultures += [culture] * ITEMS_PER_CULTURE
        n_right = CORRECT_PER_CULTURE[culture]
        correct += [1] * n_right + [0] * (ITEMS_PER_CULTURE - n_right)
    correct = np.array(correct, dtype=np.int8)
    n_items = len(cultures)
    tokens = rng.integers(TOKENS // 2, TOKENS + 1, size=n_items)
    fire = rng.binomial(tokens[:, None], 0.05, size=(n_items, cells))
    for item, (culture, right) in enumerate(zip(cultures, correct, strict=True)):
        c = CULTURES.index(culture)
        # Correct items: cells 8c..8c+7; wrong items: cells 40+8c..40+8c+7 (another layer).
        block = slice(8 * c, 8 * c + 8) if right else slice(40 + 8 * c, 40 + 8 * c + 8)
        fire[item, block] = int(0.3 * tokens[item]) if right else tokens[item]
    fire = fire.reshape(n_items, N_LAYERS, N_NEURONS)
    pos_sum = (fire * rng.uniform(0.5, 1.5, size=fire.shape)).astype(np.float32)

    store = create_or_resume(
        path,
        item_ids=[f"item{i:03d}" for i in range(n_items)],
        cultures=cultures,
        n_layers=N_LAYERS,
        n_neurons=N_NEURONS,
        chunk_items=5,  # chunks straddle cultures and correct/wrong runs
        attrs={"model": "planted", "dataset_fingerprint": "planted-0"},
    )
    for chunk in store.pending_chunks():
        rows = store.chunk_slice(chunk)
        store.write_chunk(chunk, fire[rows], pos_sum[rows], tokens[rows], correct[rows])
    assert store.complete
    return np.array(cultures), correct, fire, pos_sum, tokens


def selected_from(keep, cultures, fire, pos_sum, tokens):
    """selectors.select on per-culture sums over the ``keep`` items, summed here by hand."""
    sums = [
        (
            fire[keep & (cultures == c)].sum(axis=0, dtype=np.float64),
            pos_sum[keep & (cultures == c)].sum(axis=0, dtype=np.float64),
            float(tokens[keep & (cultures == c)].sum()),
        )
        for c in CULTURES
    ]
    fire_c, pos_c, tokens_c = (np.array(x) for x in zip(*sums, strict=True))
    return selectors.select("cas", fire_c, pos_c, tokens_c, ratio=RATIO)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "activations.zarr"
    return path, planted_store(path)


def run_select(store_path, out_dir, *extra):
    code = main(
        [
            "select", "--store", str(store_path), "--selector", "cas", "--params", "{}",
            "--ratio", str(RATIO), "--out", str(out_dir / "cas.zarr"),
            "--report", str(out_dir / "cas.json"), *extra,
        ]
    )  # fmt: skip
    assert code == 0
    masks, names, attrs = read_masks(out_dir / "cas.zarr")
    return masks, names, attrs, json.loads((out_dir / "cas.json").read_text())


def test_select_uses_only_the_correctly_answered_items_by_default(store, tmp_path):
    path, (cultures, correct, fire, pos_sum, tokens) = store
    masks, names, attrs, report = run_select(path, tmp_path)

    expected = selected_from(correct == 1, cultures, fire, pos_sum, tokens)
    all_items = selected_from(np.ones(len(correct), dtype=bool), cultures, fire, pos_sum, tokens)
    assert names == CULTURES
    assert masks.shape == (len(CULTURES), N_LAYERS, N_NEURONS)
    np.testing.assert_array_equal(masks, expected)
    # Not vacuous: without the filter every culture's mask is another one.
    for c, culture in enumerate(CULTURES):
        assert not np.array_equal(expected[c], all_items[c]), culture
    # The planted blocks: correct items' neurons sit in layer 0, 8 per culture.
    for c in range(len(CULTURES)):
        assert masks[c, 0, 8 * c : 8 * c + 8].all() and masks[c].sum() == 8

    assert attrs["correct_filter"] is True and report["correct_filter"] is True
    assert report["items_used"] == CORRECT_PER_CULTURE
    assert report["items_total"] == dict.fromkeys(CULTURES, ITEMS_PER_CULTURE)
    assert report["selected_per_culture"] == dict.fromkeys(CULTURES, 8)


def test_all_items_flag_turns_the_filter_off(store, tmp_path):
    # The counterpart the end-to-end test covers: --all-items (only_correct: false) uses every
    # item, so the filtered masks above are the filter's doing, not the store's.
    path, (cultures, correct, fire, pos_sum, tokens) = store
    masks, _, attrs, report = run_select(path, tmp_path, "--all-items")
    everything = np.ones(len(correct), dtype=bool)
    np.testing.assert_array_equal(masks, selected_from(everything, cultures, fire, pos_sum, tokens))
    assert attrs["correct_filter"] is False
    assert report["items_used"] == dict.fromkeys(CULTURES, ITEMS_PER_CULTURE)
