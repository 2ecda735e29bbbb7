"""The select stage (rule `select`, `culture-neurons select`): score the neurons of one model's
activation store with one selector and write each culture's mask and a JSON report."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from culture_neurons.errors import InputError
from culture_neurons.record.aggregate import aggregate
from culture_neurons.record.store import open_store
from culture_neurons.selection.masks import ALL_CULTURES, write_masks
from culture_neurons.selection.selectors import is_culture_independent, select

log = logging.getLogger(__name__)


def select_stage(
    store: str | Path,
    selector: str,
    ratio: float,
    out: str | Path,
    report: str | Path,
    *,
    params: Mapping[str, Any] | None = None,
    only_correct: bool = True,
) -> dict[str, Any]:
    """Select ``ratio`` of all decoder-MLP neurons per culture with the selector instance
    ``selector`` (its method is ``params["method"]`` or the name before the first ``-``).

    Writes the masks (``out``, Zarr) and the report (``report``, JSON), and returns the report.
    A culture without correctly answered items gets an empty mask (its ablation equals the
    baseline) and is named in the report; a culture-specific selector needs at least two
    scorable cultures.
    """
    opened = open_store(store)
    params = dict(params or {})
    method = params.pop("method", selector.split("-")[0])
    agg = aggregate(opened, only_correct=only_correct)
    cultures = list(agg.cultures)
    scorable = agg.tokens > 0
    unscorable = [c for c, ok in zip(cultures, scorable, strict=True) if not ok]
    if unscorable:
        log.warning("no correctly answered items for %s: empty masks", ", ".join(unscorable))
    independent = is_culture_independent(method)
    if scorable.sum() < 2 and not independent:
        raise InputError(
            f"only {int(scorable.sum())} culture(s) have correctly answered items; "
            "a culture-specific selector needs at least two to compare"
        )
    start = time.perf_counter()
    selected = np.zeros(agg.fire_count.shape, dtype=bool)
    if independent:
        selected[:] = select(
            method, agg.fire_count, agg.pos_sum, np.maximum(agg.tokens, 1), ratio=ratio, **params
        )
    else:
        selected[scorable] = select(
            method, agg.fire_count[scorable], agg.pos_sum[scorable], agg.tokens[scorable],
            ratio=ratio, **params,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    if independent:
        selected, cultures = selected[:1], [ALL_CULTURES]
    attrs = {
        "selector": selector,
        "method": method,
        "params": params,
        "ratio": ratio,
        "store_fingerprint": opened.group.attrs.get("dataset_fingerprint"),
        "model": opened.group.attrs.get("model"),
        "correct_filter": agg.correct_filter,
        "thin_cultures": agg.thin_cultures,
        "unscorable_cultures": unscorable,
    }
    write_masks(out, selected, cultures, attrs)
    counts = selected.sum(axis=(1, 2))
    summary = {
        **attrs,
        "seconds": round(seconds, 3),
        "selected_per_culture": dict(zip(cultures, counts.tolist(), strict=True)),
        "selected_per_layer": dict(zip(cultures, selected.sum(axis=2).tolist(), strict=True)),
        "items_used": dict(zip(agg.cultures, agg.items_used.tolist(), strict=True)),
        "items_total": dict(zip(agg.cultures, agg.items_total.tolist(), strict=True)),
    }
    Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "%s: %s neurons per culture in %.2f s (%d layers x %d neurons)",
        selector,
        sorted(set(np.asarray(counts).tolist())),
        seconds,
        selected.shape[1],
        selected.shape[2],
    )
    return summary
