"""CULNIG's attribution selectors over the attribution store's aggregates (pure functions).

- ``attr`` (culture-specific): per culture, the neurons with the highest
  ``S[c] = cultural mean[c] - control mean``, keeping those whose z-score of ``S`` across cultures
  is at least ``z_threshold`` and that are not in the culture's exclusion set.
- ``attr_general`` (culture-general): one mask for every culture, the neurons with the highest
  ``sum over cultures of S[c]``, minus the general exclusion set.

As in CULNIG's code, the filters apply AFTER the top of the ranking is taken: a mask at
budget ``k`` is the top ``k`` by score minus the filtered neurons, so it can hold fewer than
``k``. The rankings therefore number every neuron by its place in the score order and mark the
filtered ones -1 (their ranks have gaps), which keeps the masks nested across budgets.

The exclusion set of culture ``c`` is the top ``exclusion_ratio`` of all neurons by the exclusion
task's mean score for ``c`` (CULNIG: a country reading-comprehension task; its neurons read
country names in context instead of holding cultural knowledge); the general set is the top
``exclusion_ratio`` by that score summed over cultures. A culture without exclusion items (its
row NaN) has an empty exclusion set and adds nothing to the sum.
"""

from __future__ import annotations

import numpy as np

from culture_neurons.selection.conventions import NOT_RANKED
from culture_neurons.selection.registry import (
    ATTRIBUTION_SCORES,
    SelectorSpec,
    check_params,
    register,
    spec,
)


def culture_scores(cultural: np.ndarray, control: np.ndarray | None = None) -> np.ndarray:
    """``S [C, L, D]``: each culture's mean score minus the control task's (when given)."""
    cultural = np.asarray(cultural, dtype=np.float64)
    if cultural.ndim != 3:
        raise ValueError(f"cultural scores must be [C, L, D], got shape {cultural.shape}")
    if control is None:
        return cultural
    control = np.asarray(control, dtype=np.float64)
    if control.shape != cultural.shape[1:]:
        raise ValueError(f"control scores {control.shape} do not match {cultural.shape[1:]}")
    return cultural - control[None]


def zscores(scores: np.ndarray) -> np.ndarray:
    """Each neuron's z-score of its per-culture scores across cultures (population standard
    deviation, as CULNIG); 0 where the scores are equal in every culture."""
    mean = scores.mean(axis=0, keepdims=True)
    std = scores.std(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (scores - mean) / std
    return np.where(std > 0, z, 0.0)


def top_share(scores: np.ndarray, share: float) -> np.ndarray:
    """Bool, same shape as ``scores`` (``[..., L, D]``): each row's top ``share`` of its
    ``L * D`` neurons (``int(share * L * D)`` of them; ties by position). A NaN row (a culture
    with no items) selects nothing."""
    scores = np.asarray(scores, dtype=np.float64)
    flat = scores.reshape(-1, scores.shape[-2] * scores.shape[-1])
    k = int(share * flat.shape[1])
    out = np.zeros(flat.shape, dtype=bool)
    if k:
        order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
        np.put_along_axis(out, order, True, axis=1)
    return (out & ~np.isnan(flat)).reshape(scores.shape)


def _places(scores: np.ndarray) -> np.ndarray:
    """Each row's place of every neuron in descending score order (0 = highest; ties by
    position): int32, same shape."""
    flat = scores.reshape(scores.shape[0], -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    places = np.empty(flat.shape, dtype=np.int32)
    np.put_along_axis(places, order, np.arange(flat.shape[1], dtype=np.int32)[None], axis=1)
    return places.reshape(scores.shape)


def rank_attr(
    scores: np.ndarray,
    *,
    z_threshold: float = 0.5,
    excluded: np.ndarray | None = None,
) -> np.ndarray:
    """Culture-specific ranking ``[C, L, D]`` of ``scores`` (`culture_scores`): the place in
    each culture's score order, -1 where the z-score is below ``z_threshold`` or the neuron is
    in ``excluded`` (bool ``[C, L, D]``)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 3 or scores.shape[0] < 2:
        raise ValueError(f"attr compares cultures: needs [C>=2, L, D], got {scores.shape}")
    ranks = _places(scores)
    dropped = zscores(scores) < z_threshold
    if excluded is not None:
        dropped |= _checked_mask(excluded, scores.shape)
    ranks[dropped] = NOT_RANKED
    return ranks


def rank_attr_general(scores: np.ndarray, *, excluded: np.ndarray | None = None) -> np.ndarray:
    """Culture-general ranking ``[1, L, D]``: the place by ``scores`` summed over cultures, -1
    for neurons in ``excluded`` (bool ``[L, D]``)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 3:
        raise ValueError(f"scores must be [C, L, D], got shape {scores.shape}")
    ranks = _places(scores.sum(axis=0, keepdims=True))
    if excluded is not None:
        ranks[0][_checked_mask(excluded, scores.shape[1:])] = NOT_RANKED
    return ranks


def _checked_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != shape:
        raise ValueError(f"exclusion mask must be bool {shape}, got {mask.dtype} {mask.shape}")
    return mask


def attribution_ranks(
    method: str,
    cultural: np.ndarray,
    *,
    control: np.ndarray | None = None,
    exclusion: np.ndarray | None = None,
    **params: object,
) -> np.ndarray:
    """The ranking of ``method`` from the store's aggregates: ``cultural`` ``[C, L, D]``,
    ``control`` ``[L, D]`` or None (no control task: no subtraction), ``exclusion``
    ``[C, L, D]`` or None (no exclusion task: nothing excluded)."""
    entry = spec(method)
    if entry.inputs != ATTRIBUTION_SCORES:
        raise ValueError(f"{method!r} is not an attribution selector ({entry.inputs})")
    values = check_params(method, dict(params))
    return entry.rank(cultural, control, exclusion, **values)


def _rank_attr_aggregates(
    cultural: np.ndarray,
    control: np.ndarray | None,
    exclusion: np.ndarray | None,
    *,
    z_threshold: float = 0.5,
    exclusion_ratio: float = 0.01,
) -> np.ndarray:
    scores = culture_scores(cultural, control)
    excluded = None if exclusion is None else top_share(exclusion, exclusion_ratio)
    return rank_attr(scores, z_threshold=z_threshold, excluded=excluded)


def _rank_attr_general_aggregates(
    cultural: np.ndarray,
    control: np.ndarray | None,
    exclusion: np.ndarray | None,
    *,
    exclusion_ratio: float = 0.01,
) -> np.ndarray:
    scores = culture_scores(cultural, control)
    excluded = None
    if exclusion is not None:
        scored = ~np.isnan(np.asarray(exclusion)).all(axis=(1, 2))  # cultures with items
        if scored.any():
            excluded = top_share(np.sum(np.asarray(exclusion)[scored], axis=0), exclusion_ratio)
    return rank_attr_general(scores, excluded=excluded)


# -- the registry entries (defaults: CULNIG's values, ynklab/CULNIG) -----------------------------
register(
    SelectorSpec(
        "attr",
        ATTRIBUTION_SCORES,
        _rank_attr_aggregates,
        {"z_threshold": 0.5, "exclusion_ratio": 0.01},
    )
)
register(
    SelectorSpec(
        "attr_general",
        ATTRIBUTION_SCORES,
        _rank_attr_general_aggregates,
        {"exclusion_ratio": 0.01},
        culture_independent=True,
    )
)
