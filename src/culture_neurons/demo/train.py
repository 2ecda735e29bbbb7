"""The train-demo stage (rule `train_demo_model`, `culture-neurons train-demo`): train the demo
VLM on the demo's train portion, then evaluate it through the same loading path as a hub model."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from culture_neurons.data.split import EVALUATION, split_rows
from culture_neurons.demo.model import train_demo_model
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import answer_all
from culture_neurons.models import load_adapter

log = logging.getLogger(__name__)


def train_demo_stage(
    items: str | Path,
    train_items: str | Path,
    out: str | Path,
    report: str | Path,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train into ``out`` (`save_pretrained`), write the training and evaluation summary (JSON) to
    ``report`` and return it. ``settings``: the config's `demo_training` block."""
    table = pd.read_parquet(items)
    train = pd.read_parquet(train_items)
    if train.empty:
        raise InputError(f"{train_items} has no items: the demo model needs a train portion")
    summary = train_demo_model(train, table, out, dict(settings or {}))
    log.info("trained in %.1f s (final loss %.3f)", summary["train_s"], summary["final_loss"])
    adapter = load_adapter({"family": "qwen2_5_vl", "path": str(out), "dtype": "float32"})
    evaluation = split_rows(table, EVALUATION)
    answers = answer_all(adapter, evaluation, batch_size=32, max_new_tokens=8, desc="evaluate")
    summary["evaluation_items"] = len(answers)
    summary["evaluation_accuracy"] = round(float(answers["correct"].mean()), 4)
    summary["evaluation_accuracy_per_culture"] = (
        answers.groupby("culture")["correct"].mean().round(4).to_dict()
    )
    Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "demo model accuracy on the evaluation split: %.1f%% (chance 25%%)",
        100 * summary["evaluation_accuracy"],
    )
    return summary
