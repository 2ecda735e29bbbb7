"""Model family name -> adapter class, resolved lazily like transformers' Auto mappings."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from culture_neurons.errors import InputError
from culture_neurons.selection.conventions import DECODER_MLP

from .base import ModelAdapter
from .spec import AdapterSpec, model_spec_from_config

ADAPTERS: dict[str, str] = {
    "qwen2_5_vl": "culture_neurons.models.qwen2_5_vl:Qwen2_5_VLAdapter",
    "llava_next": "culture_neurons.models.llava_next:LlavaNextAdapter",
    "pangea": "culture_neurons.models.pangea:PangeaAdapter",
    "generic": "culture_neurons.models.generic:GenericAdapter",
}


def families() -> list[str]:
    return sorted(ADAPTERS)


def get_adapter(family: str) -> type[ModelAdapter]:
    """The adapter class of a model family."""
    try:
        target = ADAPTERS[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {families()}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def load_adapter(spec: Mapping[str, Any] | AdapterSpec) -> ModelAdapter:
    """Load model and processor as `spec` says (keys: see `AdapterSpec`) and wrap them."""
    spec = AdapterSpec.from_mapping(spec)
    return get_adapter(spec.family).from_spec(spec)


def load_adapter_for_masks(
    entry: Mapping[str, Any], mask_shape: tuple[int, ...], site: str = DECODER_MLP
) -> ModelAdapter:
    """The adapter of a workflow model ``entry``, refusing masks (``[..., layers, units]``)
    made for another model or site before any item is answered."""
    adapter = load_adapter(model_spec_from_config(entry))
    if site == DECODER_MLP:
        shape, units = (adapter.n_layers, adapter.n_neurons), "decoder-MLP neurons"
    else:
        from .sites import site_shape  # sites imports the adapters this module loads

        found = site_shape(adapter, site)
        shape, units = (found.n_layers, found.n_units), f"{site} units"
    if tuple(mask_shape[-2:]) != shape:
        raise InputError(
            f"mask shape {tuple(mask_shape[-2:])} does not fit the model's "
            f"{shape[0]} x {shape[1]} {units}"
        )
    return adapter
