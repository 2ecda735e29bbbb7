"""Mask stores: ``selected[culture, layer, neuron]`` (bool) per selector, Zarr v3.

A culture-independent selector (``rnd``) stores one row under the source name ``ALL``. The
culture names are the ``culture`` array and ``layer``/``neuron`` hold ``0..n-1``: named like
their dimensions, xarray opens them as index coordinates (``selected.sel(culture="X")``).
Stores written before this layout name the cultures ``cultures``; :func:`read_masks` reads both.

A selector with a ranking also stores ``rank[culture, layer, neuron]`` (int32, 0 = best, -1 = not
a candidate): the masks at any other ratio are its top ``budget(ratio, L, D)`` (`masks_at_ratio`),
nested by construction. ``selected`` is the top k at the store's own ``ratio``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from culture_neurons.errors import InputError
from culture_neurons.record.store import write_index_coords
from culture_neurons.selection.conventions import ALL_CULTURES  # noqa: F401 (re-exported)
from culture_neurons.selection.selectors import budget, mask_from_ranks


def write_masks(
    path: str | Path,
    selected: np.ndarray,
    cultures: list[str],
    attrs: dict[str, Any],
    *,
    ranks: np.ndarray | None = None,
) -> None:
    if selected.dtype != bool or selected.ndim != 3 or selected.shape[0] != len(cultures):
        raise ValueError(f"selected must be bool [cultures={len(cultures)}, L, D]")
    if ranks is not None and (ranks.shape != selected.shape or ranks.dtype.kind not in "iu"):
        raise ValueError(f"ranks must be an integer array of shape {selected.shape}")
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = group.create_array(
        "selected",
        shape=selected.shape,
        chunks=(1, *selected.shape[1:]),
        dtype=bool,
        dimension_names=["culture", "layer", "neuron"],
    )
    array[:] = selected
    if ranks is not None:
        ranked = group.create_array(
            "rank",
            shape=ranks.shape,
            chunks=(1, *ranks.shape[1:]),
            dtype=np.int32,
            dimension_names=["culture", "layer", "neuron"],
        )
        ranked[:] = ranks.astype(np.int32, copy=False)
    names = group.create_array(
        "culture", shape=(len(cultures),), dtype=str, dimension_names=["culture"]
    )
    names[:] = np.asarray(cultures, dtype=str)
    write_index_coords(group, layer=selected.shape[1], neuron=selected.shape[2])
    group.attrs.update(attrs)


def read_masks(path: str | Path) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    group = zarr.open_group(str(path), mode="r")
    # Mask stores of earlier runs keep their names in "cultures" and must stay readable.
    names = group["culture"] if "culture" in group else group["cultures"]
    return group["selected"][:], [str(c) for c in names[:]], dict(group.attrs)


def read_ranks(path: str | Path) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """The ranking of a mask store (int32 ``[C, L, D]``), its cultures and attributes."""
    group = zarr.open_group(str(path), mode="r")
    if "rank" not in group:
        raise InputError(
            f"mask store {path} holds no ranking (written before ratio sweeps, or by a selector "
            "without one): rerun its select job (delete the store) to sweep ratios"
        )
    names = group["culture"] if "culture" in group else group["cultures"]
    return group["rank"][:], [str(c) for c in names[:]], dict(group.attrs)


def masks_at_ratio(ranks: np.ndarray, ratio: float) -> np.ndarray:
    """Bool masks: each row's top ``budget(ratio, L, D)`` of the ranking ``ranks`` ``[M, L, D]``."""
    ranks = np.asarray(ranks)
    return mask_from_ranks(ranks, budget(ratio, *ranks.shape[1:]))


def keep_masks(selected: np.ndarray, sources: list[str], cultures: list[str]) -> torch.Tensor:
    """[M, L, D] float keep masks (1 keep, 0 deactivate) for the named source cultures."""
    missing = [s for s in sources if s not in cultures]
    if missing:
        raise InputError(f"no mask for source culture(s) {missing}; the mask has {cultures}")
    rows = [cultures.index(s) for s in sources]
    return torch.from_numpy(~selected[rows]).float()
