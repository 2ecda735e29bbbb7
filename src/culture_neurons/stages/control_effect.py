"""The control-effect stage (rule `control_effect`, `culture-neurons control-effect`): the control
task answered unmasked and under each culture-independent mask, against the cultural ablations
(`culture_neurons.ablation.control_effect`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from culture_neurons.ablation.conditions import banks, parse_intervention
from culture_neurons.ablation.control_effect import (
    COLUMNS,
    effect_rows,
    item_changes,
    render_markdown,
)
from culture_neurons.data.split import EVALUATION, split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.batch_memory import checked_ceiling
from culture_neurons.inference.engine import answer_masked
from culture_neurons.models import load_adapter_for_masks
from culture_neurons.selection.masks import ALL_CULTURES, read_masks

log = logging.getLogger(__name__)


def control_effect_stage(
    control_items: str | Path,
    model: Mapping[str, Any],
    masks: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]],
    ablations: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]],
    baseline: str | Path,
    out: str | Path,
    report: str | Path,
    *,
    batch_size: int = 8,
    max_batch_size: int = 0,
    max_new_tokens: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """``masks`` and ``ablations`` map each selector to a culture-independent mask store and to
    its ablation table of the evaluation split; ``baseline`` is the unmasked
    evaluation table. Writes the table ``out`` (parquet) and ``report`` (markdown)."""
    ceiling = checked_ceiling(batch_size, max_batch_size)
    mask_paths, table_paths = dict(masks), dict(ablations)
    if set(mask_paths) != set(table_paths):
        raise InputError(
            f"--masks {sorted(mask_paths)} and --ablations {sorted(table_paths)} differ"
        )
    rows = split_rows(pd.read_parquet(control_items), EVALUATION)
    if rows.empty:
        raise InputError(f"{control_items} has no evaluation items: no control task to measure")
    selected, counts = [], {}
    for name, path in mask_paths.items():
        mask, cultures, _ = read_masks(path)
        if cultures != [ALL_CULTURES]:
            raise InputError(
                f"{name}: {path} has one mask per culture; give a culture-independent one"
            )
        selected.append(mask[0])
        counts[name] = int(mask[0].sum())
    factor, _ = banks(np.stack(selected), parse_intervention({"kind": "zero"}, "zero"), None)
    adapter = load_adapter_for_masks(model, factor.shape)
    common = {
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "max_batch_size": ceiling,
    }
    (control_base,) = answer_masked(adapter, rows, None, desc="control baseline", **common)
    control_masked = answer_masked(
        adapter, rows, torch.from_numpy(factor), desc="control masked", **common
    )
    cultural_base = pd.read_parquet(baseline)
    records = []
    for i, name in enumerate(mask_paths):
        masked = pd.read_parquet(table_paths[name])
        cultural = item_changes(cultural_base, masked, f"{name} (cultural)")
        control = item_changes(control_base, control_masked[i], f"{name} (control)")
        records += effect_rows(
            name, cultural, control, neurons=counts[name], n_boot=n_boot, seed=seed
        )
    table = pd.DataFrame.from_records(records, columns=COLUMNS)
    table.to_parquet(out, index=False)
    accuracy = {
        "cultural": float((cultural_base["correct"] == 1).mean() * 100),
        "control": float((control_base["correct"] == 1).mean() * 100),
    }
    Path(report).write_text(render_markdown(table, accuracy))
    log.info("control task: %d items, unmasked accuracy %.1f%%", len(rows), accuracy["control"])
    return table
