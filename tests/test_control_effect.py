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
    n_cultural, n_control = 400, 300  # two item sets of different sizes, both with changes
    cultural = {
        "accuracy_change": -100.0 * (rng.random(n_cultural) < 0.3),
        "flip_rate": 100.0 * (rng.random(n_cultural) < 0.35),
    }
    control = {
        "accuracy_change": np.where(rng.random(n_control) < 0.2, -100.0, 0.0)
        + 100.0 * (rng.random(n_control) < 0.05),
        "flip_rate": 100.0 * (rng.random(n_control) < 0.15),
    }
    rows = pd.DataFrame(effect_rows("attr_general", cultural, control, neurons=7, n_boot=4000))
    for metric in ("accuracy_change", "flip_rate"):
        table = rows[rows.metric == metric].set_index("task")
        c, k = cultural[metric], control[metric]
        assert table.loc["cultural", "value"] == pytest.approx(c.mean())
        assert table.loc["control", "value"] == pytest.approx(k.mean())
        difference = c.mean() - k.mean()
        assert abs(k.mean()) > 5  # the control moves: a sum would be far from the difference
        assert table.loc["cultural - control", "value"] == pytest.approx(difference)
        assert table.loc["cultural - control", "n_items"] == n_cultural + n_control
        # 95% percentile interval of the difference of two independent means against the
        # normal approximation: difference +- 1.96 sqrt(se_cultural^2 + se_control^2).
        se = np.hypot(c.std(ddof=1) / np.sqrt(len(c)), k.std(ddof=1) / np.sqrt(len(k)))
        low, high = table.loc["cultural - control", ["ci_low", "ci_high"]]
        assert low == pytest.approx(difference - 1.96 * se, abs=0.15 * 1.96 * se), metric
        assert high == pytest.approx(difference + 1.96 * se, abs=0.15 * 1.96 * se), metric
    assert set(rows["neurons"]) == {7}
    text = render_markdown(rows, {"cultural": 90.0, "control": 80.0})
    assert "| attr_general | 7 | accuracy_change |" in text and "control 80.0%" in text


def test_a_constant_control_shifts_the_cultural_interval():
    rng = np.random.default_rng(2)
    cultural = {
        "accuracy_change": -100.0 * (rng.random(200) < 0.4),
        "flip_rate": 100.0 * (rng.random(200) < 0.4),
    }
    control = {"accuracy_change": np.full(50, -100.0), "flip_rate": np.full(50, 100.0)}
    rows = pd.DataFrame(effect_rows("rnd", cultural, control, neurons=3, n_boot=500, seed=4))
    for metric, constant in (("accuracy_change", -100.0), ("flip_rate", 100.0)):
        table = rows[rows.metric == metric].set_index("task")
        # A constant control: its interval collapses on it, and the difference's is the
        # cultural interval minus the constant (the same cultural resamples).
        assert table.loc["control", "ci_low"] == table.loc["control", "ci_high"] == constant
        for bound in ("value", "ci_low", "ci_high"):
            expected = table.loc["cultural", bound] - constant
            assert table.loc["cultural - control", bound] == pytest.approx(expected), bound


def test_no_items_is_an_error():
    empty = {"accuracy_change": np.zeros(0), "flip_rate": np.zeros(0)}
    full = {"accuracy_change": np.zeros(3), "flip_rate": np.zeros(3)}
    with pytest.raises(InputError, match="no control evaluation items"):
        effect_rows("x", full, empty, neurons=1)
