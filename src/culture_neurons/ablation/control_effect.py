"""The control effect (stage `control_effect`, `culture-neurons control-effect`): does a
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
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from culture_neurons.analysis.metrics import _align, flips
from culture_neurons.errors import InputError
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
