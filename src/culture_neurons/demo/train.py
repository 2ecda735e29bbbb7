"""Whether the trained demo VLM answers above chance (the train-demo stage's check): a one-sided
binomial test of its evaluation accuracy against guessing among four options."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

CHANCE = 0.25  # four options
ABOVE_CHANCE_P = 0.01  # one-sided binomial test of the evaluation accuracy against CHANCE


def chance_p_value(correct: int, items: int, chance: float = CHANCE) -> float:
    """P(X >= correct) for X ~ Binomial(items, chance): how likely guessing does this well."""
    if not 0 <= correct <= items:
        raise ValueError(f"correct ({correct}) must lie in 0..items ({items})")
    # In log space: math.comb of a few thousand items no longer fits a float.
    log_terms = (
        math.lgamma(items + 1) - math.lgamma(k + 1) - math.lgamma(items - k + 1)
        + k * math.log(chance) + (items - k) * math.log1p(-chance)
        for k in range(correct, items + 1)
    )  # fmt: skip
    return min(1.0, math.fsum(math.exp(t) for t in log_terms))
