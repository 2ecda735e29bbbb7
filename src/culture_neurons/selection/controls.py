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

from culture_neurons.selection.conventions import NOT_RANKED
from culture_neurons.selection.registry import (
    REFERENCE_MASKS,
    REQUIRED,
    SelectorSpec,
    is_control,  # noqa: F401 (re-exported for the callers of this module)
    register,
)

#: The parameter naming the selector instance a control is derived from.
REFERENCE = "reference"


def _culture_rng(seed: int, culture: str) -> np.random.Generator:
    # Seeded by the culture's name, not its row: a culture's mask does not depend on which other
    # cultures the store holds. crc32 because str hashes change between interpreter runs.
    return np.random.default_rng([seed, zlib.crc32(culture.encode("utf-8"))])


def layer_matched_random_ranks(
    reference_ranks: np.ndarray, cultures: Sequence[str], *, seed: int = 0
) -> np.ndarray:
    """Int32 ``[C, L, D]`` ranking (-1 = not ranked) whose top k has, for every k, per culture
    and layer exactly as many neurons as the reference ranking's top k, drawn uniformly within
    the layer.

    Per culture and layer a permutation of the layer's neurons is drawn (for every layer, so the
    draws do not depend on the reference's counts); its j-th neuron takes the j-th smallest
    reference rank in that layer. So the masks at every ratio are nested and layer-matched, and
    at the reference's own budget they are the layer-matched random mask. A culture whose
    reference ranks nothing gets no ranks.
    """
    reference_ranks = np.asarray(reference_ranks)
    if reference_ranks.dtype.kind not in "iu" or reference_ranks.ndim != 3:
        raise ValueError(
            f"reference ranks must be an integer [C, L, D] array, got {reference_ranks.dtype} "
            f"of shape {reference_ranks.shape}"
        )
    if reference_ranks.shape[0] != len(cultures):
        raise ValueError(f"{len(cultures)} culture names for {reference_ranks.shape[0]} mask rows")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"rnd_matched: seed must be a non-negative integer, got {seed!r}")
    n_cultures, n_layers, n_neurons = reference_ranks.shape
    out = np.full(reference_ranks.shape, NOT_RANKED, dtype=np.int32)
    for c, culture in enumerate(cultures):
        rng = _culture_rng(int(seed), str(culture))
        for layer in range(n_layers):
            order = rng.permutation(n_neurons)
            layer_ranks = reference_ranks[c, layer]
            ranked = np.sort(layer_ranks[layer_ranks >= 0])
            out[c, layer, order[: ranked.size]] = ranked
    return out


RND_MATCHED = register(
    SelectorSpec(
        "rnd_matched",
        REFERENCE_MASKS,
        layer_matched_random_ranks,
        {REFERENCE: REQUIRED, "seed": 0},
        reference=REFERENCE,
    )
)
