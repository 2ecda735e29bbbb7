"""Resources of the model jobs (workflow/rules/common.smk): batch sizes and memory per retry."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


def common(models: dict) -> dict:
    """The functions of common.smk over a config with these models (it is plain Python apart
    from Snakemake's `workflow` and `config` globals)."""
    namespace = {
        "workflow": SimpleNamespace(basedir=str(ROOT)),
        "config": {"models": models},
    }
    exec(compile((ROOT / "workflow/rules/common.smk").read_text(), "common.smk", "exec"), namespace)
    return namespace


def job(model: str = "m") -> SimpleNamespace:
    return SimpleNamespace(model=model)


def test_batch_size_halves_per_retry_down_to_one():
    f = common({"m": {"batch_size": 8}})
    assert [f["get_batch_size"](job(), attempt) for attempt in (1, 2, 3, 4, 5)] == [8, 4, 2, 1, 1]


def test_max_batch_size_halves_per_retry_but_stays_at_least_the_batch_size():
    f = common({"m": {"batch_size": 8, "max_batch_size": 32}})
    sizes = [f["get_max_batch_size"](job(), attempt) for attempt in (1, 2, 3, 4)]
    assert sizes == [32, 16, 8, 4]
    batch = [f["get_batch_size"](job(), attempt) for attempt in (1, 2, 3, 4)]
    assert all(ceiling >= size for ceiling, size in zip(sizes, batch, strict=True))
    f = common({"m": {"batch_size": 8, "max_batch_size": 10}})
    assert [f["get_max_batch_size"](job(), attempt) for attempt in (1, 2)] == [10, 5]


def test_max_batch_size_unset_keeps_the_batch_fixed():
    f = common({"m": {"batch_size": 8}})
    assert [f["get_max_batch_size"](job(), attempt) for attempt in (1, 2)] == [0, 0]


def test_a_ceiling_below_the_batch_size_is_a_config_error_naming_the_model():
    f = common(
        {
            "ok": {"batch_size": 4, "max_batch_size": 4},
            "bad": {"batch_size": 16, "max_batch_size": 8},
        }
    )
    with pytest.raises(ValueError, match=r"models\.bad\.max_batch_size \(8\) is below"):
        f["check_batch_sizes"]()
    common({"m": {"batch_size": 16, "max_batch_size": 0}})["check_batch_sizes"]()


def test_memory_grows_per_retry_and_defaults_by_gpus():
    f = common({"gpu": {}, "cpu": {"gpus": 0}, "set": {"gpus": 0, "mem_mb": 1500}})
    assert [f["get_mem_mb"](job("gpu"), a) for a in (1, 2)] == [32000, 64000]
    assert f["get_mem_mb"](job("cpu"), 1) == 4000
    assert [f["get_mem_mb"](job("set"), a) for a in (1, 3)] == [1500, 4500]
