"""Per-source gap tests: Benjamini–Hochberg on hand-made p-values, the bootstrap test on answer
tables whose effects are built in, and Table 2's "sources with a significant gap" row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from culture_neurons.analysis.significance import (
    SIGNIFICANCE_COLUMNS,
    benjamini_hochberg,
    significant_sources,
    source_gap_tests,
)
from culture_neurons.analysis.tables import SIGNIFICANT_SOURCES, table2
from tests.test_metrics import PAPER_QWEN


def test_benjamini_hochberg_on_a_hand_made_table():
    # m = 5. Sorted p: .001 .008 .039 .041 .60 -> p*m/rank: .005 .02 .065 .05125 .60;
    # running minimum from the top: .005 .02 .05125 .05125 .60.
    p = np.array([0.041, 0.001, 0.60, 0.008, 0.039])
    expected = np.array([0.05125, 0.005, 0.60, 0.02, 0.05125])
    np.testing.assert_allclose(benjamini_hochberg(p), expected)


def test_benjamini_hochberg_skips_nan_caps_at_one_and_refuses_bad_values():
    q = benjamini_hochberg(np.array([np.nan, 0.9, 0.95]))
    assert np.isnan(q[0])
    np.testing.assert_allclose(q[1:], [0.95, 0.95])  # m = 2, not 3
    assert benjamini_hochberg(np.array([1.0, 1.0])).max() == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg(np.array([0.2, 1.5]))


def answers(culture: str, n: int, correct: list[int], choice: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"{culture}{i}" for i in range(n)],
            "culture": culture,
            "label": 0,
            "output": [f"option {c}" for c in choice],
            "choice": np.array(choice, dtype="int8"),
            "correct": np.array(correct, dtype="int8"),
        }
    )


CULTURES = ["A", "B", "C"]
N = 40


def baseline() -> pd.DataFrame:
    return pd.concat([answers(c, N, [1] * N, [0] * N) for c in CULTURES], ignore_index=True)


def masked_for(source: str, self_wrong: int, cross_wrong: int) -> pd.DataFrame:
    """The source's own items: ``self_wrong`` turn wrong; every other culture: ``cross_wrong``."""
    parts = []
    for c in CULTURES:
        wrong = self_wrong if c == source else cross_wrong
        correct = [0] * wrong + [1] * (N - wrong)
        parts.append(answers(c, N, correct, [1] * wrong + [0] * (N - wrong)))
    return pd.concat(parts, ignore_index=True)


def test_a_built_in_self_effect_is_significant_and_a_null_one_is_not():
    masked = {
        "A": masked_for("A", self_wrong=20, cross_wrong=1),  # strong own effect
        "B": masked_for("B", self_wrong=2, cross_wrong=2),  # none
        "C": masked_for("C", self_wrong=0, cross_wrong=3),  # opposite
    }
    tests = source_gap_tests(baseline(), masked, n_boot=2000, seed=0)
    assert list(tests.columns) == SIGNIFICANCE_COLUMNS
    delta = tests[tests["metric"] == "delta"].set_index("source")
    assert delta.loc["A", "gap"] == pytest.approx(-50.0 - (-2.5))
    assert delta.loc["A", "p_value"] == pytest.approx(1 / 2001)  # no resample reaches 0
    assert bool(delta.loc["A", "significant"])
    assert delta.loc["B", "gap"] == pytest.approx(0.0)
    assert not bool(delta.loc["B", "significant"])
    assert delta.loc["C", "p_value"] == pytest.approx(1.0)  # wrong direction
    np.testing.assert_allclose(delta["q_value"], benjamini_hochberg(delta["p_value"].to_numpy()))
    assert (delta["gap_lo"] <= delta["gap"]).all() and (delta["gap"] <= delta["gap_hi"]).all()
    flips = tests[tests["metric"] == "flip_rate"].set_index("source")
    assert bool(flips.loc["A", "significant"]) and not bool(flips.loc["C", "significant"])
    assert significant_sources(tests) == {"delta": (1, 3), "flip_rate": (1, 3)}


def test_the_p_value_tracks_the_overlap_of_the_resampled_gap_with_zero():
    # A small own effect (2 of 40 wrong vs 0 elsewhere): resamples often draw no wrong item.
    masked = {s: masked_for(s, self_wrong=2 if s == "A" else 0, cross_wrong=0) for s in CULTURES}
    tests = source_gap_tests(baseline(), masked, n_boot=4000, seed=3)
    row = tests[(tests["metric"] == "delta") & (tests["source"] == "A")].iloc[0]
    # P(no wrong item among 40 draws of 40 with 2 wrong) = (38/40)^40 = 0.1285.
    assert row["p_value"] == pytest.approx((38 / 40) ** 40, abs=0.02)


def test_culture_independent_masks_have_no_tests_and_no_bootstrap_gives_nan():
    base = baseline()
    assert source_gap_tests(base, {"ALL": base.copy()}, n_boot=10).empty
    masked = {s: masked_for(s, 5, 0) for s in CULTURES}
    tests = source_gap_tests(base, masked, n_boot=0)
    assert tests["p_value"].isna().all() and tests["gap"].notna().all()
    assert significant_sources(tests) == {"delta": (0, 0), "flip_rate": (0, 0)}


def test_table2_counts_significant_sources_per_column_and_averages_seeds():
    def tests(ks: list[bool]) -> pd.DataFrame:
        rows = []
        for metric in ("delta", "flip_rate"):
            for i, flag in enumerate(ks):
                rows.append({"source": f"c{i}", "metric": metric, "q_value": 0.01 if flag else 0.5,
                             "significant": flag})  # fmt: skip
        return pd.DataFrame(rows).astype({"significant": "boolean"})

    summaries = {("m", name): PAPER_QWEN[name] for name in ("cas", "mad", "rnd-s0")}
    summaries[("m", "rnd_matched-s0")] = PAPER_QWEN["mad"]
    summaries[("m", "rnd_matched-s1")] = PAPER_QWEN["mad"]
    significance = {
        ("m", "cas"): tests([True, True, False, True]),
        ("m", "mad"): tests([False] * 4),
        ("m", "rnd_matched-s0"): tests([True, False, False, False]),
        ("m", "rnd_matched-s1"): tests([False] * 4),
        ("m", "rnd-s0"): pd.DataFrame(columns=["source", "metric", "q_value", "significant"]),
    }
    table = table2(summaries, significance)
    assert list(table.columns) == ["RND (1 seed)", "RND-LM (2 seeds)", "MAD", "CAS"]
    row = table.loc[("m", "Acc. Δ", SIGNIFICANT_SOURCES)]
    assert row.tolist() == ["-", "0.5/4", "0/4", "3/4"]
    assert table.index.tolist().index(("m", "Acc. Δ", SIGNIFICANT_SOURCES)) == 3
    assert len(table) == 8
    assert any("Benjamini" in note for note in table.attrs["notes"])
