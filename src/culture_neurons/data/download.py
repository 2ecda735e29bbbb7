"""The download step (rules and subcommands download_model / download-model, download_dataset /
download-dataset).

On a cluster the compute nodes often cannot reach the Hugging Face hub, so the workflow fetches
every hub model and the hub dataset on the login node first (Snakemake `localrules`), into the
Hugging Face cache that the jobs read. Each download writes a small JSON record of the repository,
the revision asked for and the commit it resolved to; the model jobs then load that commit, so
every job of a run reads the same snapshot even when a branch such as `main` moves meanwhile.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from culture_neurons import __version__
from culture_neurons.errors import InputError

log = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset")
_COMMIT = re.compile(r"[0-9a-f]{40}")

# Weight formats no adapter loads (transformers reads safetensors, else PyTorch pickles).
_UNUSED_FORMATS = (
    "*.msgpack", "*.h5", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.gguf", "*.mlmodel",
    "original/*", "onnx/*", "coreml/*",
)  # fmt: skip
# PyTorch pickles that duplicate safetensors weights (transformers prefers safetensors).
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def ignore_patterns(files: Sequence[str]) -> list[str]:
    """Files of a model repository the adapters never read: other frameworks' weights, and the
    PyTorch pickles when safetensors weights are there too (a 7B model's second 15 GB)."""
    patterns = list(_UNUSED_FORMATS)
    if any(name.endswith(".safetensors") for name in files):
        patterns += _PICKLES
    return patterns


def commit_of(snapshot: str | Path) -> str:
    """The commit of a hub-cache snapshot folder (``.../snapshots/<sha>``)."""
    name = Path(snapshot).name
    if not _COMMIT.fullmatch(name):
        raise InputError(
            f"snapshot folder {snapshot} is not named by a commit: was a local_dir given to "
            "snapshot_download instead of the Hugging Face cache?"
        )
    return name


def fetch_snapshot(repo_id: str, revision: str | None, repo_type: str) -> dict[str, Any]:
    """Fetch ``repo_id`` at ``revision`` into the Hugging Face cache (its tqdm bars show the
    progress) and return the download record."""
    if repo_type not in REPO_TYPES:
        raise InputError(f"repo type must be one of {REPO_TYPES}, got {repo_type!r}")
    import huggingface_hub

    kwargs: dict[str, Any] = {}
    if repo_type == "model":
        files = huggingface_hub.list_repo_files(repo_id, revision=revision, repo_type=repo_type)
        kwargs["ignore_patterns"] = ignore_patterns(files)
    log.info("fetching %s %s at %s into the Hugging Face cache", repo_type, repo_id, revision)
    snapshot = huggingface_hub.snapshot_download(
        repo_id, repo_type=repo_type, revision=revision, **kwargs
    )
    commit = commit_of(snapshot)
    log.info("%s %s: revision %s is commit %s (%s)", repo_type, repo_id, revision, commit, snapshot)
    return {
        "repo_id": repo_id,
        "repo_type": repo_type,
        "revision": revision or "main",
        "commit": commit,
        "snapshot": str(snapshot),
        "package_version": __version__,
    }


def prepare_dataset_cache(record: dict[str, Any], config_name: str | None, split: str) -> None:
    """Build the `datasets` cache of the split at the downloaded commit: offline, a compute
    node's `load_dataset` finds that cache, not the hub snapshot."""
    from culture_neurons.data.cvqa import load_dataset_offline_aware

    dataset = load_dataset_offline_aware(record["repo_id"], config_name, record["commit"], split)
    log.info("dataset %s split %s: %d rows cached", record["repo_id"], split, len(dataset))


def download_stage(
    repo_id: str,
    out: str | Path,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    hub_config: str | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Fetch one hub repository (a dataset's ``split`` also into the `datasets` cache) and write
    its download record to ``out``."""
    record = fetch_snapshot(repo_id, revision, repo_type)
    if repo_type == "dataset" and split:
        prepare_dataset_cache(record, hub_config, split)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def read_record(path: str | Path, repo_id: str) -> dict[str, Any]:
    """A download record, checked to be ``repo_id``'s and to name a commit."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"download record {file} does not exist: run the download rule first")
    try:
        record = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"download record {file} is not JSON: {err}") from err
    if not isinstance(record, dict) or record.get("repo_id") != repo_id:
        found = record.get("repo_id") if isinstance(record, dict) else None
        raise InputError(
            f"download record {file} is for {found!r}, not {repo_id!r}: rerun the download rule"
        )
    if not _COMMIT.fullmatch(str(record.get("commit", ""))):
        raise InputError(f"download record {file} names no commit: rerun the download rule")
    return record
