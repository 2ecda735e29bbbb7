"""Overlap between selected sets and its correlation with cross-deactivation effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from culture_neurons.analysis.overlap import (
    culture_pairs,
    jaccard_matrix,
    overlap_correlation,
    selector_overlap,
)


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
