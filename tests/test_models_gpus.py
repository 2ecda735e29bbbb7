"""GPU placement of a model entry: the from_pretrained keywords and the workstation GPU claim."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from culture_neurons.models import AdapterSpec
from culture_neurons.models.gpus import (
    WEIGHT_SHARE,
    claim_gpus,
    placement_kwargs,
    visible_devices,
)
from culture_neurons.models.loading import model_kwargs
from culture_neurons.models.spec import model_spec_from_config

GIB = 1024**3


def place(device_map, gpus, visible, memory=None):
    memory = [80 * GIB] * visible if memory is None else memory
    return placement_kwargs(device_map, gpus, visible=visible, memory=memory, model="org/vlm-34b")


@pytest.mark.parametrize("device_map", ["cpu", "cuda:0", {"": 0}, None])
def test_cpu_models_and_explicit_placements_pass_through(device_map):
    expected = {} if device_map is None else {"device_map": device_map}
    assert place(device_map, 0, visible=0) == expected
    assert place(device_map, None, visible=0) == expected
    if device_map is not None:
        # An explicit placement is the user's choice even for a GPU model.
        assert place(device_map, 2, visible=0) == expected


def test_two_gpus_spread_over_exactly_the_two_the_job_holds():
    kwargs = place("auto", 2, visible=2, memory=[80 * GIB, 40 * GIB])
    assert kwargs == {
        "device_map": "auto",
        "max_memory": {0: int(80 * GIB * WEIGHT_SHARE), 1: int(40 * GIB * WEIGHT_SHARE)},
    }


def test_more_visible_gpus_than_asked_use_only_the_first_ones():
    kwargs = place("auto", 1, visible=4)
    assert kwargs["device_map"] == "auto"
    assert list(kwargs["max_memory"]) == [0]  # no CPU offload, no other job's GPU


@pytest.mark.parametrize("strategy", ["balanced", "sequential", None])
def test_other_strategies_keep_their_name(strategy):
    kwargs = place(strategy, 3, visible=3)
    assert kwargs["device_map"] == (strategy or "auto")
    assert list(kwargs["max_memory"]) == [0, 1, 2]


@pytest.mark.parametrize(("gpus", "visible"), [(2, 1), (1, 0), (4, 2)])
def test_too_few_visible_gpus_name_the_model_and_counts(gpus, visible):
    with pytest.raises(RuntimeError) as error:
        placement_kwargs(
            "auto", gpus, visible=visible, memory=[GIB] * visible, model="org/vlm-34b",
            visible_ids=[str(i) for i in range(visible)],
        )  # fmt: skip
    message = str(error.value)
    assert "org/vlm-34b" in message
    assert f"gpus: {gpus}" in message and f"sees {visible}" in message
    assert "CUDA_VISIBLE_DEVICES=" in message


def test_a_cpu_demo_entry_loads_without_touching_cuda(monkeypatch):
    # The demo's entry (gpus: 0, device_map: cpu) must not claim or count GPUs.
    monkeypatch.setattr(
        "culture_neurons.models.gpus.claim_gpus", lambda n: pytest.fail("claimed a GPU")
    )
    entry = {"family": "qwen2_5_vl", "path": "w", "dtype": "float32", "device_map": "cpu",
             "gpus": 0, "batch_size": 16, "demo_training": {}}  # fmt: skip
    spec = AdapterSpec.from_mapping(model_spec_from_config(entry))
    assert spec.gpus == 0
    assert model_kwargs(spec)["device_map"] == "cpu"


def test_a_gpu_entry_on_a_machine_without_gpus_fails_clearly(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    entry = {"family": "qwen2_5_vl", "path": "Qwen/Qwen2.5-VL-7B-Instruct",
             "device_map": "auto", "gpus": 1}  # fmt: skip
    spec = AdapterSpec.from_mapping(model_spec_from_config(entry))
    with pytest.raises(RuntimeError, match=r"Qwen/Qwen2.5-VL-7B-Instruct asks for 1 GPU"):
        model_kwargs(spec)


def test_visible_devices_parses_the_variable():
    assert visible_devices({}) is None
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]


def unset_visible_devices(monkeypatch):
    """Unset CUDA_VISIBLE_DEVICES so that the claim's own setting is undone after the test."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def hold(lock_dir, device):
    """Another job's claim (flock locks belong to the open file, so this process works)."""
    import fcntl

    handle = open(lock_dir / f"gpu-{device}.lock", "w")  # noqa: SIM115
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


@pytest.fixture
def held_locks(monkeypatch):
    import culture_neurons.models.gpus as gpus

    monkeypatch.setattr(gpus, "_held", [])
    yield gpus._held
    for handle in gpus._held:
        handle.close()


def test_workstation_jobs_claim_distinct_gpus(tmp_path, monkeypatch, held_locks):
    unset_visible_devices(monkeypatch)
    other = hold(tmp_path, "0")
    try:
        assert claim_gpus(2, devices=["0", "1", "2"], lock_dir=tmp_path) == ["1", "2"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2"
        # A third job finds every device held: it would wait.
        with pytest.raises(TimeoutError):
            claim_with_timeout(1, devices=["0", "1", "2"], lock_dir=tmp_path)
    finally:
        other.close()


def claim_with_timeout(n, **kwargs):
    import culture_neurons.models.gpus as gpus

    def give_up(_):
        raise TimeoutError

    original = gpus.time.sleep
    gpus.time.sleep = give_up
    try:
        return claim_gpus(n, **kwargs)
    finally:
        gpus.time.sleep = original


def test_claims_among_the_devices_the_user_left_visible(tmp_path, monkeypatch, held_locks):
    unset_visible_devices(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    other = hold(tmp_path, "4")
    try:
        assert claim_gpus(1, lock_dir=tmp_path) == ["5"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    finally:
        other.close()


def test_no_claim_when_the_job_takes_every_gpu(tmp_path, monkeypatch, held_locks):
    unset_visible_devices(monkeypatch)
    # A Slurm-executor job granted exactly its GPUs sees only those: nothing to share out.
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert claim_gpus(1, lock_dir=tmp_path) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    unset_visible_devices(monkeypatch)
    assert claim_gpus(2, devices=["0", "1"], lock_dir=tmp_path) is None
    assert claim_gpus(0, devices=["0", "1"], lock_dir=tmp_path) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert held_locks == []


def test_jobs_inside_one_slurm_allocation_share_its_gpus(tmp_path, monkeypatch, held_locks):
    # The workstation profile inside `salloc --gpus=4`: Slurm shows the allocation's 4 GPUs to
    # every job step, and each one-GPU job must take its own instead of all landing on GPU 0.
    unset_visible_devices(monkeypatch)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    first_job = hold(tmp_path, "0")
    try:
        assert claim_gpus(1, lock_dir=tmp_path) == ["1"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    finally:
        first_job.close()


def test_slurm_without_visible_devices_claims_nothing(tmp_path, monkeypatch, held_locks):
    # The node's other GPUs may belong to other allocations, whose locks are not ours to see.
    unset_visible_devices(monkeypatch)
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setattr("culture_neurons.models.gpus.physical_gpu_count", lambda: 8)
    assert claim_gpus(1, lock_dir=tmp_path) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_each_slurm_allocation_locks_in_its_own_node_local_folder():
    # Slurm numbers every allocation's GPUs from 0: two allocations on one node must not share
    # the lock of "GPU 0".
    import tempfile

    from culture_neurons.models.gpus import _default_lock_dir

    workstation = _default_lock_dir({})
    first, second = (
        _default_lock_dir({"SLURM_JOB_ID": "1"}),
        _default_lock_dir({"SLURM_JOB_ID": "2"}),
    )
    assert len({workstation, first, second}) == 3
    assert all(d.parent == Path(tempfile.gettempdir()) for d in (workstation, first, second))
