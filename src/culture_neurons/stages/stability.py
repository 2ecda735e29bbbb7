"""The stability stage (rule `stability`, `culture-neurons stability`): every data-driven selector
of one model re-run on bootstrap resamples and label permutations of the identification items
(:mod:`culture_neurons.selection.stability`), from the activation store alone."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from culture_neurons.analysis.control_figures import plot_stability
from culture_neurons.record.store import open_store, write_index_coords
from culture_neurons.selection.stability import stability

log = logging.getLogger(__name__)


def write_frequency(
    path: str | Path, frequency: Mapping[str, np.ndarray], cultures: list[str], attrs: dict
) -> None:
    """One float32 ``[culture, layer, neuron]`` array per selector (share of bootstrap resamples
    selecting the neuron), with ``culture``, ``layer`` and ``neuron`` coordinate arrays."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    dims = ["culture", "layer", "neuron"]
    for name, values in frequency.items():
        array = group.create_array(
            name, shape=values.shape, chunks=(1, *values.shape[1:]), dtype=np.float32,
            dimension_names=dims,
        )  # fmt: skip
        array[:] = values
    names = group.create_array(
        "culture", shape=(len(cultures),), dtype=str, dimension_names=["culture"]
    )
    names[:] = np.asarray(cultures, dtype=str)
    _, n_layers, n_neurons = next(iter(frequency.values())).shape
    write_index_coords(group, layer=n_layers, neuron=n_neurons)
    group.attrs.update(attrs)


def stability_stage(
    store: str | Path,
    selectors: Mapping[str, Mapping[str, Any]],
    ratio: float,
    summary_out: str | Path,
    jaccards_out: str | Path,
    frequency_out: str | Path,
    figure_prefix: str | Path,
    *,
    model: str = "",
    only_correct: bool = True,
    resamples: int = 50,
    null_resamples: int = 10,
    seed: int = 0,
    min_items: int = 5,
    memory_gb: float = 1.5,
) -> dict[str, Any]:
    """Write the summary (CSV: per selector, culture and kind the mean Jaccard with its 95%
    interval), the per-replicate Jaccards (parquet), the selection frequencies (Zarr) and the
    selectors x cultures figure; returns counts and timings. ``selectors``: instance name ->
    parameters with ``method`` (controls and culture-independent ones are skipped)."""
    opened = open_store(store)
    result = stability(
        opened, selectors, ratio=ratio, only_correct=only_correct, n_resamples=resamples,
        null_resamples=null_resamples, seed=seed, min_items=min_items, memory_gb=memory_gb,
    )  # fmt: skip
    for path in (summary_out, jaccards_out):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    result.summary.to_csv(summary_out, index=False)
    result.jaccards.to_parquet(jaccards_out, index=False)
    attrs = {
        "resamples": resamples,
        "null_resamples": null_resamples,
        "seed": seed,
        "ratio": ratio,
        "only_correct": only_correct,
        "store_fingerprint": opened.group.attrs.get("dataset_fingerprint"),
        "selectors": json.loads(json.dumps(dict(selectors))),
    }
    write_frequency(frequency_out, result.frequency, result.cultures, attrs)
    plot_stability(result.summary, model or str(opened.group.attrs.get("model", "")), figure_prefix)
    means = result.summary.groupby(["selector", "kind"])["mean"].mean().round(3)
    log.info("mean Jaccard per selector and kind:\n%s", means.to_string())
    skipped = sorted(set(selectors) - set(result.frequency))
    if skipped:
        log.info("not resampled (no statistics of their own): %s", ", ".join(skipped))
    return {"selectors": sorted(result.frequency), "skipped": skipped, **result.seconds}
