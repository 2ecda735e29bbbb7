"""The train-demo stage (rule `train_demo`, `culture-neurons train-demo`): train the demo
VLM on the demo's train portion, then evaluate it through the same loading path as a hub model."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from culture_neurons.data.split import EVALUATION, split_rows
from culture_neurons.demo.model import train_demo_model
from culture_neurons.demo.shipped import (
    demo_recipe,
    provenance_record,
    training_settings,
    write_provenance,
)
from culture_neurons.demo.train import ABOVE_CHANCE_P, CHANCE, chance_p_value
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
    demo_data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train into ``out`` (`save_pretrained`), write the training and evaluation summary (JSON) to
    ``report`` and return it. ``settings``: the config's `demo_training` block; ``demo_data``: its
    `dataset.demo` block, which with ``settings`` makes the recipe written to ``out``'s
    provenance (what decides whether these weights can stand for a config's demo model)."""
    table = pd.read_parquet(items)
    train = pd.read_parquet(train_items)
    if train.empty:
        raise InputError(f"{train_items} has no items: the demo model needs a train portion")
    settings = dict(settings or {})
    # A demo model at chance makes every later result noise; say so here, not in Table 2.
    require_above_chance = bool(settings.get("require_above_chance", True))
    summary = train_demo_model(train, table, out, training_settings(settings))
    log.info("trained in %.1f s (final loss %.3f)", summary["train_s"], summary["final_loss"])
    adapter = load_adapter({"family": "qwen2_5_vl", "path": str(out), "dtype": "float32"})
    evaluation = split_rows(table, EVALUATION)
    answers = answer_all(adapter, evaluation, batch_size=32, max_new_tokens=8, desc="evaluate")
    summary["evaluation_items"] = len(answers)
    summary["evaluation_accuracy"] = round(float(answers["correct"].mean()), 4)
    summary["evaluation_accuracy_per_culture"] = (
        answers.groupby("culture")["correct"].mean().round(4).to_dict()
    )
    p_value = chance_p_value(int(answers["correct"].sum()), len(answers))
    summary["chance_p_value"] = p_value
    summary["above_chance"] = p_value < ABOVE_CHANCE_P
    Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    if demo_data is not None:
        recipe = demo_recipe(demo_data, summary["settings"])
        write_provenance(out, provenance_record(recipe, summary, torch.get_num_threads()))
    log.info(
        "demo model accuracy on the evaluation split: %.1f%% (chance %.0f%%, one-sided p = %.2g)",
        100 * summary["evaluation_accuracy"], 100 * CHANCE, p_value,
    )  # fmt: skip
    if not summary["above_chance"]:
        if require_above_chance:
            raise InputError(
                f"the demo model answers {100 * summary['evaluation_accuracy']:.1f}% of "
                f"{len(answers)} evaluation items correctly, not above chance "
                f"({100 * CHANCE:.0f}%; one-sided binomial p = {p_value:.2g} >= "
                f"{ABOVE_CHANCE_P}): train longer (demo_training.steps, now "
                f"{summary['settings']['steps']}) or set demo_training.require_above_chance: "
                "false to keep a model at chance"
            )
        log.warning("the demo model is not above chance; kept (require_above_chance: false)")
    return summary
