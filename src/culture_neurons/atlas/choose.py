"""Which neurons the atlas shows: the top of each selector's ranking, per culture."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from culture_neurons.errors import InputError


@dataclass(frozen=True)
class Choice:
    """One neuron chosen by one selector for one culture; ``rank`` 0 is the selector's best."""

    selector: str
    culture: str
    rank: int
    layer: int
    neuron: int


def top_of_ranking(selector: str, ranks: np.ndarray, cultures: list[str], n: int) -> list[Choice]:
    """The ``n`` best-ranked neurons of each culture of one selector's ``rank[C, L, D]`` (0 best,
    -1 not a candidate); a culture with fewer candidates gives all of them."""
    if ranks.ndim != 3 or ranks.shape[0] != len(cultures):
        raise InputError(
            f"selector {selector}: rank of shape {ranks.shape} does not match its "
            f"{len(cultures)} cultures"
        )
    if n < 1:
        raise InputError(f"neurons per culture must be at least 1, got {n}")
    n_neurons = ranks.shape[2]
    chosen = []
    for row, culture in zip(ranks, cultures, strict=True):
        flat = row.ravel()
        candidates = np.flatnonzero(flat >= 0)
        # Ranks are unique per culture; the stable sort keeps ties (if any) in neuron order.
        best = candidates[np.argsort(flat[candidates], kind="stable")[:n]]
        chosen += [
            Choice(selector, culture, int(k), int(cell // n_neurons), int(cell % n_neurons))
            for k, cell in enumerate(best)
        ]
    return chosen


def chosen_neurons(choices: list[Choice]) -> list[tuple[int, int]]:
    """The distinct (layer, neuron) pairs of ``choices``, sorted: the atlas's neurons."""
    return sorted({(c.layer, c.neuron) for c in choices})


def choices_by_neuron(choices: list[Choice]) -> Mapping[tuple[int, int], list[Choice]]:
    """(layer, neuron) -> the choices that name it, by selector then rank."""
    grouped: dict[tuple[int, int], list[Choice]] = {}
    for choice in sorted(choices, key=lambda c: (c.selector, c.rank, c.culture)):
        grouped.setdefault((choice.layer, choice.neuron), []).append(choice)
    return grouped
