"""The one dry-run helper of the workflow tests: each job `snakemake -n -p --forceall` plans."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class PlannedJob:
    """One job of a dry run as Snakemake prints it."""

    rule: str
    inputs: list[str] = field(default_factory=list)
    wildcards: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    shell: str = ""


def _field(block: str, key: str) -> str | None:
    found = re.search(rf"^\s+{key}: (.*)$", block, flags=re.MULTILINE)
    return found.group(1) if found else None


def parse_jobs(stdout: str) -> list[PlannedJob]:
    """The jobs of a dry run's output: one block per job, after its ``[timestamp]`` line."""
    jobs = []
    for block in re.split(r"^\[.*\]$", stdout, flags=re.MULTILINE)[1:]:
        rule = re.search(r"^(?:local)?rule (\w+):", block, flags=re.MULTILINE)
        if rule is None:
            continue
        inputs, wildcards, resources = (
            _field(block, k) for k in ("input", "wildcards", "resources")
        )
        command = re.search(r"^Shell command: (.*)$", block, flags=re.MULTILINE)
        jobs.append(
            PlannedJob(
                rule.group(1),
                inputs.split(", ") if inputs else [],
                dict(w.split("=", 1) for w in wildcards.split(", ")) if wildcards else {},
                dict(r.split("=", 1) for r in resources.split(", ")) if resources else {},
                command.group(1) if command else "",
            )
        )
    return jobs


def dry_run_jobs(*args: str, cwd: Path = ROOT) -> tuple[list[PlannedJob], str]:
    """Every job of `snakemake -n -p --forceall ARGS` (everything planned, nothing run, no hub
    access), and the run's whole output (its warnings)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        ["snakemake", "-n", "-p", "--forceall", "--cores", "1", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return parse_jobs(result.stdout), result.stdout + result.stderr
