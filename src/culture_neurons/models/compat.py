"""Every torch/transformers-version workaround of the package, each with the versions it serves.

The rest of the code asks this module instead of testing versions itself, so dropping support for
an old release means deleting its branch here (and nothing else).
"""

from __future__ import annotations

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
