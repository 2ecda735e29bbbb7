"""Model family name -> adapter class, resolved lazily like transformers' Auto mappings."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from .base import ModelAdapter
from .spec import AdapterSpec

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
