"""`from_pretrained` plumbing shared by every adapter (version differences: `compat`)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import transformers

from .compat import DTYPE_KWARG, recorded_commit
from .gpus import job_placement
from .spec import AdapterSpec

_COMMIT = re.compile(r"[0-9a-f]{40}")


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


def model_provenance(spec: AdapterSpec, model: Any = None) -> dict[str, str | None]:
    """Which model answered: its path, the revision the config asked for ("main") and the hub
    commit its files were read from (None for a folder outside the hub cache). Written into the
    stores' attributes and the answer tables (`pandas.DataFrame.attrs`, kept by parquet)."""
    return {
        "model_path": str(spec.path),
        "revision": spec.requested_revision or spec.revision,
        "commit": loaded_commit(spec, model),
    }


def loaded_commit(spec: AdapterSpec, model: Any = None) -> str | None:
    """The hub commit a model's files were read from; None for a folder outside the hub cache.

    transformers < 5 records it as ``config._commit_hash``; later releases do not, so it is looked
    up where `from_pretrained` found the files: the cache snapshot of ``spec.revision`` (offline,
    no hub call), or a local path that is itself a snapshot folder.
    """
    commit = recorded_commit(model)
    if commit:
        return commit
    local = Path(spec.path)
    if local.exists():
        return local.resolve().name if _is_snapshot(local.resolve()) else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec.path, "config.json", revision=spec.revision)
    if isinstance(cached, str) and _is_snapshot(Path(cached).parent):
        return Path(cached).parent.name
    return None


def _is_snapshot(folder: Path) -> bool:
    return folder.parent.name == "snapshots" and bool(_COMMIT.fullmatch(folder.name))
