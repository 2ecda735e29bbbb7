"""The download step and the commit a model job records: no network, the hub is faked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # a stray hub call fails at once

import huggingface_hub
import pandas as pd
import pytest
from huggingface_hub import constants

from culture_neurons import cli
from culture_neurons.analysis.tables import models_loaded_note
from culture_neurons.data.download import commit_of, ignore_patterns, read_record
from culture_neurons.errors import InputError
from culture_neurons.models import load_adapter
from culture_neurons.models.loading import model_provenance
from culture_neurons.models.spec import AdapterSpec, model_spec_from_config
from culture_neurons.record.recording import store_attrs

pytest_plugins = ["tests.tiny_models"]

SHA = "0123456789abcdef0123456789abcdef01234567"
NEWER = "fedcba9876543210fedcba9876543210fedcba98"


class FakeHub:
    """snapshot_download and list_repo_files of a hub whose branches point at given commits."""

    def __init__(self, cache: Path, files: list[str], branches: dict[str, str]) -> None:
        self.cache, self.files, self.branches = cache, files, branches
        self.calls: list[tuple[str, dict]] = []

    def list_repo_files(self, repo_id: str, **kwargs) -> list[str]:
        self.calls.append(("list", {"repo_id": repo_id, **kwargs}))
        return self.files

    def snapshot_download(self, repo_id: str, **kwargs) -> str:
        self.calls.append(("snapshot", {"repo_id": repo_id, **kwargs}))
        revision = kwargs.get("revision") or "main"
        commit = self.branches.get(revision, revision)
        folder = f"{kwargs.get('repo_type') or 'model'}s--{repo_id.replace('/', '--')}"
        snapshot = self.cache / folder / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(snapshot)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> FakeHub:
    files = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"]
    fake = FakeHub(tmp_path / "hub", files, {"main": SHA})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake.list_repo_files)
    return fake


def test_a_model_download_records_the_commit_its_revision_resolved_to(hub, tmp_path):
    out = tmp_path / "downloads" / "models" / "vlm.json"
    argv = ["download-model", "--repo-id", "org/vlm", "--revision", "main", "--out", str(out)]
    assert cli.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["repo_id"] == "org/vlm" and record["repo_type"] == "model"
    assert record["revision"] == "main" and record["commit"] == SHA
    ((_, listed), (_, snapshot)) = hub.calls
    assert listed == {"repo_id": "org/vlm", "revision": "main", "repo_type": "model"}
    assert snapshot["repo_id"] == "org/vlm" and snapshot["revision"] == "main"
    assert snapshot["repo_type"] == "model"
    # PyTorch pickles duplicate the safetensors weights; other frameworks' are never read.
    assert {"*.bin", "*.h5"} <= set(snapshot["ignore_patterns"])
    assert "*.safetensors" not in snapshot["ignore_patterns"]
    assert "cache_dir" not in snapshot and "local_dir" not in snapshot  # the HF cache


def test_pickled_weights_are_kept_where_they_are_the_only_weights():
    assert "*.bin" not in ignore_patterns(["config.json", "pytorch_model.bin"])
    assert "*.bin" in ignore_patterns(["config.json", "model-00001-of-00002.safetensors"])


def test_a_dataset_download_caches_its_split_at_the_commit(hub, tmp_path, monkeypatch):
    prepared = []
    monkeypatch.setattr(
        "culture_neurons.data.cvqa.load_dataset_offline_aware",
        lambda *args: prepared.append(args) or [None] * 3,
    )
    out = tmp_path / "dataset.json"
    argv = ["download-dataset", "--repo-id", "afaji/cvqa",
            "--revision", NEWER, "--split", "test", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads(out.read_text())["commit"] == NEWER
    ((kind, call),) = hub.calls  # a dataset is fetched whole: no listing
    assert kind == "snapshot" and call["repo_type"] == "dataset" and call["revision"] == NEWER
    assert prepared == [("afaji/cvqa", None, NEWER, "test")]


def test_a_snapshot_outside_the_cache_is_refused():
    assert commit_of(f"/c/models--a--b/snapshots/{SHA}") == SHA
    with pytest.raises(InputError, match="not named by a commit"):
        commit_of("/data/my-model")


def write_record(path: Path, **fields) -> Path:
    record = {"repo_id": "org/vlm", "revision": "main", "commit": SHA, **fields}
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"repo_id": "org/other"}, "is for 'org/other', not 'org/vlm'"),
        ({"commit": "main"}, "names no commit"),
    ],
)
def test_a_stale_or_broken_record_fails_naming_the_file(tmp_path, fields, message):
    path = write_record(tmp_path / "vlm.json", **fields)
    with pytest.raises(InputError, match=message):
        read_record(path, "org/vlm")
    with pytest.raises(InputError, match="does not exist: run the download rule"):
        read_record(tmp_path / "missing.json", "org/vlm")


def test_a_job_loads_the_recorded_commit_not_the_branch(tmp_path):
    record = write_record(tmp_path / "vlm.json")
    entry = {"family": "qwen2_5_vl", "path": "org/vlm", "revision": "main", "gpus": 1,
             "batch_size": 8, "download": str(record)}  # fmt: skip
    spec = model_spec_from_config(entry)
    assert spec["revision"] == SHA and spec["requested_revision"] == "main"
    entry["revision"] = "v2"  # the config changed since the download
    with pytest.raises(ValueError, match="holds revision 'main', the config asks for 'v2'"):
        model_spec_from_config(entry)


def fake_cache(root: Path, checkpoint: Path, commits: dict[str, str]) -> None:
    """The Hugging Face cache layout: a snapshot per commit, refs naming the branch's commit."""
    repo = root / "models--org--vlm"
    for commit in set(commits.values()):
        shutil.copytree(checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    for branch, commit in commits.items():
        (repo / "refs" / branch).write_text(commit)


def test_stores_record_the_commit_loaded_even_after_main_moved(
    tmp_path, monkeypatch, tiny_checkpoint
):
    # The download resolved main to SHA; main has moved to NEWER since (a later download on the
    # login node): the job still loads SHA, and its store says so next to the revision asked.
    fake_cache(tmp_path / "hub", tiny_checkpoint("qwen2_5_vl"), {"main": NEWER, "old": SHA})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    record = write_record(tmp_path / "vlm.json")
    entry = {"family": "qwen2_5_vl", "path": "org/vlm", "revision": "main", "dtype": "float32",
             "device_map": "cpu", "gpus": 0, "download": str(record)}  # fmt: skip
    adapter = load_adapter(model_spec_from_config(entry))
    attrs = store_attrs(adapter, "fingerprint", "vlm")
    assert attrs["commit"] == SHA and attrs["revision"] == "main"
    assert attrs["model_path"] == "org/vlm"


def test_a_local_folder_records_no_commit(tiny_checkpoint):
    path = tiny_checkpoint("qwen2_5_vl")
    adapter = load_adapter(
        {"family": "qwen2_5_vl", "path": str(path), "dtype": "float32", "device_map": "cpu"}
    )
    assert adapter.metadata()["commit"] is None


def test_a_job_that_does_not_load_the_model_still_names_its_commit(
    tmp_path, monkeypatch, tiny_checkpoint
):
    # The gathering ablate job writes tables without loading the model: the commit comes from
    # the cache snapshot the spec names, and reaches Table 2's notes through the summaries.
    fake_cache(tmp_path / "hub", tiny_checkpoint("qwen2_5_vl"), {"main": NEWER, "old": SHA})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    entry = {"family": "qwen2_5_vl", "path": "org/vlm", "revision": "main",
             "download": str(write_record(tmp_path / "vlm.json"))}  # fmt: skip
    provenance = model_provenance(AdapterSpec.from_mapping(model_spec_from_config(entry)))
    assert provenance == {"model_path": "org/vlm", "revision": "main", "commit": SHA}
    hub_table, local_table = pd.DataFrame({"x": [1]}), pd.DataFrame({"x": [2]})
    hub_table.attrs["model"] = provenance
    local_table.attrs["model"] = {"model_path": "weights/", "revision": None, "commit": None}
    path = tmp_path / "summary.parquet"
    hub_table.to_parquet(path)
    (note,) = models_loaded_note({
        ("vlm", "cas"): pd.read_parquet(path), ("vlm", "lap"): hub_table,
        ("local", "cas"): local_table, ("old", "cas"): pd.DataFrame(),
    })  # fmt: skip
    assert note == (
        f"Models loaded: vlm: org/vlm (commit {SHA}, revision main); "
        "local: weights/ (a local folder, no hub commit)."
    )
