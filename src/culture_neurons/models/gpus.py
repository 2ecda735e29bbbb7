"""Which GPUs a job uses and how a model is spread over them.

A model entry's `gpus` is what its jobs hold. A job that sees more devices than that claims
`gpus` free ones itself (a lock file per device, held until the process ends) and narrows
CUDA_VISIBLE_DEVICES to them: on a workstation (every GPU of the machine, or those the user left
in CUDA_VISIBLE_DEVICES), and inside one Slurm allocation of several GPUs that the workstation
profile shares out; Snakemake's `--resources gpu=N` then runs N one-GPU jobs side by side, each
on its own device. A job of the Slurm executor sees exactly the GPUs Slurm granted it, so it
claims nothing.

With a device_map strategy ("auto", "balanced", ...) the model is spread over the job's GPUs
only, by a `max_memory` that lists them (transformers balances the layers over the listed
devices); an explicit placement ("cpu", "cuda:0", a dict) is passed on unchanged.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
# Share of each device's memory offered to the weights; the rest holds activations and the
# generation cache (transformers keeps no margin of its own once max_memory is given).
WEIGHT_SHARE = 0.9
LOCK_DIR_ENV = "CULTURE_NEURONS_GPU_LOCKS"

_held: list[Any] = []  # open lock files of the claimed devices, released at exit


def visible_devices(environ: dict[str, str] | os._Environ = os.environ) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list (None: unset, every device is visible)."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [d for d in (part.strip() for part in value.split(",")) if d and d != "-1"]


def physical_gpu_count() -> int:
    """GPUs on this machine, counted without initialising CUDA (nvidia-smi; 0 without it)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.strip())


def claim_gpus(
    n: int,
    *,
    devices: Sequence[str] | None = None,
    lock_dir: str | Path | None = None,
    poll_s: float = 5.0,
) -> list[str] | None:
    """Claim `n` free devices and narrow CUDA_VISIBLE_DEVICES to them.

    The candidates are `devices`, else CUDA_VISIBLE_DEVICES (the user or Slurm kept the job to
    some GPUs), else every GPU of the machine. Does nothing (returns None) when `n` < 1 or when
    there are no more than `n` candidates (a Slurm job granted exactly its devices). Must run
    before CUDA is initialised. Waits while other jobs hold them all.
    """
    if n < 1:
        return None
    if devices is None:
        devices = visible_devices()
    if devices is None:
        if "SLURM_JOB_ID" in os.environ:
            # Slurm without CUDA_VISIBLE_DEVICES: the node's other GPUs may be other jobs', whose
            # locks live in their own allocation's folder (see _default_lock_dir); claim nothing.
            return None
        devices = [str(i) for i in range(physical_gpu_count())]
    if len(devices) <= n:
        return None
    lock_dir = Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or _default_lock_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    claimed: dict[str, Any] = {}
    waited = False
    while len(claimed) < n:
        for device in devices:
            if len(claimed) == n:
                break
            if device in claimed:
                continue
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in device)
            handle = open(lock_dir / f"gpu-{name}.lock", "w")  # noqa: SIM115 (held until exit)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            claimed[device] = handle
        if len(claimed) < n:
            if not waited:
                log.info("waiting for %d free GPU(s) of %s (locks in %s)", n, devices, lock_dir)
                waited = True
            time.sleep(poll_s)
    _held.extend(claimed.values())
    chosen = [d for d in devices if d in claimed]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    log.info("claimed GPU(s) %s of %s", chosen, devices)
    return chosen


def _default_lock_dir(environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """A node-local folder (device numbers are the node's). Inside a Slurm allocation it is the
    allocation's own: Slurm numbers each job's granted GPUs from 0, so two allocations on one
    node both have a "GPU 0" that are different devices and must not wait for each other."""
    name = f"culture-neurons-gpus-{os.getuid()}"
    if "SLURM_JOB_ID" in environ:
        name += f"-slurm{environ['SLURM_JOB_ID']}"
    return Path(tempfile.gettempdir()) / name


def placement_kwargs(
    device_map: str | dict[str, Any] | None,
    gpus: int | None,
    *,
    visible: int,
    memory: Sequence[int],
    model: str,
    visible_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """`from_pretrained` keywords that place a model on the GPUs its job holds.

    `gpus` None (not a workflow model entry) or 0, or an explicit placement: `device_map` as
    given. Otherwise the job must see at least `gpus` devices; the strategy gets a `max_memory`
    over the first `gpus` of them (`memory`: bytes per visible device).
    """
    kwargs: dict[str, Any] = {} if device_map is None else {"device_map": device_map}
    if not gpus or not (device_map is None or device_map in STRATEGIES):
        return kwargs
    if visible < gpus:
        seen = "" if visible_ids is None else f" (CUDA_VISIBLE_DEVICES={','.join(visible_ids)})"
        raise RuntimeError(
            f"model {model} asks for {gpus} GPU(s) (gpus: {gpus}) but this job sees "
            f"{visible}{seen}; request them from the scheduler (the rule's gpu resource follows "
            "gpus) or set gpus: 0 and device_map: cpu to run on the CPU"
        )
    return {
        "device_map": device_map or "auto",
        "max_memory": {i: int(memory[i] * WEIGHT_SHARE) for i in range(gpus)},
    }


def job_placement(
    device_map: str | dict[str, Any] | None, gpus: int | None, *, model: str
) -> dict[str, Any]:
    """`placement_kwargs` for this process: claims devices on a workstation, then asks torch."""
    if not gpus or not (device_map is None or device_map in STRATEGIES):
        return placement_kwargs(device_map, gpus, visible=0, memory=[], model=model)
    claim_gpus(gpus)
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    memory = [torch.cuda.get_device_properties(i).total_memory for i in range(visible)]
    return placement_kwargs(
        device_map, gpus, visible=visible, memory=memory, model=model,
        visible_ids=visible_devices(),
    )  # fmt: skip
