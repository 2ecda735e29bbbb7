"""The atlas stage (rule `atlas`, `culture-neurons atlas`): a static site per model of what each
selected neuron fires on, and its JSONL export (:mod:`culture_neurons.atlas`)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from culture_neurons.atlas.choose import chosen_neurons, top_of_ranking
from culture_neurons.atlas.export import write_export
from culture_neurons.atlas.profile import culture_profile, top_items
from culture_neurons.atlas.render import layer_histograms, write_site
from culture_neurons.atlas.scan import scan_store
from culture_neurons.atlas.site import AtlasData, Effect
from culture_neurons.atlas.thumbnails import write_thumbnails
from culture_neurons.errors import InputError
from culture_neurons.record.store import open_store
from culture_neurons.selection.masks import read_ranks

log = logging.getLogger(__name__)


def read_effects(path: str | Path) -> dict[str, Effect]:
    """source culture -> self and cross accuracy change, from a matrices summary table."""
    summary = pd.read_parquet(path)
    rows = summary[summary["metric"] == "delta"]
    return {
        str(r.source): Effect(float(r.self), float(r.cross))
        for r in rows.itertuples()
        if str(r.source) != "average"
    }


def atlas_stage(
    model: str,
    store: str | Path,
    items: str | Path,
    masks: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]],
    neurons_per_culture: int,
    top_k: int,
    out_dir: str | Path,
    export_out: str | Path,
    figure_out: str | Path,
    summaries: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]] = (),
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> int:
    """Write the atlas of ``model`` into ``out_dir``, its export to ``export_out`` and the layer
    histograms of every selector to ``figure_out`` (a PNG, for the report).

    ``masks``: selector instance -> mask store (its ranking gives each culture's
    ``neurons_per_culture`` best neurons); ``summaries``: selector -> its matrices summary (the
    self/cross effect shown beside each culture; optional). ``items``: items.parquet (question,
    options, image). ``top_k``: items listed per neuron at each end. Returns the neuron count.
    """
    start = time.perf_counter()
    if top_k < 1:
        raise InputError(f"atlas top_k must be at least 1, got {top_k}")
    choices = []
    selectors = []
    for selector, path in dict(masks).items():
        ranks, cultures, _ = read_ranks(path)
        choices += top_of_ranking(selector, ranks, cultures, neurons_per_culture)
        selectors.append(selector)
    neurons = chosen_neurons(choices)
    if not neurons:
        raise InputError(f"no selector chose any neuron for the atlas of {model}: nothing to show")
    activation_store = open_store(store)
    n_layers = activation_store.group["fire_count"].shape[1]
    # Checked before the long pass over the store: every stored item needs its question.
    table = pd.read_parquet(items).set_index("item_id")
    missing = sorted({str(i) for i in activation_store.group["item_id"][:]} - set(table.index))
    if missing:
        raise InputError(
            f"{len(missing)} item(s) of the activation store are not in {items} (e.g. "
            f"{missing[0]!r}): the store was recorded from another dataset"
        )
    log.info("atlas of %s: %d neurons from %d selector(s)", model, len(neurons), len(selectors))
    begun = time.perf_counter()
    activity = scan_store(activation_store, neurons)
    log.info("store read in %.1f s", time.perf_counter() - begun)
    profile = culture_profile(activity, n_boot=n_boot, seed=seed)
    scores = activity.activation
    top, bottom = top_items(scores, top_k), top_items(scores, top_k, lowest=True)
    out = Path(out_dir)
    if out.exists():  # a rerun starts clean: no pages of neurons no longer chosen
        shutil.rmtree(out)
    listed = set(activity.item_id[top].ravel()) | set(activity.item_id[bottom].ravel())
    thumbnails = write_thumbnails(table, listed, out / "thumbs")
    effects = {name: read_effects(path) for name, path in dict(summaries).items()}
    data = AtlasData(
        model, selectors, choices, activity, profile, top, bottom, table, thumbnails, effects
    )
    write_site(data, out, n_layers)
    # Non-empty: some selector chose a neuron (checked above).
    layer_histograms(data, [s for s in selectors if data.sets()[s]], n_layers, figure_out)
    records = write_export(data, export_out)
    log.info("atlas of %s: %d neurons in %.1f s", model, records, time.perf_counter() - start)
    return records
