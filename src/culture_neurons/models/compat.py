"""Every torch/transformers-version workaround of the package, each with the versions it serves.

The rest of the code asks this module instead of testing versions itself, so dropping support for
an old release means deleting its branch here (and nothing else). One workaround is a whole class
and stays with its family: `qwen_processing.QwenVLImageProcessorStandIn`, used where transformers
5's Qwen processor cannot load without torchvision.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
import transformers
from packaging.version import Version
from torch import nn

# torch < 2.5 has only the CUDA spelling of the out-of-memory error.
OutOfMemoryError: type[Exception] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# transformers 4.56 renamed `torch_dtype=` to `dtype=`; older releases pass an unknown `dtype=` on
# to the config and silently load float32, so the name has to follow the installed version.
DTYPE_KWARG = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"


def cache_argument(decoder: nn.Module, cache: Any) -> dict[str, Any]:
    """The KV cache as ``decoder``'s forward names it: ``cache`` from transformers 5.25 on
    (where ``past_key_values`` is deprecated), ``past_key_values`` before."""
    parameters = inspect.signature(decoder.forward).parameters
    return {"cache" if "cache" in parameters else "past_key_values": cache}


def cache_layers(cache: Any) -> list[Any]:
    """The per-layer objects of a `DynamicCache` (transformers >= 4.54); an older cache keeps
    plain tensor lists and has none, so nothing in it is replaced."""
    return list(getattr(cache, "layers", []))


def recorded_commit(model: Any) -> str | None:
    """The hub commit transformers < 5 records on a loaded model's config (``_commit_hash``);
    None from transformers 5 on, which no longer records it."""
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return str(commit) if commit else None


def set_pixel_bounds(image_processor: Any, min_pixels: int, max_pixels: int) -> None:
    """Qwen2-VL-style image processors' area bounds, in place: transformers 5 keeps them in a
    `SizeDict` dataclass, 4.x in a ``size`` dict (older releases spelled its keys ``min_pixels``
    / ``max_pixels``) and also as attributes that ``preprocess()`` read."""
    size = getattr(image_processor, "size", None)
    if size is None or isinstance(size, dict):
        new = {**(size or {}), "shortest_edge": min_pixels, "longest_edge": max_pixels}
        if "min_pixels" in new or "max_pixels" in new:  # an older spelling of the same bounds
            new.update(min_pixels=min_pixels, max_pixels=max_pixels)
        image_processor.size = new
    else:  # transformers 5: a SizeDict dataclass
        image_processor.size = dataclasses.replace(
            size, shortest_edge=min_pixels, longest_edge=max_pixels
        )
    # transformers 4.x kept the bounds as attributes too and read them in preprocess().
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if getattr(image_processor, name, None) is not None:
            setattr(image_processor, name, value)
