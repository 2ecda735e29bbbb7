"""The ablate stage (rule `ablate`, `culture-neurons ablate`): one model load serves every source
culture's mask of one selector at every swept ratio, under one intervention kind; one answer
table per ratio and source culture.

Tables go to ``out_dir/{source}.parquet`` at the headline ratio (the mask store's ``ratio``) and
to ``out_dir/r{ratio}/{source}.parquet`` at the other ratios.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from culture_neurons.ablation.conditions import banks, parse_intervention, ratio_label
from culture_neurons.data.split import EVALUATION, split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.batch_memory import checked_ceiling
from culture_neurons.inference.engine import answer_masked
from culture_neurons.models import load_adapter
from culture_neurons.models.spec import model_spec_from_config
from culture_neurons.record.store import identification_means, open_store
from culture_neurons.selection.masks import masks_at_ratio, read_masks, read_ranks

log = logging.getLogger(__name__)


def table_path(
    out_dir: str | Path,
    source: str,
    ratio: float,
    headline_ratio: float,
    sweep_dir: str | Path | None = None,
) -> Path:
    """Where the ablate stage writes the answers of ``source``'s mask at ``ratio``: the headline
    ratio's in ``out_dir``, the others in ``{sweep_dir or out_dir}/r{ratio}/``."""
    if ratio == headline_ratio:
        return Path(out_dir) / f"{source}.parquet"
    return Path(sweep_dir or out_dir) / ratio_label(ratio) / f"{source}.parquet"


def sweep_masks(
    masks: str | Path, sources: Sequence[str], ratios: Sequence[float]
) -> tuple[list[tuple[float, str]], np.ndarray, float]:
    """(ratio, source) of each mask row, the bool rows ``[M, L, D]`` and the headline ratio.

    The headline ratio's rows are the store's ``selected``; the others come from its ranking, so
    every ratio's mask is nested in the next larger one's."""
    selected, cultures, attrs = read_masks(masks)
    if "ratio" not in attrs:
        raise InputError(
            f"mask store {masks} has no 'ratio' attribute (not written by `culture-neurons "
            "select`?): rerun its select job"
        )
    headline = float(attrs["ratio"])
    missing = [s for s in sources if s not in cultures]
    if missing:
        raise InputError(f"no mask for source culture(s) {missing}; the mask has {cultures}")
    rows = [cultures.index(s) for s in sources]
    by_ratio = {headline: selected[rows]}
    others = [float(r) for r in ratios if float(r) != headline]
    if others:
        ranks, _, _ = read_ranks(masks)
        for ratio in others:
            by_ratio[ratio] = masks_at_ratio(ranks[rows], ratio)
    keys = [(ratio, source) for ratio in sorted(by_ratio) for source in sources]
    stacked = np.concatenate([by_ratio[ratio] for ratio in sorted(by_ratio)])
    return keys, stacked, headline


def ablate_stage(
    items: str | Path,
    model: Mapping[str, Any],
    masks: str | Path,
    out_dir: str | Path,
    *,
    sources: Sequence[str] = ("all",),
    ratios: Sequence[float] = (),
    intervention: Mapping[str, Any] | None = None,
    store: str | Path | None = None,
    sweep_dir: str | Path | None = None,
    batch_size: int = 8,
    max_batch_size: int = 0,
    max_new_tokens: int = 20,
) -> list[Path]:
    """Answer the evaluation split of ``items`` once per source culture of ``masks`` (``all``:
    every culture in the mask store) and ratio (default: only the store's headline ``ratio``)
    with ``intervention`` (``{"kind": "zero" | "mean" | "scale", "factor": k}``) applied to that
    mask's neurons; ``mean`` needs the activation ``store``. Tables of ratios other than the
    headline go to ``sweep_dir`` (default ``out_dir``, see `table_path`). Returns their paths."""
    ceiling = checked_ceiling(batch_size, max_batch_size)
    kind = parse_intervention(intervention or {"kind": "zero"}, "--intervention")
    _, cultures, _ = read_masks(masks)
    chosen = list(cultures) if list(sources) == ["all"] else list(sources)
    keys, selected, headline = sweep_masks(masks, chosen, ratios)
    means = None
    if kind.needs_means:
        if store is None:
            raise InputError("the mean intervention needs --store (the activation store)")
        means = identification_means(open_store(store))
    factor, offset = banks(selected, kind, means)
    evaluation = split_rows(pd.read_parquet(items), EVALUATION)
    adapter = load_adapter(model_spec_from_config(model))
    if factor.shape[1:] != (adapter.n_layers, adapter.n_neurons):
        raise InputError(
            f"mask shape {tuple(factor.shape[1:])} does not fit the model's "
            f"{adapter.n_layers} x {adapter.n_neurons} decoder-MLP neurons"
        )
    log.info(
        "%s: %d masks (%d ratios x %d sources) in one run",
        kind.name, len(keys), len(keys) // len(chosen), len(chosen),
    )  # fmt: skip
    tables = answer_masked(
        adapter,
        evaluation,
        torch.from_numpy(factor),
        offset=None if offset is None else torch.from_numpy(offset),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        desc=f"ablate {kind.name} {','.join(chosen)}",
        max_batch_size=ceiling,
    )
    paths = []
    for (ratio, source), table in zip(keys, tables, strict=True):
        table.insert(0, "source", source)
        table.insert(1, "ratio", ratio)
        table.insert(2, "intervention", kind.name)
        path = table_path(out_dir, source, ratio, headline, sweep_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(path, index=False)
        paths.append(path)
        log.info("%s at ratio %g: %d items answered (%s)", source, ratio, len(table), kind.name)
    return paths
