"""The control-effect stage (rule `control_effect`, `culture-neurons control-effect`): does a
culture-independent mask (``attr_general``, RND) hurt cultural questions more than the control
task's culture-free questions in the same format?

The control task's evaluation half is answered unmasked and under each selector's mask (zeroing,
one model load); the cultural side is the selector's ablation of the evaluation split against
the unmasked evaluation baseline. Per selector and task: accuracy change and flip rate (points)
with percentile bootstrap intervals over items; and the difference cultural - control, whose
interval resamples the two item sets independently. Diagnostic, not causal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from culture_neurons.ablation.conditions import banks, parse_intervention
from culture_neurons.analysis.metrics import _align, flips
from culture_neurons.data.split import EVALUATION, split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.batch_memory import checked_ceiling
from culture_neurons.inference.engine import answer_masked
from culture_neurons.models import load_adapter_for_masks
from culture_neurons.selection.masks import ALL_CULTURES, read_masks
from culture_neurons.statistics import percentile_interval

log = logging.getLogger(__name__)

COLUMNS = ["selector", "task", "metric", "value", "ci_low", "ci_high", "n_items", "neurons"]
METRICS = ("accuracy_change", "flip_rate")


def item_changes(baseline: pd.DataFrame, masked: pd.DataFrame, what: str) -> dict[str, np.ndarray]:
    """Per item, in points: accuracy change (masked - unmasked correctness) and flip (0/100)."""
    masked = _align(baseline, masked, what)
    if (baseline["correct"] < 0).any():
        raise InputError(f"{what}: labels are hidden; the control effect needs accuracy")
    change = (masked["correct"].to_numpy(float) - baseline["correct"].to_numpy(float)) * 100
    flipped = flips(
        baseline["choice"].to_numpy(), masked["choice"].to_numpy(),
        baseline["output"].tolist(), masked["output"].tolist(),
    )  # fmt: skip
    return {"accuracy_change": change, "flip_rate": flipped.astype(float) * 100}


def _boot_means(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    picks = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[picks].mean(axis=1)


def effect_rows(
    selector: str,
    cultural: Mapping[str, np.ndarray],
    control: Mapping[str, np.ndarray],
    *,
    neurons: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows (see COLUMNS) for one selector: cultural, control and cultural - control."""
    rows = []
    for metric in METRICS:
        rng = np.random.default_rng([seed, METRICS.index(metric)])
        boots = {}
        for task, values in (("cultural", cultural[metric]), ("control", control[metric])):
            if not len(values):
                raise InputError(f"{selector}: no {task} evaluation items")
            boots[task] = _boot_means(values, rng, n_boot)
            lo, hi = percentile_interval(boots[task])
            rows.append(
                {"selector": selector, "task": task, "metric": metric,
                 "value": float(values.mean()), "ci_low": float(lo), "ci_high": float(hi),
                 "n_items": len(values), "neurons": neurons}
            )  # fmt: skip
        diff = boots["cultural"] - boots["control"]
        lo, hi = percentile_interval(diff)
        rows.append(
            {"selector": selector, "task": "cultural - control", "metric": metric,
             "value": float(cultural[metric].mean() - control[metric].mean()),
             "ci_low": float(lo), "ci_high": float(hi),
             "n_items": len(cultural[metric]) + len(control[metric]), "neurons": neurons}
        )  # fmt: skip
    return rows


def render_markdown(table: pd.DataFrame, accuracy: Mapping[str, float]) -> str:
    lines = [
        "# Cultural vs control questions under culture-independent masks",
        "",
        f"Unmasked accuracy: cultural {accuracy['cultural']:.1f}%, "
        f"control {accuracy['control']:.1f}% (evaluation halves).",
        "",
        "Points; 95% bootstrap intervals over items. `cultural - control` > 0 for the accuracy",
        "change means the control questions lost MORE; < 0: the cultural questions lost more.",
        "Diagnostic of what the masked neurons are needed for, not causal.",
        "",
        "| selector | neurons | metric | cultural | control | cultural - control |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for (selector, metric), group in table.groupby(["selector", "metric"], sort=False):
        cells = {
            row.task: f"{row.value:+.1f} [{row.ci_low:+.1f}, {row.ci_high:+.1f}]"
            for row in group.itertuples()
        }
        lines.append(
            f"| {selector} | {group['neurons'].iloc[0]} | {metric} | {cells['cultural']} "
            f"| {cells['control']} | {cells['cultural - control']} |"
        )
    return "\n".join(lines) + "\n"


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
