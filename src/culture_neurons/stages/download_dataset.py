"""The download-dataset stage (rule `download_dataset`, `culture-neurons download-dataset`): a hub
dataset into the Hugging Face caches (`culture_neurons.data.download`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from culture_neurons.data.download import download_stage


def download_dataset_stage(
    repo_id: str,
    out: str | Path,
    *,
    revision: str | None = None,
    hub_config: str | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """The download-dataset stage (rule `download_dataset`): a hub dataset (and its ``split``
    into the `datasets` cache, for offline compute nodes), and its download record."""
    return download_stage(
        repo_id, out, repo_type="dataset", revision=revision, hub_config=hub_config, split=split
    )
