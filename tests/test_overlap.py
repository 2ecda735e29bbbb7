"""Overlap between selected sets and its correlation with cross-deactivation effects."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from culture_neurons.analysis.overlap import (
    culture_pairs,
    jaccard_matrix,
    overlap_correlation,
    selector_overlap,
)
from culture_neurons.errors import InputError

MANTEL_SEED = 1  # picked so that the rows-only and the rows-and-columns null differ clearly


def test_jaccard_matrix_by_hand():
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    b = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    out = jaccard_matrix(a, b)
    np.testing.assert_allclose(out[0, :2], [1 / 3, 1 / 3])
    assert out[0, 2] == 0.0 and np.isnan(out[1, 2])


def test_selector_overlap_compares_a_culture_independent_set_with_every_culture():
    cas = np.array([[[1, 1, 0, 0]], [[0, 0, 1, 1]]], dtype=bool)
    rnd = np.array([[[1, 0, 1, 0]]], dtype=bool)
    table = selector_overlap({"cas": (cas, ["A", "B"]), "rnd": (rnd, ["ALL"])})
    got = table.set_index(["culture", "selector_a", "selector_b"])["jaccard"]
    assert got[("A", "cas", "rnd")] == pytest.approx(1 / 3)
    assert got[("B", "rnd", "cas")] == pytest.approx(1 / 3)
    assert got[("A", "cas", "cas")] == 1.0
    assert len(table) == 2 * 2 * 2


def planted(n: int, slope: float, seed: int) -> tuple[np.ndarray, list[str], pd.DataFrame]:
    """n cultures whose sets overlap at random; each pair's cross Δ = slope * overlap + noise."""
    rng = np.random.default_rng(seed)
    selected = rng.random((n, 1, 400)) < rng.uniform(0.05, 0.5, size=(n, 1, 1))
    cultures = [f"c{i}" for i in range(n)]
    overlap = jaccard_matrix(selected, selected)
    rows = [
        (s, t, slope * overlap[i, j] + rng.normal(0, 0.5), rng.uniform(0, 5))
        for i, s in enumerate(cultures) for j, t in enumerate(cultures)
    ]  # fmt: skip
    matrix = pd.DataFrame(rows, columns=["source", "target", "delta", "flip_rate"])
    return selected, cultures, matrix


def test_a_planted_overlap_effect_is_found_with_an_interval_and_a_small_mantel_p():
    selected, cultures, matrix = planted(12, slope=-30.0, seed=0)
    pairs = culture_pairs("cas", selected, cultures, matrix)
    assert len(pairs) == 12 * 11 and (pairs["source"] != pairs["target"]).all()
    result = overlap_correlation(pairs, "delta", n_boot=300, n_perm=300, seed=0)
    assert result["spearman_r"] < -0.6
    assert result["r_lo"] <= result["spearman_r"] <= result["r_hi"] < 0
    assert result["mantel_p"] < 0.01 and result["note"] == ""
    unrelated = overlap_correlation(pairs, "flip_rate", n_boot=300, n_perm=300, seed=0)
    assert unrelated["mantel_p"] > 0.05
    assert unrelated["r_lo"] < 0 < unrelated["r_hi"]


def test_disjoint_sets_have_no_correlation_and_say_why():
    selected = np.zeros((3, 1, 9), dtype=bool)
    for c in range(3):
        selected[c, 0, 3 * c : 3 * c + 3] = True
    cultures = ["a", "b", "c"]
    matrix = pd.DataFrame(
        [
            (s, t, -float(i + j), 1.0)
            for i, s in enumerate(cultures)
            for j, t in enumerate(cultures)
        ],
        columns=["source", "target", "delta", "flip_rate"],
    )
    result = overlap_correlation(culture_pairs("cas", selected, cultures, matrix), "delta",
                                 n_boot=10, n_perm=10)  # fmt: skip
    assert np.isnan(result["spearman_r"]) and np.isnan(result["mantel_p"])
    assert "disjoint" in result["note"]


def test_selectors_stored_in_different_culture_orders_are_matched_by_name():
    # The same three sets, stored in two orders: per culture the two selectors agree fully,
    # and each culture's set is compared with the other selector's set of that same culture.
    sets = {"am": [1, 1, 0, 0, 0, 0], "pt": [0, 0, 1, 1, 0, 0], "zh": [0, 1, 0, 0, 1, 1]}
    cas_order, mad_order = ["zh", "am", "pt"], ["pt", "zh", "am"]
    cas = np.array([[sets[c]] for c in cas_order], dtype=bool)
    mad = np.array([[sets[c]] for c in mad_order], dtype=bool)
    mad[mad_order.index("zh"), 0, 1] = False  # zh: {4, 5} against cas's {1, 4, 5}
    table = selector_overlap({"cas": (cas, cas_order), "mad": (mad, mad_order)})
    assert table["culture"].drop_duplicates().tolist() == ["am", "pt", "zh"]  # sorted
    got = table.set_index(["culture", "selector_a", "selector_b"])["jaccard"]
    assert got[("am", "cas", "mad")] == 1.0 and got[("pt", "mad", "cas")] == 1.0
    assert got[("zh", "cas", "mad")] == pytest.approx(2 / 3)


def test_selector_overlap_refuses_a_mask_without_a_culture():
    cas = np.ones((2, 1, 4), dtype=bool)
    with pytest.raises(InputError, match=r"selector 'mad' has no mask for culture\(s\) \['pt'\]"):
        selector_overlap({"cas": (cas, ["am", "pt"]), "mad": (cas[:1], ["am"])})


def test_culture_pairs_follow_the_mask_store_order_not_the_matrix_order():
    cultures = ["zh", "am", "pt"]  # store order; the matrix is sorted
    selected = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]], [[0, 0, 1, 1]]], dtype=bool)
    matrix = pd.DataFrame(
        [(s, t, -10.0 * i - j, float(i + j)) for i, s in enumerate(sorted(cultures))
         for j, t in enumerate(sorted(cultures))],
        columns=["source", "target", "delta", "flip_rate"],
    )  # fmt: skip
    pairs = culture_pairs("cas", selected, cultures, matrix).set_index(["source", "target"])
    assert pairs.loc[("zh", "am"), "jaccard"] == pytest.approx(0.5)
    assert pairs.loc[("am", "zh"), "jaccard"] == pytest.approx(0.5)
    assert pairs.loc[("zh", "pt"), "jaccard"] == 0.0
    assert pairs.loc[("zh", "am"), "delta"] == -10.0 * 2 - 0  # zh is sorted index 2, am 0
    with pytest.raises(InputError, match="3 mask rows but 2 culture names"):
        culture_pairs("cas", selected, cultures[:2], matrix)


def test_the_correlation_does_not_depend_on_the_order_of_pairs_or_cultures():
    selected, cultures, matrix = planted(7, slope=-20.0, seed=4)
    # Culture names whose sorted order differs from the store order.
    names = ["zh", "am", "pt", "ko", "sw", "fil", "es"]
    rename = dict(zip(cultures, names, strict=True))
    matrix = matrix.replace({"source": rename, "target": rename})
    pairs = culture_pairs("cas", selected, names, matrix)
    shuffled = pairs.sample(frac=1.0, random_state=1).reset_index(drop=True)
    kwargs = dict(n_boot=200, n_perm=200, seed=3)
    for metric in ("delta", "flip_rate"):
        assert overlap_correlation(pairs, metric, **kwargs) == overlap_correlation(
            shuffled, metric, **kwargs
        )


def _rank_corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def _enumerated_p(overlap: np.ndarray, effect: np.ndarray, *, rows_only: bool = False) -> float:
    """Share of all relabellings whose |r| reaches the observed one (the exact Mantel p)."""
    n = len(overlap)
    off = ~np.eye(n, dtype=bool)
    r = abs(_rank_corr(overlap[off], effect[off]))
    hits = []
    for perm in itertools.permutations(range(n)):
        perm = list(perm)
        shuffled = overlap[perm] if rows_only else overlap[np.ix_(perm, perm)]
        ok = off & ~np.isnan(shuffled)
        hits.append(abs(_rank_corr(shuffled[ok], effect[ok])) >= r - 1e-12)
    return float(np.mean(hits))


def test_the_mantel_p_value_permutes_culture_labels_of_rows_and_columns_together():
    # Five cultures: a symmetric overlap matrix (the Jaccard is) against a cross effect that is
    # not symmetric (s's neurons on t's items differ from t's on s's).
    rng = np.random.default_rng(MANTEL_SEED)
    selected = rng.random((5, 1, 60)) < rng.uniform(0.1, 0.6, size=(5, 1, 1))
    cultures = ["e", "d", "c", "b", "a"]
    overlap = jaccard_matrix(selected, selected)
    effect = -8.0 * overlap + rng.normal(0.0, 1.5, size=overlap.shape)
    matrix = pd.DataFrame(
        [(s, t, effect[i, j], 1.0) for i, s in enumerate(cultures)
         for j, t in enumerate(cultures)],
        columns=["source", "target", "delta", "flip_rate"],
    )  # fmt: skip
    pairs = culture_pairs("cas", selected, cultures, matrix)
    result = overlap_correlation(pairs, "delta", n_boot=10, n_perm=3000, seed=0)
    order = np.argsort(cultures)  # the function works in sorted culture order
    sorted_overlap = overlap[np.ix_(order, order)]
    np.fill_diagonal(sorted_overlap, np.nan)
    sorted_effect = effect[np.ix_(order, order)]
    exact = _enumerated_p(sorted_overlap, sorted_effect)
    rows_only = _enumerated_p(sorted_overlap, sorted_effect, rows_only=True)
    assert abs(exact - rows_only) > 0.1  # the input tells the two schemes apart
    # 3000 draws: the standard error of a share near 0.1-0.5 is below 0.01.
    assert result["mantel_p"] == pytest.approx(exact, abs=0.03), (exact, rows_only)
