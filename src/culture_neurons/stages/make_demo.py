"""The make-demo stage (rule `make_demo`, `culture-neurons make-demo`): the synthetic demo
dataset (`culture_neurons.demo.generate`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from culture_neurons.demo.generate import generate_demo_dataset

log = logging.getLogger(__name__)


def make_demo_stage(
    spec: str | Path,
    out: str | Path,
    *,
    seed: int,
    test_items_per_pair: int,
    train_items_per_pair: int,
    image_size: int,
    control_test_items_per_pair: int,
    control_train_items_per_pair: int,
) -> dict:
    """The make-demo stage (rule `make_demo`): `generate_demo_dataset` from the cultures spec
    file ``spec`` into ``out``; returns the generation summary. No defaults: the rule passes
    the config's dataset.demo, whose defaults live in the workflow's schema."""
    summary = generate_demo_dataset(
        Path(spec),
        Path(out),
        seed=seed,
        test_items_per_pair=test_items_per_pair,
        train_items_per_pair=train_items_per_pair,
        image_size=image_size,
        control_test_items_per_pair=control_test_items_per_pair,
        control_train_items_per_pair=control_train_items_per_pair,
    )
    log.info("demo dataset written to %s: %s", out, json.dumps(summary, default=str)[:500])
    return summary
