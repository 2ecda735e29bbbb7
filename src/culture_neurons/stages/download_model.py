"""The download-model stage (rule `download_model`, `culture-neurons download-model`): a hub
model into the Hugging Face cache (`culture_neurons.data.download`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from culture_neurons.data.download import download_stage


def download_model_stage(
    repo_id: str, out: str | Path, *, revision: str | None = None
) -> dict[str, Any]:
    """The download-model stage (rule `download_model`): a hub model into the HF cache, and its
    download record to ``out``."""
    return download_stage(repo_id, out, repo_type="model", revision=revision)
