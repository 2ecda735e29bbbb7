"""Which source cultures show a significant self-cross gap, corrected across sources.

Per selector, source culture ``s`` and metric, the gap is the one in Table 2's rows:
``self - cross`` with ``self`` the (s, s) cell and ``cross`` the unweighted mean of the (s, t)
cells over the other targets. The test is a **paired bootstrap over evaluation items**: each
target culture's items are resampled with replacement (the same resamples, and seeds, as the
matrix's cell intervals), the baseline and masked answers of an item move together, and the gap
is recomputed per resample. The one-sided p-value is the share of resamples on the wrong side of
zero, ``(1 + #{gap* >= 0}) / (1 + B)`` for the accuracy change (the claim: self drops more) and
``(1 + #{gap* <= 0}) / (1 + B)`` for the flip rate (the claim: self flips more). P-values are
corrected across the sources of one selector and metric with Benjamini–Hochberg; a source is
significant at ``q < 0.05``.

The item bootstrap holds the cultures fixed: it asks whether *this* culture's gap is more than
item noise, not whether cultures in general show one (that is Table 2's average-gap interval,
which resamples cultures).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from culture_neurons.analysis.metrics import (
    RANDOM_SOURCE,
    ablation_matrix,
    bootstrap_weights,
    paired_item_statistics,
    self_cross_summary,
)
from culture_neurons.errors import InputError
from culture_neurons.statistics import percentile_interval

log = logging.getLogger(__name__)

Q_THRESHOLD = 0.05
# Percentage points: far above the rounding of a mean of 0/1 values (~1e-13 at 100), far below
# any gap two real item counts can produce.
TIE_TOLERANCE = 1e-9
SIGNIFICANCE_COLUMNS = [
    "source",
    "metric",
    "self",
    "cross",
    "gap",
    "gap_lo",
    "gap_hi",
    "p_value",
    "q_value",
    "significant",
    "n_boot",
]
# metric -> the sign of the gap the claim predicts
_EXPECTED_SIGN = {"delta": -1.0, "flip_rate": 1.0}


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), NaN kept as NaN and not counted."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be one-dimensional, got shape {p.shape}")
    finite = ~np.isnan(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    q = np.full_like(p, np.nan)
    values = p[finite]
    m = values.size
    if m == 0:
        return q
    order = np.argsort(values, kind="stable")
    scaled = values[order] * m / np.arange(1, m + 1)
    # q_(i) = min over j >= i of p_(j) m / j: a running minimum from the largest p down.
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    q[finite] = out
    return q


def source_gap_tests(
    baseline: pd.DataFrame,
    masked: Mapping[str, pd.DataFrame],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    labels: bool = True,
) -> pd.DataFrame:
    """One row per (source, metric) with :data:`SIGNIFICANCE_COLUMNS` (see the module docstring).

    ``gap_lo``/``gap_hi`` are the 95% percentile interval of the item bootstrap. A culture-
    independent selector (source ``"ALL"``) has no gap: an empty table. Without labels the
    ``delta`` rows are NaN; with ``n_boot == 0`` the p- and q-values are.
    """
    stats = paired_item_statistics(baseline, masked, labels=labels)
    if stats.sources == [RANDOM_SOURCE]:
        return pd.DataFrame(columns=SIGNIFICANCE_COLUMNS)
    targets = sorted(set(stats.baseline["culture"].astype(str)))
    missing = [s for s in stats.sources if s not in targets]
    if missing:
        raise InputError(f"source(s) {missing} are not among the evaluated target cultures")
    per_item = {"flip_rate": stats.flipped}
    if stats.labelled:
        per_item["delta"] = stats.diff
    # [targets, sources] point values and [targets, B, sources] bootstrap means per metric.
    points: dict[str, np.ndarray] = {}
    boots: dict[str, np.ndarray] = {}
    for metric, values in per_item.items():
        point, boot = [], []
        for target in targets:
            rows = values[stats.in_target(target)]
            point.append(100.0 * rows.mean(axis=0))
            if n_boot > 0:
                weights = bootstrap_weights(len(rows), n_boot, seed, target) / len(rows)
                boot.append(100.0 * weights @ rows)
        points[metric] = np.array(point)
        if n_boot > 0:
            boots[metric] = np.array(boot)
    frames = []
    for metric in ("delta", "flip_rate"):
        frames.append(_metric_rows(metric, stats.sources, targets, points, boots, n_boot))
    return pd.concat(frames, ignore_index=True)[SIGNIFICANCE_COLUMNS]


def _metric_rows(
    metric: str,
    sources: list[str],
    targets: list[str],
    points: Mapping[str, np.ndarray],
    boots: Mapping[str, np.ndarray],
    n_boot: int,
) -> pd.DataFrame:
    n = len(sources)
    nan = np.full(n, np.nan)
    self_, cross, gap, lo, hi, p = (nan.copy() for _ in range(6))
    if metric in points:
        for k, source in enumerate(sources):
            t_self = targets.index(source)
            others = [t for t in range(len(targets)) if t != t_self]
            self_[k] = points[metric][t_self, k]
            cross[k] = points[metric][others, k].mean() if others else np.nan
            gap[k] = self_[k] - cross[k]
            if metric in boots and others:
                draws = boots[metric][t_self, :, k] - boots[metric][others, :, k].mean(axis=0)
                lo[k], hi[k] = percentile_interval(draws)
                # An exact tie (a resampled gap of 0) is on the wrong side; float rounding of
                # the means may leave it a hair off zero, so ties are judged with a tolerance.
                wrong_side = draws * _EXPECTED_SIGN[metric] <= TIE_TOLERANCE
                p[k] = (1 + int(wrong_side.sum())) / (1 + n_boot)
    q = benjamini_hochberg(p)
    significant = pd.array(
        [pd.NA if np.isnan(v) else bool(v < Q_THRESHOLD) for v in q], dtype="boolean"
    )
    return pd.DataFrame(
        {
            "source": sources,
            "metric": metric,
            "self": self_,
            "cross": cross,
            "gap": gap,
            "gap_lo": lo,
            "gap_hi": hi,
            "p_value": p,
            "q_value": q,
            "significant": significant,
            "n_boot": int(n_boot),
        }
    )


def significant_sources(table: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """metric -> (sources with q < 0.05, sources tested) of one selector's test table."""
    counts = {}
    for metric in ("delta", "flip_rate"):
        rows = table[table["metric"] == metric]
        tested = rows["q_value"].notna()
        counts[metric] = (int(rows.loc[tested, "significant"].sum()), int(tested.sum()))
    return counts


def condition_tables(
    base: pd.DataFrame,
    masked: Mapping[str, pd.DataFrame],
    selector: str,
    *,
    n_boot: int,
    seed: int,
    significance: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Matrix, self / cross / gap summary and (optionally) per-source gap tests of one ablation
    condition (one ratio, one intervention): ``masked`` maps source culture -> answers."""
    matrix = ablation_matrix(base, masked, n_boot=n_boot, seed=seed)
    matrix.insert(0, "selector", selector)
    summary = self_cross_summary(matrix, n_boot=n_boot, seed=seed)
    tests = None
    if significance:
        tests = source_gap_tests(base, masked, n_boot=n_boot, seed=seed)
        tests.insert(0, "selector", selector)
        for metric, (k, c) in significant_sources(tests).items():
            log.info("%s %s: %d of %d sources with a significant gap", selector, metric, k, c)
    return matrix, summary, tests
