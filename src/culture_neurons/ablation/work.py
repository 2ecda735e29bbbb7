"""The work of an ablate job (stages `ablate` and `ablate_shard`): one model load serves every
source culture's mask of one selector at every swept ratio, under one intervention kind; one
answer table per ratio and source culture.

Tables go to ``out_dir/{source}.parquet`` at the headline ratio (the mask store's ``ratio``) and
to ``out_dir/r{ratio}/{source}.parquet`` at the other ratios. The rows are answered chunk by
chunk into a partial folder beside ``out_dir`` (`partial_dir`), so a killed job resumes; the
chunks can be shared out over several jobs (rule `ablate_shard`) and gathered by the ablate
job.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from culture_neurons.ablation.chunks import (
    chunk_bounds,
    chunk_size,
)
from culture_neurons.ablation.conditions import Intervention, banks, parse_intervention, ratio_label
from culture_neurons.ablation.partial import PartialWork
from culture_neurons.data.split import EVALUATION, split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.batch_memory import checked_ceiling
from culture_neurons.inference.engine import answer_masked, items_per_window
from culture_neurons.models import load_adapter_for_masks
from culture_neurons.models.loading import model_provenance
from culture_neurons.models.spec import AdapterSpec, model_spec_from_config
from culture_neurons.record.store import identification_means, open_store
from culture_neurons.selection.conventions import DECODER_MLP
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


def rows_fingerprint(rows: pd.DataFrame) -> str:
    """A hash of the rows' content (in-memory images excluded: items tables name their files)."""
    text = rows.drop(columns=["image"], errors="ignore").astype(str)
    hashed = pd.util.hash_pandas_object(text, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + "|".join(text.columns).encode()).hexdigest()


def weights_fingerprint(path: str) -> list[list[Any]]:
    """Name, size and modification time of a local model folder's files (weights rewritten at
    the same path start the work over); nothing for a hub id (its revision is in the spec)."""
    folder = Path(path)
    if not folder.is_dir():
        return []
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(folder.iterdir())]


@dataclass
class AblateWork:
    """What one ablate job answers: every evaluation row under every (ratio, source) mask."""

    keys: list[tuple[float, str]]  # (ratio, source) of each mask
    headline: float
    kind: Intervention
    factor: np.ndarray  # [M, L, D]
    offset: np.ndarray | None
    evaluation: pd.DataFrame
    bounds: list[tuple[int, int]]  # [start, stop) rows of each chunk
    manifest: dict[str, Any]
    provenance: dict[str, str | None]  # the model that answers (`model_provenance`)
    site: str = DECODER_MLP  # whose units the masks are (`culture_neurons.models.sites`)


def plan_work(
    items: str | Path,
    model: Mapping[str, Any],
    masks: str | Path,
    *,
    sources: Sequence[str],
    ratios: Sequence[float],
    intervention: Mapping[str, Any] | None,
    store: str | Path | None,
    batch_size: int,
    max_batch_size: int,
    max_new_tokens: int,
    chunk_items: int,
) -> AblateWork:
    """The masks, rows and chunks of an ablate job, without loading the model."""
    checked_ceiling(batch_size, max_batch_size)  # before anything is read
    kind = parse_intervention(intervention or {"kind": "zero"}, "--intervention")
    _, cultures, mask_attrs = read_masks(masks)
    site = mask_attrs.get("site", DECODER_MLP)
    chosen = list(cultures) if list(sources) == ["all"] else list(sources)
    keys, selected, headline = sweep_masks(masks, chosen, ratios)
    means = None
    if kind.needs_means:
        if store is None:
            raise InputError("the mean intervention needs --store (the activation store)")
        means = identification_means(open_store(store))
    factor, offset = banks(selected, kind, means)
    evaluation = split_rows(pd.read_parquet(items), EVALUATION)
    if chunk_items < 1:
        raise InputError(f"--chunk-items must be at least 1, not {chunk_items}")
    window = items_per_window(len(keys), batch_size, max_batch_size)
    size = chunk_size(chunk_items, window)
    bank_hash = hashlib.sha256(factor.tobytes())
    if offset is not None:
        bank_hash.update(offset.tobytes())
    spec = {k: v for k, v in model_spec_from_config(model).items() if k != "gpus"}
    # What the answers depend on. Not the batch size: a retry halves it (profiles' retries)
    # and must resume; batches of another size change answers by float rounding at most.
    manifest = {
        "format": 1,
        "items": rows_fingerprint(evaluation),
        "n_items": len(evaluation),
        "masks": bank_hash.hexdigest(),
        "mask_keys": [[ratio, source] for ratio, source in keys],
        "intervention": kind.name,
        "model": spec,
        "weights": weights_fingerprint(str(spec.get("path", ""))),
        "max_new_tokens": max_new_tokens,
        "chunk_items": size,
    }
    if site != DECODER_MLP:  # a decoder job's manifest stays as it was: its partials resume
        manifest["site"] = site
    return AblateWork(
        keys=keys,
        headline=headline,
        kind=kind,
        factor=factor,
        offset=offset,
        evaluation=evaluation,
        bounds=chunk_bounds(len(evaluation), size),
        manifest=json.loads(json.dumps(manifest)),  # as read back from the manifest file
        provenance=model_provenance(AdapterSpec.from_mapping(spec)),
        site=site,
    )


def answer_chunks(
    work: AblateWork,
    partial: PartialWork,
    chunks: Sequence[int],
    model: Mapping[str, Any],
    *,
    batch_size: int,
    max_batch_size: int,
    max_new_tokens: int,
    desc: str,
) -> None:
    """Answer ``chunks`` (those not yet in ``partial``) under every mask, writing each as it
    finishes; the model is loaded only if there is something to answer."""
    ceiling = checked_ceiling(batch_size, max_batch_size)
    todo = partial.missing(chunks)
    n_masks = len(work.keys)
    answers = [(stop - start) * n_masks for start, stop in work.bounds]
    if not todo:
        log.info("%s: all %d chunks already answered", desc, len(chunks))
        return
    adapter = load_adapter_for_masks(model, work.factor.shape, work.site)
    factor = torch.from_numpy(work.factor)
    offset = None if work.offset is None else torch.from_numpy(work.offset)
    total = sum(answers[i] for i in chunks)
    resumed = total - sum(answers[i] for i in todo)
    with tqdm(total=total, initial=resumed, desc=desc, unit="answer", mininterval=2.0) as bar:
        for chunk in todo:
            start, stop = work.bounds[chunk]
            tables = answer_masked(
                adapter,
                work.evaluation.iloc[start:stop],
                factor,
                offset=offset,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                desc=f"chunk {chunk + 1}/{len(work.bounds)}",
                max_batch_size=ceiling,
                site=work.site,
            )
            partial.write_chunk(chunk, tables)
            bar.update(answers[chunk])
            log.info("chunk %d/%d (items %d-%d) written", chunk + 1, len(work.bounds), start, stop)


def write_tables(
    work: AblateWork, partial: PartialWork, out_dir: str | Path, sweep_dir: str | Path | None
) -> list[Path]:
    """One table per (ratio, source) from the finished chunks; the tables say which source,
    ratio and intervention they answer under."""
    missing = partial.missing()
    if missing:
        raise InputError(
            f"{len(missing)} of {partial.n_chunks} chunks of this ablate job are not answered "
            f"(chunk(s) {missing} missing in {partial.folder}): rerun its ablate_shard jobs "
            "(Snakemake reruns them when their done markers are gone)"
        )
    paths = []
    for (ratio, source), table in zip(work.keys, partial.read_tables(len(work.keys)), strict=True):
        table.insert(0, "source", source)
        table.insert(1, "ratio", ratio)
        table.insert(2, "intervention", work.kind.name)
        table.attrs["model"] = work.provenance
        path = table_path(out_dir, source, ratio, work.headline, sweep_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(path, index=False)
        paths.append(path)
        kind = work.kind.name
        log.info("%s at ratio %g: %d items answered (%s)", source, ratio, len(table), kind)
    return paths
