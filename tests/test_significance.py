"""Per-source gap tests: Benjamini–Hochberg on hand-made p-values, the bootstrap test on answer
tables whose effects are built in, and Table 2's "sources with a significant gap" row."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from culture_neurons.analysis.metrics import ablation_matrix, bootstrap_weights
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


def varied_answers(seed: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Targets of different sizes, items interleaved, and masked runs whose changes are spread
    over random items (some wrong answers turn right), with a stronger effect on the source's
    own items: the gap's bootstrap has real spread on both sides. The masked tables come in
    their own row order (their index still names the baseline row)."""
    rng = np.random.default_rng(seed)
    sizes = {"pt": 31, "am": 47, "zh": 23, "ko": 38}
    cultures = rng.permutation(np.repeat(list(sizes), list(sizes.values())))
    n = len(cultures)
    label = rng.integers(0, 4, size=n)
    full_correct = rng.random(n) < 0.7
    full_choice = np.where(full_correct, label, (label + 1) % 4)
    base = pd.DataFrame(
        {"item_id": [f"q{i:03d}" for i in range(n)], "culture": cultures, "label": label,
         "output": [f"option {c}" for c in full_choice], "choice": full_choice.astype("int8"),
         "correct": full_correct.astype("int8")}
    )  # fmt: skip
    masked = {}
    for source in sizes:
        # A changed answer: a right one turns wrong, a wrong one turns right.
        flip = rng.random(n) < np.where(cultures == source, 0.35, 0.12)
        choice = np.where(flip, np.where(full_correct, (label + 2) % 4, label), full_choice)
        masked[source] = base.assign(
            choice=choice.astype("int8"),
            correct=(choice == label).astype("int8"),
            output=[f"option {c}" for c in choice],
        ).sample(frac=1.0, random_state=seed)  # answer tables need not keep the item order
    return base, masked


def test_gap_draws_use_each_targets_own_resamples_and_the_95_percent_interval():
    """The reference, written out: each target's items resampled with that target's own stream
    (``bootstrap_weights`` seeded by seed and target name, as the matrix's cells), the gap per
    resample, its 2.5th/97.5th percentiles, and the one-sided p-value counted in exact
    arithmetic (resampled gaps of exactly 0 occur with 0/1 data and count as the wrong side)."""
    base, masked = varied_answers(seed=1)
    n_boot, seed = 1500, 11
    tests = source_gap_tests(base, masked, n_boot=n_boot, seed=seed)
    targets = sorted(masked)
    cultures = base["culture"].to_numpy()
    aligned = {s: masked[s].sort_index() for s in targets}
    correct = base["correct"].to_numpy().astype(int)
    diff = {s: aligned[s]["correct"].to_numpy().astype(int) - correct for s in targets}
    flipped = {s: (aligned[s]["choice"] != base["choice"]).to_numpy().astype(int) for s in targets}
    counts = {
        t: bootstrap_weights(int((cultures == t).sum()), n_boot, seed, t).astype(np.int64)
        for t in targets
    }
    ties = 0
    for metric, per_item, sign in (("delta", diff, -1), ("flip_rate", flipped, 1)):
        rows = tests[tests["metric"] == metric].set_index("source")
        for source in targets:
            # Integer resampled sums per target: exact, whatever the order of summation.
            sums = {t: counts[t] @ per_item[source][cultures == t] for t in targets}
            sizes = {t: int((cultures == t).sum()) for t in targets}
            others = [t for t in targets if t != source]
            exact = [
                Fraction(int(sums[source][b]), sizes[source])
                - sum(Fraction(int(sums[t][b]), sizes[t]) for t in others) / len(others)
                for b in range(n_boot)
            ]
            draws = 100.0 * np.array([float(g) for g in exact])
            lo, hi = np.percentile(draws, [2.5, 97.5])
            assert rows.loc[source, "gap_lo"] == pytest.approx(lo, abs=1e-9), (metric, source)
            assert rows.loc[source, "gap_hi"] == pytest.approx(hi, abs=1e-9), (metric, source)
            wrong_side = sum(g * sign <= 0 for g in exact)
            assert rows.loc[source, "p_value"] == (1 + wrong_side) / (1 + n_boot), (metric, source)
            ties += sum(g == 0 for g in exact)
            # The input makes the 95% and 97.5% bounds differ, so the level is really checked.
            assert np.percentile(draws, 98.75) > hi and np.percentile(draws, 1.25) < lo
    assert ties > 0  # the input has exact ties, so the tie rule is checked too


def test_a_gap_with_no_cross_effect_has_the_matrix_interval_of_its_own_cell():
    """With the source's mask changing nothing on the other targets, every resampled gap is the
    resampled self cell: its interval is the ablation matrix's (s, s) interval (same resamples,
    same seed per target, same 95% level)."""
    base, masked = varied_answers(seed=2)
    source = "zh"  # sorted last: not the stream of the first target
    elsewhere = base["culture"] != source
    for column in ("correct", "choice", "output"):
        masked[source].loc[elsewhere, column] = base.loc[elsewhere, column]
    tests = source_gap_tests(base, masked, n_boot=800, seed=5)
    matrix = ablation_matrix(base, masked, n_boot=800, seed=5).set_index(["source", "target"])
    cell = matrix.loc[(source, source)]
    rows = tests[tests["source"] == source].set_index("metric")
    assert rows.loc["delta", "gap"] == pytest.approx(cell["delta"])
    assert rows.loc["delta", "gap_lo"] == pytest.approx(cell["delta_lo"])
    assert rows.loc["delta", "gap_hi"] == pytest.approx(cell["delta_hi"])
    assert rows.loc["flip_rate", "gap_lo"] == pytest.approx(cell["flip_rate_lo"])
    assert rows.loc["flip_rate", "gap_hi"] == pytest.approx(cell["flip_rate_hi"])


def test_self_and_cross_items_are_resampled_independently():
    """Two targets of equal size whose items change identically under the source's mask: the
    point gap is 0, but the self and cross items are different items, so the resampled gap
    spreads around 0. Drawing both targets with one stream would make every draw exactly 0
    (an interval [0, 0] and p = 1)."""
    n = 40
    pattern = [1] * 10 + [0] * 30  # the first 10 items turn wrong
    base = pd.concat([answers(c, n, [1] * n, [0] * n) for c in ("A", "B")], ignore_index=True)
    masked = {
        s: pd.concat([answers(c, n, [1 - x for x in pattern], pattern) for c in ("A", "B")],
                     ignore_index=True)
        for s in ("A", "B")
    }  # fmt: skip
    tests = source_gap_tests(base, masked, n_boot=1000, seed=0)
    for row in tests.itertuples():
        assert row.gap == pytest.approx(0.0)
        assert row.gap_lo < -5 and row.gap_hi > 5, row
        assert 0.3 < row.p_value < 0.8, row
