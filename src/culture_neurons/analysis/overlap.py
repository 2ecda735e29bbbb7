"""Overlap between selected sets: between selectors (per culture), between cultures (per
selector), and whether cultures that share more neurons also hurt each other more when one's
neurons are deactivated (CULNIG, "Neuron-Level Analysis of Cultural Understanding in Large
Language Models", reports that culture neurons also support related cultures).

The correlation is Spearman's over ordered culture pairs ``(s, t)``, ``s != t``: the Jaccard of
the two cultures' sets against the cross-deactivation effect of ``s``'s neurons on ``t``'s items.
Pairs share cultures, so they are not independent: the 95% interval resamples **cultures** (with
replacement; every ordered pair of two distinct drawn cultures enters), and the p-value is a
Mantel permutation test (culture labels of the overlap matrix permuted, rows and columns together).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from culture_neurons.errors import InputError
from culture_neurons.selection.conventions import ALL_CULTURES
from culture_neurons.statistics import percentile_interval


def jaccard_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[Ca, Cb]`` Jaccard between every row of two bool ``[C, ...]`` masks (NaN: both empty)."""
    a = a.reshape(a.shape[0], -1).astype(np.float32)
    b = b.reshape(b.shape[0], -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def selector_overlap(masks: Mapping[str, tuple[np.ndarray, list[str]]]) -> pd.DataFrame:
    """Per culture and pair of selectors, the Jaccard of their sets. A culture-independent mask
    (one ``ALL`` row) is compared with every culture's set."""
    cultures = sorted({c for _, names in masks.values() for c in names if c != ALL_CULTURES})
    rows = []
    per_culture = {}
    for name, (selected, names) in masks.items():
        if names == [ALL_CULTURES]:
            per_culture[name] = np.repeat(selected, len(cultures), axis=0)
            continue
        missing = [c for c in cultures if c not in names]
        if missing:
            raise InputError(
                f"selector {name!r} has no mask for culture(s) {missing}; its mask store has "
                f"{names}: were all selectors run on the same activation store?"
            )
        # Mask stores need not share a culture order: rows are matched by name.
        per_culture[name] = selected[[names.index(c) for c in cultures]]
    names = list(per_culture)
    for c, culture in enumerate(cultures):
        stacked = np.stack([per_culture[n][c] for n in names])
        overlap = jaccard_matrix(stacked, stacked)
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                rows.append((culture, a, b, float(overlap[i, j])))
    return pd.DataFrame(rows, columns=["culture", "selector_a", "selector_b", "jaccard"])


def culture_pairs(
    selector: str, selected: np.ndarray, cultures: list[str], matrix: pd.DataFrame
) -> pd.DataFrame:
    """Per ordered culture pair (source, target), source != target: the Jaccard of their sets and
    the source's cross-deactivation Δ and flip rate on the target (from the selector's matrix).
    ``cultures`` names the rows of ``selected`` in its (store) order."""
    if selected.shape[0] != len(cultures):
        raise InputError(
            f"selector {selector!r}: {selected.shape[0]} mask rows but {len(cultures)} culture "
            "names"
        )
    overlap = jaccard_matrix(selected, selected)
    cells = matrix.set_index(["source", "target"])
    rows = []
    for i, source in enumerate(cultures):
        for j, target in enumerate(cultures):
            if i == j or (source, target) not in cells.index:
                continue
            cell = cells.loc[(source, target)]
            rows.append(
                (selector, source, target, float(overlap[i, j]), float(cell["delta"]),
                 float(cell["flip_rate"]))
            )  # fmt: skip
    return pd.DataFrame(
        rows, columns=["selector", "source", "target", "jaccard", "delta", "flip_rate"]
    )


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3:
        return np.nan
    rx = pd.Series(x[ok]).rank().to_numpy()
    ry = pd.Series(y[ok]).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return np.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def overlap_correlation(
    pairs: pd.DataFrame, metric: str, *, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Spearman r between pair overlap and ``metric`` with a culture-bootstrap 95% interval and a
    two-sided Mantel permutation p-value (see the module docstring)."""
    if metric not in ("delta", "flip_rate"):
        raise InputError(f"unknown metric {metric!r}")
    cultures = sorted(set(pairs["source"]) | set(pairs["target"]))
    index = {c: i for i, c in enumerate(cultures)}
    n = len(cultures)
    overlap = np.full((n, n), np.nan)
    effect = np.full((n, n), np.nan)
    for row in pairs.itertuples(index=False):
        i, j = index[row.source], index[row.target]
        overlap[i, j], effect[i, j] = row.jaccard, getattr(row, metric)
    off = ~np.eye(n, dtype=bool)
    r = _spearman(overlap[off], effect[off])
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        drawn = rng.integers(0, n, size=n)
        a, b = np.meshgrid(drawn, drawn, indexing="ij")
        keep = a != b
        boot.append(_spearman(overlap[a[keep], b[keep]], effect[a[keep], b[keep]]))
    boot = np.array(boot, dtype=float)
    # A resample of cultures can leave a constant overlap: its correlation is undefined (NaN).
    lo, hi = percentile_interval(boot, skip_nan=True)
    extreme = 0
    for _ in range(n_perm):
        perm = rng.permutation(n)
        shuffled = overlap[np.ix_(perm, perm)]
        extreme += abs(_spearman(shuffled[off], effect[off])) >= abs(r) - 1e-12
    p = (1 + extreme) / (1 + n_perm) if np.isfinite(r) else np.nan
    values = overlap[off][~np.isnan(overlap[off])]
    note = ""
    if values.size and np.all(values == values[0]):
        # CAS and LAPE give each neuron to at most one culture: no overlap to correlate.
        note = f"overlap is {values[0]:.3g} for every pair (disjoint sets by construction?)"
    return {
        "metric": metric, "spearman_r": r, "r_lo": float(lo), "r_hi": float(hi),
        "mantel_p": p, "n_pairs": int(off.sum()), "n_cultures": n, "note": note,
    }  # fmt: skip
