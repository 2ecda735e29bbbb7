"""The one percentile bootstrap interval (culture_neurons.statistics)."""

from __future__ import annotations

import numpy as np
import pytest

from culture_neurons.statistics import CI_LEVEL, percentile_interval


def test_central_95_percent_of_evenly_spaced_draws():
    # 0.0, 0.005, ..., 1.0 shuffled: the 2.5th and 97.5th percentiles are exactly 0.025 and 0.975
    # (a 5% tail would give 0.05 and 0.95; a one-sided 95% 0.0 and 0.95).
    draws = np.random.default_rng(0).permutation(np.linspace(0.0, 1.0, 201))
    lo, hi = percentile_interval(draws)
    assert CI_LEVEL == 95.0
    assert lo == pytest.approx(0.025) and hi == pytest.approx(0.975)
    lo90, hi90 = percentile_interval(draws, level=90.0)
    assert lo90 == pytest.approx(0.05) and hi90 == pytest.approx(0.95)


def test_resamples_along_an_axis_give_one_interval_per_column():
    # Column j holds 0..100 scaled by j + 1, rows are the resamples: per column
    # (2.5 (j + 1), 97.5 (j + 1)); the intervals over the other axis would all be alike.
    base = np.random.default_rng(1).permutation(np.arange(101.0))
    draws = base[:, None] * np.arange(1.0, 4.0)[None, :]
    lo, hi = percentile_interval(draws, axis=0)
    np.testing.assert_allclose(lo, [2.5, 5.0, 7.5])
    np.testing.assert_allclose(hi, [97.5, 195.0, 292.5])
    assert lo.shape == (3,)


def test_bit_identical_to_numpy_percentile():
    draws = np.random.default_rng(2).normal(size=(500, 4))
    lo, hi = percentile_interval(draws, axis=0)
    ref_lo, ref_hi = np.percentile(draws, [2.5, 97.5], axis=0)
    assert np.array_equal(lo, ref_lo) and np.array_equal(hi, ref_hi)


def test_nan_draws_poison_the_interval_unless_skipped():
    draws = np.concatenate([np.linspace(0.0, 1.0, 201), [np.nan] * 7])
    lo, hi = percentile_interval(draws)
    assert np.isnan(lo) and np.isnan(hi)
    lo, hi = percentile_interval(draws, skip_nan=True)
    assert lo == pytest.approx(0.025) and hi == pytest.approx(0.975)
    lo, hi = percentile_interval(np.full(5, np.nan), skip_nan=True)
    assert np.isnan(lo) and np.isnan(hi)
    lo, hi = percentile_interval(np.zeros(0), skip_nan=True)
    assert np.isnan(lo) and np.isnan(hi)
