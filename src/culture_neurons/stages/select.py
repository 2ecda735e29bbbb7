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
from culture_neurons.record.aggregate import NORM_STATISTIC, aggregate, relative_magnitude
from culture_neurons.record.attribution_store import (
    AttributionAggregates,
    aggregate_attribution,
    is_attribution_store,
    open_attribution_store,
)
from culture_neurons.record.store import ActivationStore, open_store
from culture_neurons.selection.attribution import attribution_ranks
from culture_neurons.selection.conventions import ALL_CULTURES, NOT_RANKED
from culture_neurons.selection.masks import read_ranks, write_masks
from culture_neurons.selection.registry import (
    ATTRIBUTION_SCORES,
    FIRING,
    REFERENCE_MASKS,
    SelectorSpec,
    check_params,
    spec,
)
from culture_neurons.selection.selectors import budget, mask_from_ranks, rank, select

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
    reference_masks: str | Path | None = None,
) -> dict[str, Any]:
    """Select ``ratio`` of all decoder-MLP neurons per culture with the selector instance
    ``selector`` (its method is ``params["method"]`` or the name before the first ``-``).

    Writes the masks (``out``, Zarr) and the report (``report``, JSON), and returns the report.
    A culture without correctly answered items gets an empty mask (its ablation equals the
    baseline) and is named in the report; a culture-specific selector needs at least two
    scorable cultures. A control (``rnd_matched``) is drawn from ``reference_masks``, the masks
    of the selector its ``reference`` parameter names, instead of the statistics.
    """
    params = dict(params or {})
    method = params.pop("method", selector.split("-")[0])
    try:
        entry = spec(method)
        values = check_params(method, params)
    except ValueError as err:
        raise InputError(f"selector {selector!r}: {err}") from err
    if entry.inputs == ATTRIBUTION_SCORES:
        summary = _attribution_masks(store, selector, entry, params, values, ratio, out)
        Path(report).write_text(json.dumps(summary, indent=2) + "\n")
        log.info("%s: %s neurons", selector, summary["selected_per_culture"])
        return summary
    opened = open_store(store)
    if entry.inputs == REFERENCE_MASKS:
        summary = _control_masks(
            opened, selector, entry, params, values, ratio, out, reference_masks
        )
    else:
        assert entry.inputs == FIRING, entry
        summary = _selected_masks(opened, selector, entry, params, ratio, out, only_correct)
    Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    counts = summary["selected_per_culture"].values()
    log.info(
        "%s: %s neurons per culture in %.2f s", selector, sorted(set(counts)), summary["seconds"]
    )
    return summary


def _store_attrs(opened: ActivationStore) -> dict[str, Any]:
    attrs = {
        "store_fingerprint": opened.group.attrs.get("dataset_fingerprint"),
        "model": opened.group.attrs.get("model"),
    }
    # The decoder MLP's store has no site attribute, and its masks stay as they were.
    if "site" in opened.group.attrs:
        attrs["site"] = opened.group.attrs["site"]
        attrs["statistic"] = opened.group.attrs["statistic"]
    return attrs


def _counts(selected: np.ndarray, cultures: list[str]) -> dict[str, Any]:
    return {
        "selected_per_culture": dict(
            zip(cultures, selected.sum(axis=(1, 2)).tolist(), strict=True)
        ),
        "selected_per_layer": dict(zip(cultures, selected.sum(axis=2).tolist(), strict=True)),
    }


def _ranking_attrs(ranks: np.ndarray | None, cultures: list[str]) -> dict[str, Any]:
    """What a ratio sweep can rely on: whether the store has a ranking, and how many candidates
    each culture has (a culture's masks stop growing there; they stay nested)."""
    if ranks is None:
        return {"ranked": False, "nested": False}
    candidates = (ranks >= 0).sum(axis=(1, 2)).tolist()
    return {
        "ranked": True,
        "nested": True,
        "candidates_per_culture": dict(zip(cultures, candidates, strict=True)),
    }


def _selected_masks(
    opened: ActivationStore,
    selector: str,
    entry: SelectorSpec,
    params: dict[str, Any],
    ratio: float,
    out: str | Path,
    only_correct: bool,
) -> dict[str, Any]:
    method = entry.name
    agg = aggregate(opened, only_correct=only_correct)
    if opened.group.attrs.get("statistic") == NORM_STATISTIC:
        agg = relative_magnitude(agg)
    cultures = list(agg.cultures)
    scorable = agg.tokens > 0
    unscorable = [c for c, ok in zip(cultures, scorable, strict=True) if not ok]
    if unscorable:
        log.warning("no correctly answered items for %s: empty masks", ", ".join(unscorable))
    independent = entry.culture_independent
    if scorable.sum() < 2 and not independent:
        raise InputError(
            f"only {int(scorable.sum())} culture(s) have correctly answered items; "
            "a culture-specific selector needs at least two to compare"
        )
    start = time.perf_counter()
    ranked = entry.rank is not None
    rows = slice(None) if independent else scorable
    tokens = np.maximum(agg.tokens, 1) if independent else agg.tokens[scorable]
    inputs = (agg.fire_count[rows], agg.pos_sum[rows], tokens)
    ranks = None
    if ranked:
        ranks = np.full(agg.fire_count.shape, NOT_RANKED, dtype=np.int32)
        ranks[rows] = rank(method, *inputs, **params)
        selected = mask_from_ranks(ranks, budget(ratio, *ranks.shape[1:]))
    else:
        selected = np.zeros(agg.fire_count.shape, dtype=bool)
        selected[rows] = select(method, *inputs, ratio=ratio, **params)
    seconds = time.perf_counter() - start
    if independent:
        selected, cultures = selected[:1], [ALL_CULTURES]
        ranks = None if ranks is None else ranks[:1]
    attrs = {
        "selector": selector,
        "method": method,
        "params": params,
        "ratio": ratio,
        **_store_attrs(opened),
        "correct_filter": agg.correct_filter,
        "thin_cultures": agg.thin_cultures,
        "unscorable_cultures": unscorable,
        **_ranking_attrs(ranks, cultures),
    }
    write_masks(out, selected, cultures, attrs, ranks=ranks)
    return {
        **attrs,
        "seconds": round(seconds, 3),
        **_counts(selected, cultures),
        "items_used": dict(zip(agg.cultures, agg.items_used.tolist(), strict=True)),
        "items_total": dict(zip(agg.cultures, agg.items_total.tolist(), strict=True)),
    }


def _exclusion_note(agg: AttributionAggregates) -> str:
    """What the exclusion filter did, for the report: cultures without exclusion items are named
    (nothing is excluded for them)."""
    if agg.exclusion is None:
        return "skipped: no exclusion task"
    missing = [c for c in agg.cultures if not agg.items["exclusion"].get(c)]
    if missing:
        return f"applied; no exclusion items for {', '.join(missing)} (nothing excluded there)"
    return "applied"


def _attribution_masks(
    store: str | Path,
    selector: str,
    entry: SelectorSpec,
    params: dict[str, Any],
    values: dict[str, Any],
    ratio: float,
    out: str | Path,
) -> dict[str, Any]:
    """Masks of an attribution selector (`culture_neurons.selection.attribution`) from the
    attribution store; the control subtraction and the exclusion set apply when the store
    holds a control / exclusion task, and the report says whether they did."""
    method = entry.name
    if not is_attribution_store(store):
        raise InputError(f"selector {selector!r} ({method}) needs an attribution store: {store}")
    opened = open_attribution_store(store)
    agg = aggregate_attribution(opened)
    start = time.perf_counter()
    try:
        ranks = attribution_ranks(
            method, agg.cultural, control=agg.control, exclusion=agg.exclusion, **params
        )
    except ValueError as err:
        raise InputError(f"selector {selector!r}: {err}") from err
    k = budget(ratio, *ranks.shape[1:])
    selected = mask_from_ranks(ranks, k)
    seconds = time.perf_counter() - start
    cultures = [ALL_CULTURES] if entry.culture_independent else list(agg.cultures)
    attrs = {
        "selector": selector,
        "method": method,
        "params": values,
        "ratio": ratio,
        "store_fingerprint": opened.group.attrs.get("dataset_fingerprint"),
        "model": opened.group.attrs.get("model"),
        "scores": "attribution",
        "correct_filter": False,  # every item counts, weighted by p(gold)
        "control_subtraction": "applied" if agg.control is not None else "skipped: no control task",
        "exclusion": _exclusion_note(agg),
        "thin_cultures": [],
        "unscorable_cultures": [],
        **_ranking_attrs(ranks, cultures),
    }
    write_masks(out, selected, cultures, attrs, ranks=ranks)
    return {
        **attrs,
        "seconds": round(seconds, 3),
        "budget": k,
        **_counts(selected, cultures),
        "items": agg.items,
        "mean_p_gold": agg.mean_p_gold,
    }


def _control_masks(
    opened: ActivationStore,
    selector: str,
    entry: SelectorSpec,
    params: dict[str, Any],
    values: dict[str, Any],
    ratio: float,
    out: str | Path,
    reference_masks: str | Path | None,
) -> dict[str, Any]:
    method, key = entry.name, entry.reference
    if reference_masks is None:
        raise InputError(f"selector {selector!r} ({method}) needs --reference-masks")
    reference_ranks, cultures, ref_attrs = read_ranks(reference_masks)
    if cultures == [ALL_CULTURES]:
        raise InputError(
            f"selector {selector!r}: {key} {params[key]!r} is culture-independent; "
            "a layer-matched control needs one mask per culture"
        )
    mine = _store_attrs(opened)
    if ref_attrs.get("store_fingerprint") != mine["store_fingerprint"]:
        raise InputError(
            f"selector {selector!r}: the reference masks {reference_masks} were selected on "
            "another activation store; rerun its select job"
        )
    if ref_attrs.get("site") != mine.get("site") or reference_ranks.shape[1:] != tuple(
        opened.group["fire_count"].shape[1:]
    ):
        raise InputError(
            f"selector {selector!r}: the reference masks {reference_masks} rank the units of "
            f"another site ({ref_attrs.get('site', 'decoder_mlp')}) than this store's "
            f"({mine.get('site', 'decoder_mlp')})"
        )
    start = time.perf_counter()
    ranks = entry.rank(reference_ranks, cultures, seed=int(values["seed"]))
    reference_ratio = float(ref_attrs.get("ratio", ratio))
    selected = mask_from_ranks(ranks, budget(reference_ratio, *ranks.shape[1:]))
    seconds = time.perf_counter() - start
    empty = [c for c, row in zip(cultures, selected, strict=True) if not row.any()]
    if empty:
        log.warning("the reference selects nothing for %s: empty masks", ", ".join(empty))
    attrs = {
        "selector": selector,
        "method": method,
        "params": params,
        # The reference's ratio: a control always matches its reference's counts.
        "ratio": reference_ratio,
        **mine,
        "reference_selector": ref_attrs.get("selector"),
        "correct_filter": ref_attrs.get("correct_filter"),
        "empty_reference_cultures": empty,
        "unscorable_cultures": list(ref_attrs.get("unscorable_cultures", [])),
        **_ranking_attrs(ranks, cultures),
    }
    write_masks(out, selected, cultures, attrs, ranks=ranks)
    return {**attrs, "seconds": round(seconds, 3), **_counts(selected, cultures)}
