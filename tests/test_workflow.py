"""The Snakemake workflow: config schema and dry runs of the whole DAG (no hub access)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def dry_run(*args: str) -> dict[str, int]:
    """Job counts per rule of `snakemake -n --forceall` (everything planned, nothing run)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        ["snakemake", "-n", "--forceall", "--cores", "1", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = result.stdout.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE))
    return {rule: int(n) for rule, n in counts.items() if rule != "total"}


@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml"])
def test_shipped_configs_are_valid(name):
    validate(copy.deepcopy(load(name)), SCHEMA)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda c: c.update(ratoi=0.01), "ratoi"),
        (lambda c: c.update(ratio=1.5), "ratio"),
        (lambda c: c["dataset"].update(source="ftp"), "source"),
        (lambda c: c["dataset"].pop("grouping"), "grouping"),
        (lambda c: c["dataset"].update(language="klingon"), "language"),
        (lambda c: next(iter(c["models"].values())).update(family="bert"), "family"),
        (lambda c: next(iter(c["models"].values())).update(batch_size=0), "batch_size"),
        (lambda c: c["dataset"].update(source="hub", hub_id="afaji/cvqa"), "revision"),
    ],
)
def test_schema_rejects_bad_config_naming_the_key(mutate, key):
    config = copy.deepcopy(load("config.yaml"))
    mutate(config)
    with pytest.raises(WorkflowError) as error:
        validate(config, SCHEMA)
    assert key in str(error.value)


def planned_models(*args: str) -> set[str]:
    """Model names whose activation stores the dry run would build."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        ["snakemake", "-n", "--forceall", "--cores", "1", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return set(re.findall(r"results/([^/\s]+)/activations\.zarr", result.stdout))


def test_demo_dry_run_plans_the_demo():
    counts = dry_run()
    assert counts["make_demo_data"] == 1
    assert counts["prepare_data"] == 1
    assert counts["train_demo_model"] == 1
    assert counts["baseline_and_record"] == len(load("config.yaml")["models"])
    assert counts["all"] == 1
    assert planned_models() == set(load("config.yaml")["models"])


def test_paper_dry_run_plans_only_the_paper():
    counts = dry_run("--configfile", "configs/paper.yaml")
    # Nothing of the demo may leak in through Snakemake's recursive config merge.
    assert "make_demo_data" not in counts
    assert "train_demo_model" not in counts
    assert counts["prepare_data"] == 1
    paper_models = set(load("configs/paper.yaml")["models"])
    assert paper_models == {"qwen2.5-vl-7b", "llava-v1.6-mistral-7b", "pangea-7b"}
    assert counts["baseline_and_record"] == 3
    assert planned_models("--configfile", "configs/paper.yaml") == paper_models


def test_bad_config_on_the_command_line_fails_the_dry_run():
    result = subprocess.run(
        ["snakemake", "-n", "--cores", "1", "--config", "ratio=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "ratio" in result.stdout + result.stderr


def test_snakemake_lint_is_clean():
    result = subprocess.run(
        ["snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "good condition" in result.stdout + result.stderr
