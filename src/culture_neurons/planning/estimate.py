"""Reading a config for `culture-neurons estimate` and the bench: its item and culture counts,
and the replication's GPU-hours at a bench's rate (the I/O around culture_neurons.planning.work)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from culture_neurons.errors import InputError
from culture_neurons.planning.work import ItemCounts, estimate

log = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parents[3]
SCHEMA = CHECKOUT / "workflow" / "schemas" / "config.schema.yaml"
PAPER_CONFIG = CHECKOUT / "configs" / "paper.yaml"


def load_config(path: str | Path) -> dict[str, Any]:
    """A config file, validated against the workflow's schema with its defaults filled in."""
    from snakemake.utils import validate

    config = yaml.safe_load(Path(path).read_text())
    if not SCHEMA.exists():
        raise InputError(f"{SCHEMA} not found: run from a checkout of culture-neurons")
    try:
        validate(config, str(SCHEMA))
    except Exception as error:
        raise InputError(f"{path}: {error}") from None
    return config


def item_counts(config: Mapping[str, Any], items: str | Path | None) -> ItemCounts:
    """From an items.parquet when given, else the config's dataset.expected_items."""
    if items:
        table = pd.read_parquet(items, columns=["split"])["split"].value_counts()
        return ItemCounts(int(table.get("identification", 0)), int(table.get("evaluation", 0)))
    expected = config["dataset"].get("expected_items")
    if not expected:
        raise InputError(
            "no item counts: give --items results/data/<name>/items.parquet or set "
            "dataset.expected_items in the config"
        )
    return ItemCounts(**expected)


def n_cultures(config: Mapping[str, Any], items: str | Path | None) -> int:
    if items:
        return int(pd.read_parquet(items, columns=["culture"])["culture"].nunique())
    from culture_neurons.data.prepare import planned_cultures

    return len(planned_cultures(copy.deepcopy(dict(config["dataset"]))))


def replication(bench: Mapping[str, Any]) -> dict[str, Any] | None:
    """configs/paper.yaml's model jobs at a bench's rate: masked answers and GPU-hours (None
    outside a checkout)."""
    if not PAPER_CONFIG.exists():
        return None
    config = load_config(PAPER_CONFIG)
    counts = item_counts(config, None)
    cultures = n_cultures(config, None)
    plain = {
        **config,
        "models": {
            name: {k: v for k, v in model.items() if k != "tokens_per_s"}
            for name, model in config["models"].items()
        },
    }
    rows = estimate(plain, counts, cultures, bench)
    ablate = [r for r in rows if r.job.rule.startswith("ablate")]
    return {
        "models": len(config["models"]),
        "masks_per_model": sum(r.job.masks for r in ablate) // len(config["models"]),
        "masked_answers": sum(r.job.answers for r in ablate),
        "gpu_hours": sum(r.gpu_hours for r in rows),
    }
