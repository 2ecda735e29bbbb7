"""The model entry of the workflow config: which family, which weights, how to load them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from culture_neurons.data.download import read_record

TOKEN_SCOPES: tuple[str, ...] = ("all", "text", "image")
IMAGE_MODES: tuple[str, ...] = ("use", "drop")

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


@dataclass(frozen=True)
class AdapterSpec:
    """What `load_adapter` needs. `path` is a hub id or a local directory."""

    family: str
    path: str
    revision: str | None = None
    # The revision the config asked for when `revision` is the commit a download resolved it to.
    requested_revision: str | None = None
    dtype: str = "auto"
    device_map: str | dict[str, Any] | None = None
    # GPUs the job holds (the workflow's `gpus`); None: place as device_map says, nothing more.
    gpus: int | None = None
    token_scope: str = "all"
    processor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    model_class: str | None = None
    # "drop": the model answers without the image (the blind control); text items have none.
    image: str = "use"

    def __post_init__(self) -> None:
        if self.image not in IMAGE_MODES:
            raise ValueError(f"image must be one of {IMAGE_MODES}, got {self.image!r}")
        if self.image == "drop" and self.token_scope == "image":
            raise ValueError("token_scope 'image' records nothing when the image is dropped")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(
                f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {self.dtype!r}"
            )
        if self.token_scope not in TOKEN_SCOPES:
            raise ValueError(f"token_scope must be one of {TOKEN_SCOPES}, got {self.token_scope!r}")
        if self.gpus is not None and self.gpus < 0:
            raise ValueError(f"gpus must be 0 or more, got {self.gpus}")
        if not self.path:
            raise ValueError("a model spec needs a path (hub id or local directory)")

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any] | AdapterSpec) -> AdapterSpec:
        if isinstance(spec, AdapterSpec):
            return spec
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ValueError(f"unknown model spec keys {unknown}; allowed: {sorted(allowed)}")
        values = dict(spec)
        values["path"] = str(values.get("path", ""))
        values["processor_kwargs"] = dict(values.get("processor_kwargs") or {})
        return cls(**values)

    @property
    def torch_dtype(self) -> torch.dtype | str:
        """The dtype for `from_pretrained`: a torch dtype, or "auto" for the checkpoint's own."""
        return "auto" if self.dtype == "auto" else _DTYPES[self.dtype]


def model_spec_from_config(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A `models:` config entry as the adapter spec (workflow-only keys dropped).

    An entry with ``download`` (the workflow adds the download record of a hub model) loads the
    commit the download resolved, not the branch: every job of a run reads the same snapshot.
    """
    spec = {
        key: entry[key]
        for key in (
            "family",
            "path",
            "revision",
            "dtype",
            "device_map",
            "gpus",
            "token_scope",
            "image",
        )  # fmt: skip
        if entry.get(key) is not None
    }
    if entry.get("model_class"):
        spec["model_class"] = entry["model_class"]
    if entry.get("processor"):
        spec["processor_kwargs"] = entry["processor"]
    if entry.get("download"):
        record = read_record(entry["download"], str(entry["path"]))
        requested = entry.get("revision") or "main"
        if record["revision"] != requested:
            raise ValueError(
                f"download record {entry['download']} holds revision {record['revision']!r}, "
                f"the config asks for {requested!r}: rerun the download rule"
            )
        spec["requested_revision"] = requested
        spec["revision"] = record["commit"]
    return spec
