"""Stability of the selected sets under resampling of the identification items.

Each selector is re-run on ``B`` bootstrap resamples of the identification items (with
replacement, within each culture, among the items the aggregates use: the correctly answered ones
under the paper's filter). Per culture it reports the Jaccard overlap ``|A ∩ B| / |A ∪ B|``
between the full selection ``A`` (computed in the same pass and arithmetic) and each
re-selection ``B``, and per neuron the share of bootstrap resamples that selected it.

The **null** is the same procedure with the culture labels permuted across those items (every
culture keeps its size): per null replicate a fresh permutation, its full selection and one
bootstrap inside the permuted cultures, and their Jaccard. It is the overlap to expect when the
labels carry no culture signal, from item sampling noise alone; a selector is culture-stable
where its Jaccard clearly exceeds that level.

Everything comes from the per-item store, no model run. A resample is a weighted sum over items,
so one pass over the store accumulates many resamples at once: per store chunk and culture a
``[resamples, items] @ [items, L·D]`` product (the permuted replicates use a one-hot
``[resamples·C, items]`` matrix, since their labels differ per replicate). The accumulators of
one pass hold ``2 · C · L · D`` float32 per replicate; replicates go in groups that fit
``memory_gb``, one pass per group. The products run in float32 (counts stay exact to 2**24 per
chunk); the selectors get float64 ``P`` and ``M`` as in the select stage.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from culture_neurons.errors import InputError
from culture_neurons.record.aggregate import NORM_STATISTIC, relative_mean, used_items
from culture_neurons.record.store import ActivationStore
from culture_neurons.selection.registry import is_data_driven
from culture_neurons.selection.selectors import budget, method_function
from culture_neurons.statistics import percentile_interval

log = logging.getLogger(__name__)

#: A culture with fewer used items is not resampled (its bootstrap would barely vary): it keeps
#: its full statistics in every replicate and is flagged, with no Jaccard of its own.
MIN_RESAMPLE_ITEMS = 5
# Not "null": pandas reads that word in a CSV as a missing value.
FULL, BOOTSTRAP, NULL_FULL, NULL = "full", "bootstrap", "permuted_full", "permuted"
_PERMUTED = (NULL_FULL, NULL)


@dataclass(frozen=True)
class ResamplePlan:
    """Every replicate of one stability run: its kind, culture label and weight per item.

    ``labels[r, i]`` is item i's culture index in replicate r (-1: not used), ``weights[r, i]``
    its multiplicity. Row 0 is the full data; ``reference[r]`` is the replicate whose selection
    replicate r is compared with (0 for a bootstrap, the permuted full data for a null one).
    """

    cultures: list[str]
    kinds: list[str]
    reference: list[int]
    labels: np.ndarray  # [R, items] int
    weights: np.ndarray  # [R, items] float32
    resampled: np.ndarray  # [C] bool: cultures with enough items to resample
    items_used: np.ndarray  # [C] int

    @property
    def n_replicates(self) -> int:
        return len(self.kinds)


def resample_plan(
    item_cultures: np.ndarray,
    used: np.ndarray,
    cultures: list[str],
    *,
    n_resamples: int,
    null_resamples: int,
    seed: int = 0,
    min_items: int = MIN_RESAMPLE_ITEMS,
) -> ResamplePlan:
    """The full data, ``n_resamples`` bootstraps within each culture and ``null_resamples``
    label permutations over the used items (``item_cultures``: culture index per item)."""
    if n_resamples < 1:
        raise InputError(f"stability.resamples must be at least 1, got {n_resamples}")
    if null_resamples < 0:
        raise InputError(f"stability.null_resamples must be at least 0, got {null_resamples}")
    item_cultures = np.asarray(item_cultures)
    used = np.asarray(used, dtype=bool)
    n_items = len(item_cultures)
    true_labels = np.where(used, item_cultures, -1)
    items_used = np.bincount(item_cultures[used], minlength=len(cultures))
    resampled = items_used >= min_items
    rng = np.random.default_rng(seed)
    labels, weights, kinds, reference = [true_labels], [used.astype(np.float32)], [FULL], [0]

    def bootstrap(of_labels: np.ndarray) -> np.ndarray:
        w = used.astype(np.float32)
        for c in range(len(cultures)):
            idx = np.flatnonzero(of_labels == c)
            if resampled[c]:
                w[idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)))
        return w

    for _ in range(n_resamples):
        labels.append(true_labels)
        weights.append(bootstrap(true_labels))
        kinds.append(BOOTSTRAP)
        reference.append(0)
    used_idx = np.flatnonzero(used)
    for _ in range(null_resamples):
        permuted = true_labels.copy()
        permuted[used_idx] = rng.permutation(true_labels[used_idx])
        # The permuted full data right before its bootstrap, so both share one pass mostly.
        labels += [permuted, permuted]
        weights += [used.astype(np.float32), bootstrap(permuted)]
        kinds += [NULL_FULL, NULL]
        reference += [len(kinds) - 2, len(kinds) - 2]
    return ResamplePlan(
        list(cultures),
        kinds,
        reference,
        np.stack(labels).reshape(len(kinds), n_items),
        np.stack(weights).reshape(len(kinds), n_items),
        resampled,
        items_used,
    )


def replicate_group_size(n_cultures: int, n_cells: int, memory_gb: float) -> int:
    """Replicates whose two float32 ``[C, L·D]`` accumulators fit ``memory_gb`` (at least 1)."""
    if memory_gb <= 0:
        raise InputError(f"stability.memory_gb must be positive, got {memory_gb}")
    per_replicate = 2 * n_cultures * n_cells * 4
    return max(1, int(memory_gb * 2**30 // per_replicate))


def accumulate(
    store: ActivationStore, plan: ResamplePlan, replicates: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the store: per listed replicate the per-culture sums ``fire_count``,
    ``pos_sum`` (float32 ``[R, C, L, D]``) and ``tokens`` (float64 ``[R, C]``)."""
    group = store.group
    _, n_layers, n_neurons = group["fire_count"].shape
    n_cultures, cells = len(plan.cultures), n_layers * n_neurons
    fire = np.zeros((len(replicates), n_cultures, cells), dtype=np.float32)
    pos = np.zeros_like(fire)
    tokens_per_item = group["tokens"][:].astype(np.float64)
    tokens = np.zeros((len(replicates), n_cultures))
    fixed = [k for k, r in enumerate(replicates) if plan.kinds[r] not in _PERMUTED]
    permuted = [k for k, r in enumerate(replicates) if plan.kinds[r] in _PERMUTED]
    for k, r in enumerate(replicates):
        ok = plan.labels[r] >= 0
        tokens[k] = np.bincount(
            plan.labels[r][ok], weights=plan.weights[r][ok] * tokens_per_item[ok],
            minlength=n_cultures,
        )  # fmt: skip
    # Fixed-label replicates share the true labels; take them from the first one.
    true_labels = plan.labels[replicates[fixed[0]]] if fixed else None
    fixed_weights = plan.weights[[replicates[k] for k in fixed]]
    chosen = [replicates[k] for k in permuted]
    permuted_labels, permuted_weights = plan.labels[chosen], plan.weights[chosen]
    any_used = (plan.labels[replicates] >= 0).any(axis=0)
    for chunk in tqdm(range(store.n_chunks), desc="stability pass", unit="chunk", leave=False):
        rows = store.chunk_slice(chunk)
        if not any_used[rows].any():
            continue
        counts, sums = store.checked_rows(chunk)
        counts = counts.reshape(rows.stop - rows.start, cells)
        sums = sums.reshape(rows.stop - rows.start, cells)
        counts = counts.astype(np.float32)
        if fixed:
            chunk_labels = true_labels[rows]
            w = fixed_weights[:, rows]
            for c in np.unique(chunk_labels[chunk_labels >= 0]):
                mine = chunk_labels == c
                fire[fixed, c] += w[:, mine] @ counts[mine]
                pos[fixed, c] += w[:, mine] @ sums[mine]
        if permuted:
            chunk_labels = permuted_labels[:, rows]
            onehot = chunk_labels[:, None, :] == np.arange(n_cultures)[None, :, None]
            weighted = (onehot * permuted_weights[:, None, rows]).astype(np.float32)
            # One replicate at a time: a single [R·C, items] product would need a temporary as
            # large as the accumulators, and measured slower.
            for j, k in enumerate(permuted):
                fire[k] += weighted[j] @ counts
                pos[k] += weighted[j] @ sums
    shape = (len(replicates), n_cultures, n_layers, n_neurons)
    return fire.reshape(shape), pos.reshape(shape), tokens


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row (culture) of two bool ``[C, L, D]`` masks: ``|a ∩ b| / |a ∪ b|``, NaN where both
    are empty."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    union = (a | b).sum(axis=1)
    inter = (a & b).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


@dataclass
class StabilityResult:
    """Per-replicate Jaccards (long table), their summary, selection frequencies, and the
    full-data selection every bootstrap Jaccard is measured against."""

    jaccards: pd.DataFrame
    summary: pd.DataFrame
    frequency: dict[str, np.ndarray]  # selector -> [C, L, D] float32 share of bootstraps
    cultures: list[str]
    # selector -> bool [C, L, D]: the re-selection on all used items (replicate 0); it must be
    # the select stage's mask, or every Jaccard measures the wrong reference.
    full: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _selectable(
    selectors: Mapping[str, Mapping[str, Any]],
) -> dict[str, tuple[Any, dict[str, Any]]]:
    chosen = {}
    for name, entry in selectors.items():
        params = dict(entry)
        method = str(params.pop("method", name.split("-")[0]))
        try:
            # RND and the controls (rnd_matched) have no statistics of their own to resample;
            # the attribution selectors score another store (not resampled here).
            if not is_data_driven(method):
                continue
            chosen[name] = (method_function(method, params), params)
        except ValueError as err:
            raise InputError(f"selector {name!r}: {err}") from err
    if not chosen:
        raise InputError(
            "stability needs at least one data-driven, culture-specific selector (e.g. cas); "
            f"got {sorted(selectors)}"
        )
    return chosen


def stability(
    store: ActivationStore,
    selectors: Mapping[str, Mapping[str, Any]],
    *,
    ratio: float,
    only_correct: bool = True,
    n_resamples: int = 50,
    null_resamples: int = 10,
    seed: int = 0,
    min_items: int = MIN_RESAMPLE_ITEMS,
    memory_gb: float = 1.5,
) -> StabilityResult:
    """Re-select with every data-driven selector instance of ``selectors`` (name -> params with
    ``method``) on the full data, the bootstrap resamples and the permutation null."""
    chosen = _selectable(selectors)
    group = store.group
    norm_valued = group.attrs.get("statistic") == NORM_STATISTIC
    # The select stage's own filter, so the full replicate is its aggregate.
    cultures, item_cultures, used, _ = used_items(store, only_correct=only_correct)
    plan = resample_plan(
        item_cultures, used, cultures, n_resamples=n_resamples, null_resamples=null_resamples,
        seed=seed, min_items=min_items,
    )  # fmt: skip
    scorable = plan.items_used > 0
    if scorable.sum() < 2:
        raise InputError(
            f"only {int(scorable.sum())} culture(s) have used items; stability needs two"
        )
    _, n_layers, n_neurons = group["fire_count"].shape
    k = budget(ratio, n_layers, n_neurons)
    size = replicate_group_size(len(cultures), n_layers * n_neurons, memory_gb)
    passes = math.ceil(plan.n_replicates / size)
    log.info(
        "stability: %d replicates (%d bootstrap, %d null) in %d pass(es) of up to %d; %s",
        plan.n_replicates, n_resamples, null_resamples, passes, size, ", ".join(chosen),
    )  # fmt: skip
    references: dict[tuple[int, str], np.ndarray] = {}
    counts_dtype = np.uint8 if n_resamples < 256 else np.uint16
    frequency = {
        name: np.zeros((len(cultures), n_layers, n_neurons), dtype=counts_dtype) for name in chosen
    }
    rows = []
    seconds = {"accumulate_s": 0.0, "select_s": 0.0}
    for start in tqdm(range(0, plan.n_replicates, size), desc="stability", unit="pass"):
        replicates = list(range(start, min(start + size, plan.n_replicates)))
        t0 = time.perf_counter()
        fire, pos, tokens = accumulate(store, plan, replicates)
        seconds["accumulate_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for j, r in enumerate(replicates):
            t = tokens[j, scorable]
            M = np.divide(pos[j, scorable], t[:, None, None], dtype=np.float64)
            if norm_valued:  # the select stage's P of norm-valued units (attention heads)
                P = relative_mean(pos[j, scorable], t)
            else:
                P = np.divide(fire[j, scorable], t[:, None, None], dtype=np.float64)
                np.clip(P, 0.0, 1.0, out=P)  # float32 sums of exact counts: rounding above 1
            for name, (fn, params) in chosen.items():
                mask = np.zeros((len(cultures), n_layers, n_neurons), dtype=bool)
                mask[scorable] = fn(P, M, k, **params)
                if plan.kinds[r] in (FULL, NULL_FULL):
                    references[(r, name)] = mask
                    continue
                if plan.kinds[r] == BOOTSTRAP:
                    frequency[name] += mask
                overlap = jaccard(references[(plan.reference[r], name)], mask)
                if plan.kinds[r] == NULL:
                    del references[(plan.reference[r], name)]
                for c, culture in enumerate(cultures):
                    rows.append((name, culture, plan.kinds[r], r, overlap[c]))
        seconds["select_s"] += time.perf_counter() - t0
        del fire, pos
    jaccards = pd.DataFrame(rows, columns=["selector", "culture", "kind", "replicate", "jaccard"])
    summary = summarize(jaccards, plan)
    shares = {name: (f / n_resamples).astype(np.float32) for name, f in frequency.items()}
    full = {name: references[(0, name)] for name in chosen}
    return StabilityResult(jaccards, summary, shares, cultures, full=full, seconds=seconds)


def summarize(jaccards: pd.DataFrame, plan: ResamplePlan) -> pd.DataFrame:
    """Per selector, culture and kind: mean Jaccard and its 95% percentile interval over the
    replicates; cultures without enough items to resample are flagged with NaN values."""
    out = []
    for (selector, culture, kind), values in jaccards.groupby(
        ["selector", "culture", "kind"], sort=True
    )["jaccard"]:
        c = plan.cultures.index(culture)
        flag = ""
        if plan.items_used[c] == 0:
            flag = "no used items: empty selection"
        elif not plan.resampled[c]:
            flag = f"only {plan.items_used[c]} used items: not resampled"
        v = values.dropna().to_numpy()
        if flag or v.size == 0:
            mean = lo = hi = np.nan
            flag = flag or "empty selections"
        else:
            mean, (lo, hi) = float(v.mean()), percentile_interval(v)
        out.append(
            (selector, culture, kind, mean, lo, hi, int(values.size), int(plan.items_used[c]),
             flag)
        )  # fmt: skip
    return pd.DataFrame(
        out,
        columns=["selector", "culture", "kind", "mean", "lo", "hi", "n_replicates", "items_used",
                 "flag"],
    )  # fmt: skip
