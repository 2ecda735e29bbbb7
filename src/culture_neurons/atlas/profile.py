"""What a neuron fires on: its top and bottom items and its activation profile over cultures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from culture_neurons.atlas.scan import NeuronActivity
from culture_neurons.statistics import percentile_interval


def top_items(activation: np.ndarray, k: int, *, lowest: bool = False) -> np.ndarray:
    """Item indices of the ``k`` largest values of each column of ``activation`` ``[items, N]``
    (``lowest``: the ``k`` smallest), ``[min(k, items), N]``, best first; ties go to the
    earlier item, so the listing is reproducible."""
    k = min(k, activation.shape[0])
    values = activation if lowest else -activation
    return np.argsort(values, axis=0, kind="stable")[:k]


@dataclass(frozen=True)
class Profile:
    """Per culture (``cultures``) and neuron: mean positive activation per valid token
    (``activation``: the culture's ``pos_sum`` over its ``tokens``) and firing rate
    (``firing``: its ``fire_count`` over its ``tokens``), ``[C, N]``, each with a percentile
    bootstrap interval over the culture's items (``*_lo``, ``*_hi``)."""

    cultures: list[str]
    items: np.ndarray  # [C] items per culture
    activation: np.ndarray
    activation_lo: np.ndarray
    activation_hi: np.ndarray
    firing: np.ndarray
    firing_lo: np.ndarray
    firing_hi: np.ndarray


def culture_profile(activity: NeuronActivity, *, n_boot: int = 200, seed: int = 0) -> Profile:
    """Each culture's ratio of sums over all its identification items (answered correctly or
    not: the atlas shows what fires, not what the selectors kept), and its bootstrap interval:
    items resampled with replacement within the culture, drawn as multinomial counts so that a
    resample is one matrix product, not a copy of the items."""
    rng = np.random.default_rng(seed)
    cultures = sorted(set(activity.culture.tolist()))
    n_cols = activity.neurons.shape[0]
    shape = (len(cultures), n_cols)
    out = {
        name: np.zeros(shape) for name in ("act", "act_lo", "act_hi", "fire", "fire_lo", "fire_hi")
    }
    counts = np.zeros(len(cultures), np.int64)
    for c, culture in enumerate(cultures):
        rows = np.flatnonzero(activity.culture == culture)
        counts[c] = len(rows)
        tokens = activity.tokens[rows].astype(np.float64)
        pos = activity.pos_sum[rows].astype(np.float64)
        fire = activity.fire_count[rows].astype(np.float64)
        total = tokens.sum()
        out["act"][c] = pos.sum(axis=0) / total if total else 0.0
        out["fire"][c] = fire.sum(axis=0) / total if total else 0.0
        if n_boot < 1:
            for name in ("act", "fire"):
                out[f"{name}_lo"][c] = out[f"{name}_hi"][c] = np.nan
            continue
        weights = rng.multinomial(len(rows), np.full(len(rows), 1 / len(rows)), size=n_boot)
        boot_tokens = weights @ tokens  # [B]
        with np.errstate(invalid="ignore", divide="ignore"):
            for name, values in (("act", pos), ("fire", fire)):
                draws = (weights @ values) / boot_tokens[:, None]  # [B, N]
                lo, hi = percentile_interval(draws, axis=0, skip_nan=True)
                out[f"{name}_lo"][c], out[f"{name}_hi"][c] = lo, hi
    return Profile(
        cultures, counts, out["act"], out["act_lo"], out["act_hi"],
        out["fire"], out["fire_lo"], out["fire_hi"],
    )  # fmt: skip
