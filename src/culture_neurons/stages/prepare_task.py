"""The prepare-task stage (rule `prepare_task`, `culture-neurons prepare-task`): an attribution
task's files (``attribution.control_files``, ``exclusion_files``) -> items.parquet + data report,
by the same preparation as the dataset's (`culture_neurons.stages.prepare_data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from culture_neurons.stages.prepare_data import prepare_stage


def prepare_task_stage(out_dir: str | Path, **dataset: Any) -> dict[str, Any]:
    """The prepare-task stage: ``dataset`` holds the `DatasetConfig` fields of the task's files;
    writes the items tables and the data report into ``out_dir`` and returns the report."""
    return prepare_stage(out_dir, **dataset)
