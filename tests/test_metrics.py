"""Ablation metrics and Table 2 on hand-made answer tables whose values are worked out by hand."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from culture_neurons.analysis.metrics import (
    AVERAGE,
    MATRIX_COLUMNS,
    SUMMARY_COLUMNS,
    ablation_matrix,
    baseline_accuracy,
    flips,
    read_ablations,
    self_cross_summary,
    write_matrix,
    write_summary,
)
from culture_neurons.analysis.tables import (
    NOTE_SIGNIFICANT,
    format_table2,
    selector_column,
    table2,
    table2_values,
    write_table2,
)
from culture_neurons.errors import InputError


def answers(rows: list[tuple[str, str, int, str, int, int]]) -> pd.DataFrame:
    """Answer table from (item_id, culture, label, output, choice, correct) tuples."""
    frame = pd.DataFrame(
        rows, columns=["item_id", "culture", "label", "output", "choice", "correct"]
    )
    frame.insert(2, "subset", frame["culture"] + "-pair")
    return frame.astype({"choice": "int8", "correct": "int8"})


# Culture A: 2 of 4 right; culture B: 4 of 4 right. a4 names no option.
BASELINE = answers(
    [
        ("a1", "A", 0, "apple", 0, 1),
        ("a2", "A", 0, "pear", 1, 0),
        ("a3", "A", 0, "apple", 0, 1),
        ("a4", "A", 0, "no idea", -1, 0),
        ("b1", "B", 0, "kiwi", 0, 1),
        ("b2", "B", 0, "kiwi", 0, 1),
        ("b3", "B", 0, "kiwi", 0, 1),
        ("b4", "B", 0, "kiwi", 0, 1),
    ]
)


def edited(changes: dict[str, tuple[str, int, int]]) -> pd.DataFrame:
    """The baseline with some items' (output, choice, correct) replaced."""
    table = BASELINE.copy()
    for item, (output, choice, correct) in changes.items():
        row = table.index[table["item_id"] == item][0]
        table.loc[row, "output"] = output
        table.loc[row, "choice"] = np.int8(choice)
        table.loc[row, "correct"] = np.int8(correct)
    return table


# Source A: a1 flips to a wrong option; a4 repeats itself up to case and spacing (no flip).
MASKED_A = edited({"a1": ("plum", 2, 0), "a4": ("No   IDEA", -1, 0)})
# Source B: a2 rewords the same option (no flip); a4 says something else (flip, both -1);
# b2 turns wrong; b3 names no option any more (flip, wrong).
MASKED_B = edited(
    {
        "a2": ("it is a pear", 1, 0),
        "a4": ("maybe", -1, 0),
        "b2": ("fig", 3, 0),
        "b3": ("??", -1, 0),
    }
)


def cell(matrix: pd.DataFrame, source: str, target: str) -> pd.Series:
    rows = matrix[(matrix["source"] == source) & (matrix["target"] == target)]
    assert len(rows) == 1
    return rows.iloc[0]


@pytest.fixture(scope="module")
def matrix() -> pd.DataFrame:
    # Insertion order B, A: the result must not depend on it.
    return ablation_matrix(BASELINE, {"B": MASKED_B, "A": MASKED_A}, n_boot=500, seed=1)


def test_matrix_values_by_hand(matrix):
    assert list(matrix.columns) == MATRIX_COLUMNS
    assert list(zip(matrix["source"], matrix["target"], strict=True)) == [
        ("A", "A"),
        ("A", "B"),
        ("B", "A"),
        ("B", "B"),
    ]
    expected = {
        # (source, target): acc_full, acc_masked, delta, flip_rate, no_choice_masked
        ("A", "A"): (50.0, 25.0, -25.0, 25.0, 25.0),
        ("A", "B"): (100.0, 100.0, 0.0, 0.0, 0.0),
        ("B", "A"): (50.0, 50.0, 0.0, 25.0, 25.0),
        ("B", "B"): (100.0, 50.0, -50.0, 50.0, 25.0),
    }
    for (source, target), values in expected.items():
        row = cell(matrix, source, target)
        assert row["n"] == 4
        got = tuple(row[c] for c in ("acc_full", "acc_masked", "delta", "flip_rate"))
        assert got + (row["no_choice_masked"],) == pytest.approx(values)


def test_flip_compares_options_then_normalised_text():
    flipped = flips(
        np.array([0, 1, -1, -1, 2, -1]),
        np.array([0, 2, -1, -1, -1, 3]),
        ["x", "x", "Holi  Festival", "a", "b", "c"],
        ["other words", "x", "holi festival", "b", "b", "c"],
    )
    # same option reworded: no flip; other option: flip; no option in both: compare
    # normalised text; an option on one side only: flip either way.
    assert flipped.tolist() == [False, True, False, True, True, True]


def test_ci_contains_point_and_is_deterministic(matrix):
    for column in ("delta", "flip_rate"):
        assert (matrix[f"{column}_lo"] <= matrix[column] + 1e-9).all()
        assert (matrix[column] <= matrix[f"{column}_hi"] + 1e-9).all()
    again = ablation_matrix(BASELINE, {"A": MASKED_A, "B": MASKED_B}, n_boot=500, seed=1)
    pd.testing.assert_frame_equal(matrix, again)
    # An unchanged cell has a zero-width interval: every resample sees no change.
    row = cell(matrix, "A", "B")
    assert (row["delta_lo"], row["delta_hi"], row["flip_rate_lo"], row["flip_rate_hi"]) == (
        0.0,
        0.0,
        0.0,
        0.0,
    )


def test_ci_depends_on_seed_not_on_other_sources(matrix):
    baseline, masked = repeated(10)
    bounds = ["delta_lo", "delta_hi", "flip_rate_lo", "flip_rate_hi"]
    seeds = [ablation_matrix(baseline, {"B": masked}, n_boot=300, seed=s)[bounds] for s in (1, 2)]
    assert not seeds[0].equals(seeds[1])
    alone = ablation_matrix(BASELINE, {"A": MASKED_A}, n_boot=500, seed=1)
    pd.testing.assert_frame_equal(
        alone.reset_index(drop=True), matrix[matrix["source"] == "A"].reset_index(drop=True)
    )


def repeated(copies: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Baseline and masked tables with the same per-item pattern, ``copies`` times over."""
    frames = []
    for table in (BASELINE, MASKED_B):
        parts = []
        for k in range(copies):
            part = table.copy()
            part["item_id"] = part["item_id"] + f"-{k}"
            parts.append(part)
        frames.append(pd.concat(parts, ignore_index=True))
    return frames[0], frames[1]


def test_ci_narrows_with_more_items():
    widths = []
    for copies in (5, 50):
        baseline, masked = repeated(copies)
        row = cell(ablation_matrix(baseline, {"B": masked}, n_boot=400), "B", "B")
        assert row["delta"] == pytest.approx(-50.0) and row["flip_rate"] == pytest.approx(50.0)
        widths.append(
            (row["delta_hi"] - row["delta_lo"], row["flip_rate_hi"] - row["flip_rate_lo"])
        )
    (delta_small, flip_small), (delta_large, flip_large) = widths
    assert delta_large < 0.5 * delta_small and flip_large < 0.5 * flip_small


def test_no_bootstrap_gives_nan_intervals():
    result = ablation_matrix(BASELINE, {"A": MASKED_A}, n_boot=0)
    assert result[["delta_lo", "delta_hi", "flip_rate_lo", "flip_rate_hi"]].isna().all().all()
    assert result["delta"].notna().all()


def hidden(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(label=-1, correct=np.int8(-1))


@pytest.mark.parametrize("mode", ["labels=False", "label -1"])
def test_label_free_mode_keeps_flip_rates(matrix, mode):
    if mode == "labels=False":
        result = ablation_matrix(BASELINE, {"A": MASKED_A, "B": MASKED_B}, labels=False, seed=1)
    else:
        masked = {"A": hidden(MASKED_A), "B": hidden(MASKED_B)}
        result = ablation_matrix(hidden(BASELINE), masked, seed=1)
    accuracy = ["acc_full", "acc_masked", "delta", "delta_lo", "delta_hi"]
    assert result[accuracy].isna().all().all()
    flip_columns = ["flip_rate", "flip_rate_lo", "flip_rate_hi"]
    assert result[flip_columns].notna().all().all()
    assert result["flip_rate"].tolist() == matrix["flip_rate"].tolist()


def test_labels_with_unscored_answers_raise():
    unscored = MASKED_A.assign(correct=np.int8(-1))
    with pytest.raises(InputError, match="correct"):
        ablation_matrix(BASELINE, {"A": unscored})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t[t["item_id"] != "a3"], "1 baseline item"),
        (lambda t: pd.concat([t, t.iloc[[0]].assign(item_id="zz")]), "1 extra item"),
        (lambda t: t.assign(item_id=t["item_id"].replace("a3", "zz")), "'zz'"),
        (lambda t: pd.concat([t, t.iloc[[0]]]), "duplicated"),
        (lambda t: t.assign(culture=t["culture"].replace("A", "C")), "another culture"),
        (lambda t: t.drop(columns="choice"), "missing column"),
    ],
)
def test_mismatched_items_raise(change, message):
    with pytest.raises(InputError, match=message):
        ablation_matrix(BASELINE, {"A": MASKED_A, "B": change(MASKED_B)})


def test_masked_rows_are_joined_by_item_id_not_position(matrix):
    shuffled = MASKED_B.sample(frac=1.0, random_state=3)
    again = ablation_matrix(BASELINE, {"A": MASKED_A, "B": shuffled}, n_boot=500, seed=1)
    pd.testing.assert_frame_equal(matrix, again)


def test_parquet_round_trip(matrix, tmp_path):
    folder = tmp_path / "ablations" / "cas"
    folder.mkdir(parents=True)
    for source, table in (("A", MASKED_A), ("B", MASKED_B)):
        table.to_parquet(folder / f"{source}.parquet", index=False)
    masked = read_ablations(sorted(folder.glob("*.parquet")))
    assert sorted(masked) == ["A", "B"]
    result = ablation_matrix(BASELINE, masked, n_boot=500, seed=1)
    pd.testing.assert_frame_equal(result, matrix)
    path = write_matrix(result, tmp_path / "matrices" / "cas.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), matrix)
    summary = self_cross_summary(matrix)
    path = write_summary(summary, tmp_path / "summary" / "cas.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), summary)


def test_self_cross_summary_by_hand(matrix):
    summary = self_cross_summary(matrix, n_boot=500, seed=0)
    assert list(summary.columns) == SUMMARY_COLUMNS
    table = summary.set_index(["source", "metric"])
    expected = {
        ("A", "delta"): (-25.0, 0.0, -25.0),
        ("B", "delta"): (-50.0, 0.0, -50.0),
        (AVERAGE, "delta"): (-37.5, 0.0, -37.5),
        ("A", "flip_rate"): (25.0, 0.0, 25.0),
        ("B", "flip_rate"): (50.0, 25.0, 25.0),
        (AVERAGE, "flip_rate"): (37.5, 12.5, 25.0),
    }
    for key, values in expected.items():
        assert tuple(table.loc[key, ["self", "cross", "gap"]]) == pytest.approx(values)
    # Two sources, gaps -25 and -50: every source resample averages inside [-50, -25].
    delta = table.loc[(AVERAGE, "delta")]
    assert -50.0 <= delta["gap_lo"] <= -37.5 <= delta["gap_hi"] <= -25.0
    assert bool(delta["gap_ci_excludes_zero"]) is True
    assert table.loc[(AVERAGE, "flip_rate"), "n_sources"] == 2
    assert pd.isna(table.loc[("A", "delta"), "gap_ci_excludes_zero"])


def culture_matrix(gaps: list[float]) -> pd.DataFrame:
    """A matrix whose per-source delta gaps are ``gaps`` (cross cells 0, self = gap)."""
    cultures = [f"C{k}" for k in range(len(gaps))]
    rows = [
        {"source": s, "target": t, "delta": gap if s == t else 0.0, "flip_rate": 10.0}
        for s, gap in zip(cultures, gaps, strict=True)
        for t in cultures
    ]
    return pd.DataFrame(rows)


def test_gap_interval_says_whether_it_excludes_zero():
    mixed = self_cross_summary(culture_matrix([10.0, -12.0, 6.0, -5.0, 1.0]), n_boot=2000)
    row = mixed.set_index(["source", "metric"]).loc[(AVERAGE, "delta")]
    assert row["gap_lo"] < 0 < row["gap_hi"] and bool(row["gap_ci_excludes_zero"]) is False
    clear = self_cross_summary(culture_matrix([-4.0, -6.0, -5.0, -3.0, -7.0]), n_boot=2000)
    row = clear.set_index(["source", "metric"]).loc[(AVERAGE, "delta")]
    assert row["gap_hi"] < 0 and bool(row["gap_ci_excludes_zero"]) is True
    # Same seed, same interval; flip rates equal everywhere: zero gap, zero-width interval.
    again = self_cross_summary(culture_matrix([10.0, -12.0, 6.0, -5.0, 1.0]), n_boot=2000)
    pd.testing.assert_frame_equal(mixed, again)
    flip = mixed.set_index(["source", "metric"]).loc[(AVERAGE, "flip_rate")]
    assert (flip["gap"], flip["gap_lo"], flip["gap_hi"]) == (0.0, 0.0, 0.0)


# The intervals' level: bounds recomputed in the test, not only ordered and containing the point.


def reference_item_interval(
    values: np.ndarray, n_boot: int, seed: int, target: str
) -> tuple[float, float]:
    """95% percentile bootstrap of ``100 * mean(values)`` over items, written out here: the
    target's resamples come from a generator seeded with (seed, crc32 of the target's name) and
    are drawn as multiplicities of a resample-with-replacement of the items."""
    n = len(values)
    rng = np.random.default_rng([seed, zlib.crc32(target.encode("utf-8"))])
    counts = rng.multinomial(n, [1.0 / n] * n, size=n_boot)
    means = [100.0 * np.repeat(values, c).mean() for c in counts]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def mixed_answers(seed: int = 7) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Two interleaved targets (A: 30 items, B: 25), two sources whose masks move choices and
    correctness item by item in both directions."""
    rng = np.random.default_rng(seed)
    cultures = ["A", "B"] * 25 + ["A"] * 5
    choice = rng.integers(0, 4, len(cultures))
    correct = rng.integers(0, 2, len(cultures))
    ids = [f"i{k:02d}" for k in range(len(cultures))]
    baseline = answers(
        [
            (i, c, 0, f"o{ch}", int(ch), int(ok))
            for i, c, ch, ok in zip(ids, cultures, choice, correct, strict=True)
        ]
    )
    masked = {}
    for source, p_move in (("A", 0.5), ("B", 0.25)):
        move = rng.random(len(cultures)) < p_move
        new_choice = np.where(move, (choice + 1) % 4, choice)
        new_correct = np.where(move, rng.integers(0, 2, len(cultures)), correct)
        masked[source] = answers(
            [
                (i, c, 0, f"o{ch}", int(ch), int(ok))
                for i, c, ch, ok in zip(ids, cultures, new_choice, new_correct, strict=True)
            ]
        )
    return baseline, masked


def test_cell_intervals_equal_an_independent_95_percent_bootstrap():
    baseline, masked = mixed_answers()
    n_boot, seed = 2000, 5
    # A shuffled masked table: the resamples follow the baseline's item order.
    shuffled = {s: t.sample(frac=1.0, random_state=1) for s, t in masked.items()}
    result = ablation_matrix(baseline, shuffled, n_boot=n_boot, seed=seed)
    for (source, target), row in result.set_index(["source", "target"]).iterrows():
        base = baseline[baseline["culture"] == target]
        other = masked[source].set_index("item_id").loc[base["item_id"]]
        diff = other["correct"].to_numpy(float) - base["correct"].to_numpy(float)
        flipped = (other["choice"].to_numpy() != base["choice"].to_numpy()).astype(float)
        assert diff.any() and flipped.any() and not flipped.all()  # non-degenerate intervals
        expected_delta = reference_item_interval(diff, n_boot, seed, target)
        expected_flip = reference_item_interval(flipped, n_boot, seed, target)
        assert (row["delta_lo"], row["delta_hi"]) == pytest.approx(expected_delta, abs=1e-9)
        assert (row["flip_rate_lo"], row["flip_rate_hi"]) == pytest.approx(expected_flip, abs=1e-9)
        assert row["delta_hi"] - row["delta_lo"] > 5.0  # a real width, not a degenerate case


def binomial_quantile(n: int, p: float, q: float) -> int:
    """Smallest k with P(X <= k) >= q for X ~ Binomial(n, p)."""
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.comb(n, k) * p**k * (1.0 - p) ** (n - k)
        if cdf >= q:
            return k
    return n


def test_flip_interval_matches_the_binomial_quantiles():
    # 100 right answers, 30 of which turn into another, wrong option: a resample's number of
    # flipped (and of newly wrong) items is Binomial(100, 0.3), so with many resamples the 95%
    # percentile bounds are its 2.5% and 97.5% quantiles, in percent: 21 and 39 (80%: 24, 36;
    # 90%: 23, 38; 99%: 19, 42). At 20000 resamples the empirical 2.5%/97.5% points lie more than
    # 3 standard errors inside the probability steps of those two values (P(X <= 20) = 0.0165,
    # P(X <= 21) = 0.0288, P(X <= 38) = 0.966, P(X <= 39) = 0.979).
    n, k = 100, 30
    rows = [(f"i{j:03d}", "A", 0, "x", 0, 1) for j in range(n)]
    masked_rows = [
        (f"i{j:03d}", "A", 0, "y", 1 if j < k else 0, 0 if j < k else 1) for j in range(n)
    ]
    row = ablation_matrix(answers(rows), {"A": answers(masked_rows)}, n_boot=20000).iloc[0]
    lo, hi = binomial_quantile(n, k / n, 0.025), binomial_quantile(n, k / n, 0.975)
    assert (lo, hi) == (21, 39)
    assert (row["flip_rate"], row["delta"]) == pytest.approx((30.0, -30.0))
    assert (row["flip_rate_lo"], row["flip_rate_hi"]) == pytest.approx((lo, hi), abs=1e-9)
    assert (row["delta_lo"], row["delta_hi"]) == pytest.approx((-hi, -lo), abs=1e-9)


def reference_gap_interval(gaps: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile bootstrap of the mean gap over sources (in sorted order), resampled with
    replacement by a generator seeded with ``seed`` alone."""
    draws = np.random.default_rng(seed).integers(0, len(gaps), size=(n_boot, len(gaps)))
    means = [np.mean([gaps[i] for i in draw]) for draw in draws]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def test_average_gap_interval_equals_an_independent_95_percent_bootstrap():
    delta_gaps = np.array([10.0, -12.0, 6.0, -5.0, 1.0, 8.0])
    flip_gaps = np.array([3.0, 20.0, -4.0, 9.0, 15.0, 1.0])
    cultures = [f"C{k}" for k in range(len(delta_gaps))]
    rows = [
        {
            "source": s,
            "target": t,
            "delta": delta_gaps[k] if s == t else 0.0,
            "flip_rate": 10.0 + (flip_gaps[k] if s == t else 0.0),
        }
        for k, s in enumerate(cultures)
        for t in cultures
    ]
    n_boot, seed = 2000, 4
    matrix = pd.DataFrame(rows).sample(frac=1.0, random_state=2)  # row order does not matter
    summary = self_cross_summary(matrix, n_boot=n_boot, seed=seed).set_index(["source", "metric"])
    for metric, gaps in (("delta", delta_gaps), ("flip_rate", flip_gaps)):
        row = summary.loc[(AVERAGE, metric)]
        assert row["gap"] == pytest.approx(gaps.mean())
        # Both metrics use the same source resamples (paired intervals).
        expected = reference_gap_interval(gaps, n_boot, seed)
        assert (row["gap_lo"], row["gap_hi"]) == pytest.approx(expected, abs=1e-9)
        assert row["gap_hi"] - row["gap_lo"] > 3.0


def test_random_selector_reports_only_self():
    masked = edited({"a1": ("plum", 2, 0), "b1": ("fig", 3, 0), "b2": ("fig", 3, 0)})
    result = ablation_matrix(BASELINE, {"ALL": masked}, n_boot=100)
    assert result["source"].tolist() == ["ALL", "ALL"]
    assert result["delta"].tolist() == [-25.0, -50.0]
    summary = self_cross_summary(result).set_index(["source", "metric"])
    for source in ("ALL", AVERAGE):
        assert summary.loc[(source, "delta"), "self"] == pytest.approx(-37.5)
        assert summary.loc[(source, "flip_rate"), "self"] == pytest.approx(37.5)
        assert summary.loc[(source, "delta"), ["cross", "gap", "gap_lo"]].isna().all()


def test_summary_refuses_mixed_or_incomplete_matrices(matrix):
    mixed = pd.concat([matrix, matrix.assign(source="ALL")], ignore_index=True)
    with pytest.raises(InputError, match="mixes"):
        self_cross_summary(mixed)
    foreign = matrix[matrix["target"] != "B"]
    with pytest.raises(InputError, match="'B' is not among the evaluated"):
        self_cross_summary(foreign)


def test_label_free_summary_keeps_flip_gap(matrix):
    free = ablation_matrix(BASELINE, {"A": MASKED_A, "B": MASKED_B}, labels=False)
    summary = self_cross_summary(free).set_index(["source", "metric"])
    assert summary.loc[(AVERAGE, "delta"), ["self", "cross", "gap", "gap_lo"]].isna().all()
    assert pd.isna(summary.loc[(AVERAGE, "delta"), "gap_ci_excludes_zero"])
    assert summary.loc[(AVERAGE, "flip_rate"), "gap"] == pytest.approx(25.0)


def test_baseline_accuracy_per_culture_and_split():
    ident = answers(
        [
            ("i1", "A", 1, "x", 1, 1),
            ("i2", "A", 1, "x", 0, 0),
            ("i3", "B", 2, "x", -1, 0),
        ]
    )
    table = baseline_accuracy(ident, BASELINE).set_index(["culture", "split"])
    assert table.loc[("A", "identification"), ["n", "accuracy"]].tolist() == [2, 50.0]
    assert table.loc[("A", "evaluation"), ["n", "accuracy", "no_choice"]].tolist() == [
        4,
        50.0,
        25.0,
    ]
    assert table.loc[("B", "identification"), ["accuracy", "no_choice"]].tolist() == [0.0, 100.0]
    free = baseline_accuracy(hidden(ident), hidden(BASELINE))
    assert free["accuracy"].isna().all() and free["n"].sum() == 11


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-1, 3), st.integers(-1, 3), st.booleans(), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_matrix_invariants(items):
    rows = [
        (f"i{k}", "A", 0, "t", before, int(ok_before))
        for k, (before, _, ok_before, _) in enumerate(items)
    ]
    masked_rows = [
        (f"i{k}", "A", 0, "t", after, int(ok_after))
        for k, (_, after, _, ok_after) in enumerate(items)
    ]
    row = ablation_matrix(answers(rows), {"A": answers(masked_rows)}, n_boot=50).iloc[0]
    assert row["delta"] == pytest.approx(row["acc_masked"] - row["acc_full"])
    assert 0.0 <= row["flip_rate"] <= 100.0
    expected_flips = sum(before != after for before, after, _, _ in items)
    assert row["flip_rate"] == pytest.approx(100.0 * expected_flips / len(items))
    for column in ("delta", "flip_rate"):
        assert row[f"{column}_lo"] - 1e-9 <= row[column] <= row[f"{column}_hi"] + 1e-9


# Table 2 ---------------------------------------------------------------------------------------


def summary_of(
    delta: tuple[float, float, float],
    flip: tuple[float, float, float],
    excludes: tuple[object, object] = (pd.NA, pd.NA),
) -> pd.DataFrame:
    """The average rows of a summary with the given (self, cross, gap) per metric."""
    rows = [
        {
            "source": AVERAGE,
            "metric": metric,
            "self": values[0],
            "cross": values[1],
            "gap": values[2],
            "gap_lo": math.nan,
            "gap_hi": math.nan,
            "gap_ci_excludes_zero": flag,
            "n_sources": 25,
        }
        for metric, values, flag in (
            ("delta", delta, excludes[0]),
            ("flip_rate", flip, excludes[1]),
        )
    ]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({"gap_ci_excludes_zero": "boolean"})


NAN3 = (math.nan, math.nan)
# Qwen2.5-VL-7B's numbers from the paper's Table 2 (RND split into two seeds around -0.19).
PAPER_QWEN = {
    "cas": summary_of((-5.52, -0.64, -4.88), (12.61, 4.25, 8.36), (True, True)),
    "custom": summary_of((-0.004, 0.0, -0.004), (1.0, 1.0, 0.0)),
    "mad": summary_of((-4.64, -1.31, -3.33), (12.03, 5.96, 6.07)),
    "rnd-s1": summary_of((-0.18, *NAN3), (4.60, *NAN3)),
    "lape": summary_of((0.56, 0.61, -0.05), (4.64, 4.12, 0.52), (False, True)),
    "lap": summary_of((0.96, 1.07, -0.08), (17.05, 17.21, -0.16)),
    "rnd-s0": summary_of((-0.20, *NAN3), (4.72, *NAN3)),
}


@pytest.fixture(scope="module")
def paper_table() -> pd.DataFrame:
    summaries = {("Qwen2.5-VL-7B", name): s for name, s in PAPER_QWEN.items()}
    summaries[("Tiny_model", "cas")] = summary_of((-1.0, 0.5, -1.5), NAN3 + (math.nan,))
    return table2(summaries)


def test_table2_shape_and_column_order(paper_table):
    assert list(paper_table.columns) == ["RND (2 seeds)", "LAP", "LAPE", "MAD", "CAS", "CUSTOM"]
    assert paper_table.index.names == ["VLM", "Metric", "Eval. Setting"]
    assert len(paper_table) == 12
    assert paper_table.index[:3].tolist() == [
        ("Qwen2.5-VL-7B", "Acc. Δ", "Self-Deactivation"),
        ("Qwen2.5-VL-7B", "Acc. Δ", "Cross-Deactivation Avg."),
        ("Qwen2.5-VL-7B", "Acc. Δ", "Self-Cross Gap"),
    ]
    assert paper_table.index[6][0] == "Tiny_model"


def test_table2_reproduces_the_papers_formatting(paper_table):
    qwen = paper_table.loc["Qwen2.5-VL-7B"]
    delta, flip = qwen.loc["Acc. Δ"], qwen.loc["Flip Rate"]
    assert delta.loc["Self-Deactivation"].tolist() == [
        "-0.19",  # mean of the two seeds
        "+0.96",
        "+0.56",
        "-4.64",
        "-5.52",
        "+0.00",  # -0.004 rounds to zero: no "-0.00"
    ]
    assert delta.loc["Cross-Deactivation Avg."].tolist() == [
        "-",
        "+1.07",
        "+0.61",
        "-1.31",
        "-0.64",
        "+0.00",
    ]
    assert delta.loc["Self-Cross Gap"].tolist() == [
        "-",
        "-0.08",
        "-0.05",
        "-3.33",
        "-4.88*",
        "+0.00",
    ]
    assert flip.loc["Self-Deactivation"].tolist() == [
        "4.66",
        "17.05",
        "4.64",
        "12.03",
        "12.61",
        "1.00",
    ]
    assert flip.loc["Self-Cross Gap"].tolist() == [
        "-",
        "-0.16",
        "+0.52*",
        "+6.07",
        "+8.36*",
        "+0.00",
    ]
    # A model without some selectors or without labels shows "-".
    tiny = paper_table.loc["Tiny_model"]
    assert tiny.loc[("Acc. Δ", "Self-Cross Gap")].tolist() == ["-", "-", "-", "-", "-1.50", "-"]
    assert set(tiny.loc["Flip Rate"].to_numpy().ravel()) == {"-"}


def test_table2_values_average_seeds():
    values, significant = table2_values(
        {("m", name): PAPER_QWEN[name] for name in ("rnd-s0", "rnd-s1", "cas")}
    )
    assert values.loc[("m", "Acc. Δ", "Self-Deactivation"), "RND (2 seeds)"] == pytest.approx(-0.19)
    assert values.loc[("m", "Flip Rate", "Self-Deactivation"), "RND (2 seeds)"] == pytest.approx(
        4.66
    )
    assert not significant["RND (2 seeds)"].any()
    assert significant.loc[("m", "Flip Rate", "Self-Cross Gap"), "CAS"]
    assert format_table2(values).loc[("m", "Flip Rate", "Self-Cross Gap"), "CAS"] == "+8.36"


def test_selector_columns():
    assert selector_column("rnd-s12") == ("RND", True)
    assert selector_column("conact") == ("CAS", False)
    assert selector_column("my-sel") == ("MY-SEL", False)
    with pytest.raises(InputError, match="CAS"):
        table2({("m", "cas"): PAPER_QWEN["cas"], ("m", "conact"): PAPER_QWEN["cas"]})


def test_table2_names_the_models_without_labels_and_what_to_do():
    # A hub CVQA run without a labels file: flip rates, no accuracy change anywhere.
    label_free = summary_of((math.nan,) * 3, (12.0, 4.0, 8.0))
    summaries = {("Pangea-7B", "cas"): label_free, ("Qwen2.5-VL-7B", "cas"): PAPER_QWEN["cas"]}
    (note,) = [n for n in table2(summaries).attrs["notes"] if "labels hidden" in n]
    assert note.startswith("No Acc. Δ for Pangea-7B: labels hidden.")
    assert "set dataset.labels_file" in note
    # RND's missing cross and gap cells are no sign of hidden labels.
    assert not [
        n
        for n in table2({("Qwen2.5-VL-7B", k): PAPER_QWEN[k] for k in ("rnd-s0", "cas")}).attrs[
            "notes"
        ]
        if "labels hidden" in n
    ]


def test_write_table2_writes_csv_markdown_and_latex(paper_table, tmp_path):
    paths = write_table2(paper_table, tmp_path / "summary" / "table2")
    assert [p.name for p in paths] == ["table2.csv", "table2.md", "table2.tex"]
    assert sorted(p.name for p in (tmp_path / "summary").iterdir()) == sorted(p.name for p in paths)

    csv = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    assert list(csv.columns[:3]) == ["VLM", "Metric", "Eval. Setting"]
    assert csv.loc[0, "LAP"] == "+0.96" and csv.loc[3, "LAP"] == "17.05"
    assert csv["VLM"].tolist().count("Qwen2.5-VL-7B") == 6  # repeated on every row

    markdown = paths[1].read_text(encoding="utf-8")
    lines = markdown.splitlines()
    assert lines[0] == (
        "| VLM | Metric | Eval. Setting | RND (2 seeds) | LAP | LAPE | MAD | CAS | CUSTOM |"
    )
    assert lines[2].startswith("| Qwen2.5-VL-7B | Acc. Δ | Self-Deactivation | -0.19 | +0.96 |")
    assert lines[3].startswith("|  |  | Cross-Deactivation Avg. | - | +1.07 |")
    assert "-4.88\\*" in markdown and NOTE_SIGNIFICANT in markdown

    latex = paths[2].read_text(encoding="utf-8")
    assert "\\begin{tabular}{lll" + "r" * 6 + "}" in latex and "\\bottomrule" in latex
    assert "Acc. $\\Delta$" in latex and "Tiny\\_model" in latex and "Δ &" not in latex
    assert "$-4.88^{*}$" in latex and "$+0.96$" in latex
    assert latex.count("\\\\") == 13  # header + 12 rows
