"""The prepare-data stage (rule `prepare_data`, `culture-neurons prepare-data`): CVQA-schema rows
or a text MCQ table -> items.parquet + data report (`culture_neurons.data.prepare`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from culture_neurons.data.prepare import DatasetConfig, prepare_dataset

log = logging.getLogger(__name__)


def prepare_stage(out_dir: str | Path, **dataset: Any) -> dict[str, Any]:
    """The prepare-data stage (rule `prepare_data`): ``dataset`` holds the `DatasetConfig`
    fields (the config's `dataset:` section); writes the items tables and the data report into
    ``out_dir`` and returns the report."""
    report = prepare_dataset(DatasetConfig(**dataset), out_dir)
    log.info(
        "%d items in %d cultures; label mode %s; %d rows excluded",
        report["items"],
        len(report["cultures"]),
        report["label_mode"],
        report["excluded_total"],
    )
    return report
