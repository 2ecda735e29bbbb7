"""Percentile bootstrap intervals: the one place every analysis takes its interval from.

A bootstrap gives ``B`` resampled values of a statistic; the interval is their central
``CI_LEVEL`` %: the ``tail`` and ``100 - tail`` percentiles, ``tail = (100 - CI_LEVEL) / 2``
(numpy's default linear interpolation). Callers differ only in the axis the resamples lie along
and in whether a resample may be undefined (NaN), which they say explicitly.
"""

from __future__ import annotations

import numpy as np

#: The confidence level (%) of every interval in the tables and figures.
CI_LEVEL = 95.0


def percentile_interval(
    draws: np.ndarray,
    *,
    axis: int | None = None,
    skip_nan: bool = False,
    level: float = CI_LEVEL,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """The central ``level`` % of the bootstrap ``draws``: ``(lo, hi)``.

    ``axis``: the axis the resamples lie along (None: all values are resamples of one
    statistic); the bounds have the shape of the other axes. ``skip_nan``: NaN draws (a resample
    where the statistic is undefined, e.g. a correlation of constant values) are left out, and an
    interval with no finite draw at all is ``(nan, nan)``; without it a NaN draw makes the bounds
    NaN, which is what a caller wants when NaN means a bug upstream.
    """
    tail = (100.0 - level) / 2
    if skip_nan:
        if not np.isfinite(draws).any():
            return np.nan, np.nan
        lo, hi = np.nanpercentile(draws, [tail, 100.0 - tail], axis=axis)
    else:
        lo, hi = np.percentile(draws, [tail, 100.0 - tail], axis=axis)
    return lo, hi
