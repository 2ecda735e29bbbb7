"""The ablate stage (rule `ablate`, `culture-neurons ablate`): one model load serves every source
culture's mask of one selector; one answer table per source culture."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from culture_neurons.data.split import EVALUATION, split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.batch_memory import checked_ceiling
from culture_neurons.inference.engine import answer_masked
from culture_neurons.models import load_adapter
from culture_neurons.models.spec import model_spec_from_config
from culture_neurons.selection.masks import keep_masks, read_masks

log = logging.getLogger(__name__)


def ablate_stage(
    items: str | Path,
    model: Mapping[str, Any],
    masks: str | Path,
    out_dir: str | Path,
    *,
    sources: Sequence[str] = ("all",),
    batch_size: int = 8,
    max_batch_size: int = 0,
    max_new_tokens: int = 20,
) -> list[Path]:
    """Answer the evaluation split of ``items`` once per source culture of ``masks`` (``all``:
    every culture in the mask store) with that culture's neurons off; writes
    ``out_dir/{source}.parquet`` and returns the paths."""
    ceiling = checked_ceiling(batch_size, max_batch_size)
    selected, cultures, _ = read_masks(masks)
    chosen = list(cultures) if list(sources) == ["all"] else list(sources)
    keep = keep_masks(selected, chosen, cultures)
    evaluation = split_rows(pd.read_parquet(items), EVALUATION)
    adapter = load_adapter(model_spec_from_config(model))
    if keep.shape[1:] != (adapter.n_layers, adapter.n_neurons):
        raise InputError(
            f"mask shape {tuple(keep.shape[1:])} does not fit the model's "
            f"{adapter.n_layers} x {adapter.n_neurons} decoder-MLP neurons"
        )
    tables = answer_masked(
        adapter,
        evaluation,
        keep,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        desc=f"ablate {','.join(chosen)}",
        max_batch_size=ceiling,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for source, table in zip(chosen, tables, strict=True):
        table.insert(0, "source", source)
        path = out / f"{source}.parquet"
        table.to_parquet(path, index=False)
        paths.append(path)
        log.info("%s: %d items answered with its neurons off", source, len(table))
    return paths
