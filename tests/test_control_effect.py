"""The control-effect metrics: cultural vs control accuracy change of a culture-independent mask."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from culture_neurons.ablation.control_effect import effect_rows, item_changes, render_markdown
from culture_neurons.errors import InputError


def answers(correct, choice, ids=None) -> pd.DataFrame:
    n = len(correct)
    return pd.DataFrame(
        {
            "item_id": ids or [f"i{k}" for k in range(n)],
            "culture": ["A"] * n,
            "subset": ["A"] * n,
            "label": [0] * n,
            "output": [f"o{c}" for c in choice],
            "choice": np.asarray(choice, dtype=np.int8),
            "correct": np.asarray(correct, dtype=np.int8),
        }
    )


def test_item_changes_align_items_and_count_flips():
    baseline = answers([1, 1, 0, 0], [0, 0, 1, 2])
    masked = answers([0, 1, 1, 0], [1, 0, 0, 3], ids=["i0", "i1", "i2", "i3"]).iloc[::-1]
    changes = item_changes(baseline, masked, "test")
    np.testing.assert_array_equal(changes["accuracy_change"], [-100, 0, 100, 0])
    np.testing.assert_array_equal(changes["flip_rate"], [100, 0, 100, 100])
    with pytest.raises(InputError, match="labels are hidden"):
        item_changes(baseline.assign(correct=-1), masked, "test")


def test_the_difference_and_its_interval():
    rng = np.random.default_rng(1)
    n = 400
    cultural = {
        "accuracy_change": -100.0 * (rng.random(n) < 0.3),
        "flip_rate": 100.0 * (rng.random(n) < 0.3),
    }
    control = {"accuracy_change": np.zeros(n), "flip_rate": np.zeros(n)}
    rows = pd.DataFrame(effect_rows("attr_general", cultural, control, neurons=7, n_boot=4000))
    acc = rows[rows.metric == "accuracy_change"].set_index("task")
    mean = cultural["accuracy_change"].mean()
    assert acc.loc["cultural", "value"] == pytest.approx(mean)
    assert acc.loc["cultural - control", "value"] == pytest.approx(mean)
    # A constant control: its interval collapses, and the difference's is the cultural one.
    assert acc.loc["control", "ci_low"] == acc.loc["control", "ci_high"] == 0
    # 95% percentile interval against the normal approximation mean +- 1.96 se.
    se = cultural["accuracy_change"].std(ddof=1) / np.sqrt(n)
    low, high = acc.loc["cultural - control", ["ci_low", "ci_high"]]
    assert low == pytest.approx(mean - 1.96 * se, abs=0.15 * 1.96 * se)
    assert high == pytest.approx(mean + 1.96 * se, abs=0.15 * 1.96 * se)
    assert set(rows["neurons"]) == {7}
    text = render_markdown(rows, {"cultural": 90.0, "control": 80.0})
    assert "| attr_general | 7 | accuracy_change |" in text and "control 80.0%" in text


def test_no_items_is_an_error():
    empty = {"accuracy_change": np.zeros(0), "flip_rate": np.zeros(0)}
    full = {"accuracy_change": np.zeros(3), "flip_rate": np.zeros(3)}
    with pytest.raises(InputError, match="no control evaluation items"):
        effect_rows("x", full, empty, neurons=1)
