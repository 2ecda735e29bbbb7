"""`from_pretrained` plumbing shared by every adapter, across transformers versions."""

from __future__ import annotations

import importlib
from typing import Any

import transformers
from packaging.version import Version

from .gpus import job_placement
from .spec import AdapterSpec

# transformers 4.56 renamed `torch_dtype=` to `dtype=`; older releases pass an unknown `dtype=` on
# to the config and silently load float32, so the name has to follow the installed version.
DTYPE_KWARG = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"


def resolve_class(name: str) -> type:
    """A transformers class name ("Qwen2ForCausalLM") or a dotted path ("pkg.module.Class")."""
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        return getattr(importlib.import_module(module_name), attr)
    try:
        return getattr(transformers, name)
    except AttributeError:
        raise ValueError(f"transformers {transformers.__version__} has no class {name!r}") from None


def hub_kwargs(spec: AdapterSpec) -> dict[str, Any]:
    """Keywords that every `from_pretrained` call of one model shares (model, processor, files)."""
    return {"revision": spec.revision} if spec.revision else {}


def model_kwargs(spec: AdapterSpec) -> dict[str, Any]:
    kwargs = hub_kwargs(spec)
    kwargs[DTYPE_KWARG] = spec.torch_dtype
    # A workflow model entry's `gpus` spreads the model over the GPUs its job holds (gpus.py).
    kwargs.update(job_placement(spec.device_map, spec.gpus, model=spec.path))
    return kwargs
