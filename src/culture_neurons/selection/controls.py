"""Controls derived from another selector's masks (not from the activation statistics).

``rnd_matched`` (appendix B.2.1's layer-matched random baseline, which the paper probed but did not
report): for every source culture, a random mask with exactly the reference mask's number of
neurons in each layer, drawn uniformly within the layer. It keeps the reference's layer profile and
drops everything else the reference knows, so a self-cross gap that survives it is not explained
by *where* in the network the reference's neurons sit.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

#: Control method -> the parameter naming the selector instance it is derived from.
CONTROL_METHODS: dict[str, str] = {"rnd_matched": "reference"}


def is_control(method: str) -> bool:
    """Whether ``method`` is derived from a reference selector's masks."""
    return method in CONTROL_METHODS


def _culture_rng(seed: int, culture: str) -> np.random.Generator:
    # Seeded by the culture's name, not its row: a culture's mask does not depend on which other
    # cultures the store holds. crc32 because str hashes change between interpreter runs.
    return np.random.default_rng([seed, zlib.crc32(culture.encode("utf-8"))])


def layer_matched_random(
    reference: np.ndarray, cultures: Sequence[str], *, seed: int = 0
) -> np.ndarray:
    """Bool ``[C, L, D]``: per culture row of ``reference`` and per layer, as many neurons as the
    reference selects there, uniformly at random within that layer (without replacement).

    A culture whose reference mask is empty gets an empty mask.
    """
    reference = np.asarray(reference)
    if reference.dtype != bool or reference.ndim != 3:
        raise ValueError(f"reference must be a bool [C, L, D] mask, got {reference.dtype}")
    if reference.shape[0] != len(cultures):
        raise ValueError(f"{len(cultures)} culture names for {reference.shape[0]} mask rows")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"rnd_matched: seed must be a non-negative integer, got {seed!r}")
    n_cultures, n_layers, n_neurons = reference.shape
    counts = reference.sum(axis=2)
    out = np.zeros_like(reference)
    for c, culture in enumerate(cultures):
        rng = _culture_rng(int(seed), str(culture))
        for layer in range(n_layers):
            k = int(counts[c, layer])
            if k:
                out[c, layer, rng.choice(n_neurons, size=k, replace=False)] = True
    return out
