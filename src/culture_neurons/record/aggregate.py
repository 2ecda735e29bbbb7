"""Per-culture aggregates of the activation store: the selectors' inputs.

Sums over the items of each culture that the unmasked model answered correctly (the paper's
Step 1); when labels are hidden (``correct`` is -1 everywhere) every item counts. Regrouping
cultures or changing the filter needs no model run, only this sum.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from culture_neurons.record.store import ActivationStore

log = logging.getLogger(__name__)

#: Below this many correctly answered items a culture's statistics are flagged as thin (the
#: paper's Japan case); they are still used.
MIN_CORRECT_ITEMS = 20


@dataclass(frozen=True)
class CultureAggregates:
    cultures: list[str]
    fire_count: np.ndarray  # [C, L, D] float64 (exact integers up to 2**53)
    pos_sum: np.ndarray  # [C, L, D] float64
    tokens: np.ndarray  # [C] float64
    items_used: np.ndarray  # [C] int
    items_total: np.ndarray  # [C] int
    correct_filter: bool

    @property
    def thin_cultures(self) -> list[str]:
        return [
            c for c, n in zip(self.cultures, self.items_used, strict=True) if n < MIN_CORRECT_ITEMS
        ]


def used_items(
    store: ActivationStore, *, only_correct: bool = True
) -> tuple[list[str], np.ndarray, np.ndarray, bool]:
    """The store's cultures (sorted), each item's culture index, which items the statistics use
    (the correctly answered ones, or every item when labels are hidden or the filter is off) and
    whether the correctness filter applies."""
    group = store.group
    cultures_per_item = [str(c) for c in group["culture"][:]]
    correct = group["correct"][:]
    labelled = bool((correct >= 0).any())
    use_filter = only_correct and labelled
    if only_correct and not labelled:
        log.warning("labels are hidden: aggregating every item (no correctness filter)")
    keep = correct == 1 if use_filter else np.ones(len(correct), dtype=bool)
    cultures = sorted(set(cultures_per_item))
    index = {c: i for i, c in enumerate(cultures)}
    culture_idx = np.array([index[c] for c in cultures_per_item])
    return cultures, culture_idx, keep, use_filter


def aggregate(store: ActivationStore, *, only_correct: bool = True) -> CultureAggregates:
    """Sum each culture's statistics over its (correctly answered) items, chunk by chunk."""
    group = store.group
    cultures, culture_idx, keep, use_filter = used_items(store, only_correct=only_correct)
    index = {c: i for i, c in enumerate(cultures)}
    _, n_layers, n_neurons = group["fire_count"].shape
    fire = np.zeros((len(cultures), n_layers, n_neurons), dtype=np.float64)
    pos = np.zeros_like(fire)
    for chunk in range(store.n_chunks):
        rows = store.chunk_slice(chunk)
        selected = keep[rows]
        if not selected.any():
            continue
        which = culture_idx[rows][selected]
        counts, sums = store.checked_rows(chunk)
        counts, sums = counts[selected], sums[selected]
        # np.add.at would do it in one call, but a loop over the few cultures present in a chunk
        # is faster and keeps the float64 temporaries at one [L, D] slab.
        for c in np.unique(which):
            fire[c] += counts[which == c].sum(axis=0, dtype=np.float64)
            pos[c] += sums[which == c].sum(axis=0, dtype=np.float64)
    tokens_per_item = group["tokens"][:].astype(np.float64)
    tokens = np.bincount(culture_idx[keep], weights=tokens_per_item[keep], minlength=len(cultures))
    items_used = np.bincount(culture_idx[keep], minlength=len(cultures))
    items_total = np.bincount(culture_idx, minlength=len(cultures))
    result = CultureAggregates(
        cultures, fire, pos, tokens, items_used, items_total, correct_filter=use_filter
    )
    for culture in result.thin_cultures:
        i = index[culture]
        log.warning(
            "culture %s: only %d of %d items answered correctly: its neuron statistics are thin",
            culture,
            items_used[i],
            items_total[i],
        )
    return result


#: A store's ``statistic`` attribute for units whose per-token value is an output norm
#: (attention heads, `culture_neurons.models.sites`): the norm is above 0 on every token.
NORM_STATISTIC = "l2_norm"


def relative_magnitude(agg: CultureAggregates) -> CultureAggregates:
    """The aggregates of norm-valued units as the firing selectors read them.

    A head's output norm is above 0 on (nearly) every token, so its firing probability would be
    1 for every culture and P-based selectors (LAP, LAPE, CAS) would see no contrast. Here P is
    each culture's mean norm relative to the unit's largest culture mean, ``M[c] / max_c M``
    (``fire_count := tokens * M / max_c M``): 1 for the unit's top culture, and CAS's margin
    ``P1 - P2`` becomes the relative gap ``1 - M2 / M1`` between its top two cultures. M itself
    (``pos_sum``, MAD's input) is unchanged.
    """
    share = relative_mean(agg.pos_sum, agg.tokens)
    return replace(agg, fire_count=share * agg.tokens[:, None, None])


def relative_mean(pos_sum: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """``M[c] / max_c M`` (float64 ``[C, L, D]``) of per-culture sums ``pos_sum`` over
    ``tokens`` ``[C]``: the P that `relative_magnitude` gives norm-valued units (0 where a culture
    has no tokens or a unit's norm is 0 everywhere)."""
    tokens = np.asarray(tokens, dtype=np.float64)[:, None, None]
    pos_sum = np.asarray(pos_sum, dtype=np.float64)
    mean = np.divide(pos_sum, tokens, out=np.zeros_like(pos_sum), where=tokens > 0)
    top = mean.max(axis=0, keepdims=True)
    return np.divide(mean, top, out=np.zeros_like(mean), where=top > 0)
