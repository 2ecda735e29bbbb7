"""The attribution store: per-item attribution scores of every decoder-MLP neuron (Zarr v3).

Layout: ``score[item, layer, neuron]`` float32 (`culture_neurons.record.attribution`),
``p_gold[item]``, ``item_id``, ``culture``, ``task[item]`` (``cultural``: the identification
split; ``control``: the control task's identification half; ``exclusion``: every item of the
exclusion task), ``chunk_done[chunk]`` and ``chunk_digest[chunk]`` (SHA-256 of the chunk's scores
and p_gold, a bare hex digest). Written, resumed and checked like every chunked store
(`culture_neurons.record.chunked_store`): data, then checksum, then flag; a partial store lives
beside the output until complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import zarr

from culture_neurons.errors import InputError
from culture_neurons.record.chunked_store import (
    ChunkedStore,
    CorruptStoreError,
    sha256,
)
from culture_neurons.record.chunked_store import (
    create_or_resume as create_or_resume_store,
)
from culture_neurons.record.store import neuron_chunks, neuron_codecs

log = logging.getLogger(__name__)

TASKS = ("cultural", "control", "exclusion")
KIND = "attribution"
# The one checksummed part of a chunk: its scores and p_gold (stored as a bare hex digest).
SCORES = "scores"


@dataclass
class AttributionStore(ChunkedStore):
    ITEM_ARRAY: ClassVar[str] = "p_gold"
    NAME: ClassVar[str] = "attribution store"
    RERUN: ClassVar[str] = "attribute"
    DIGEST_PARTS: ClassVar[tuple[str, ...]] = (SCORES,)

    def write_chunk(self, chunk: int, score: np.ndarray, p_gold: np.ndarray) -> None:
        rows = self.chunk_slice(chunk)
        expected = (rows.stop - rows.start, *self.group["score"].shape[1:])
        if score.shape != expected or p_gold.shape != expected[:1]:
            raise ValueError(f"chunk {chunk}: scores {score.shape}, p_gold {p_gold.shape}")
        score, p_gold = score.astype(np.float32), p_gold.astype(np.float32)
        self.group["score"][rows] = score
        self.group["p_gold"][rows] = p_gold
        self.group["chunk_digest"][chunk] = sha256(score, p_gold)
        self.group["chunk_done"][chunk] = True  # last: the chunk counts once all of it is there

    def read_part(self, chunk: int, part: str) -> tuple[np.ndarray, ...]:
        rows = self.chunk_slice(chunk)
        return self.group["score"][rows], self.group["p_gold"][rows]

    def stored_digests(self, chunk: int) -> dict[str, str]:
        stored = str(self.group["chunk_digest"][chunk])
        return {SCORES: stored} if stored else {}

    def checked_chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and p_gold of one finished chunk, refused when they fail their checksum."""
        score, p_gold = self.checked_part(chunk, SCORES)
        return score, p_gold

    def labels(self, name: str) -> list[str]:
        return [str(v) for v in self.group[name][:]]


def create_or_resume(
    path: str | Path,
    *,
    item_ids: list[str],
    cultures: list[str],
    tasks: list[str],
    n_layers: int,
    n_neurons: int,
    chunk_items: int,
    attrs: dict[str, Any],
) -> AttributionStore:
    """Open the partial store at ``path`` if it was started for the same inputs, else create
    it; a finished chunk that fails its checksum is written again."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid: {TASKS}")
    n_items = len(item_ids)

    def lay_out(group: zarr.Group, n_chunks: int) -> None:
        filters, compressor = neuron_codecs(np.float32)
        group.create_array(
            "score", shape=(n_items, n_layers, n_neurons),
            chunks=neuron_chunks(chunk_items, n_layers, n_neurons), dtype=np.float32,
            fill_value=0, filters=filters, compressors=compressor,
            dimension_names=["item", "layer", "neuron"],
            attributes={"coordinates": "item_id culture task"},
        )  # fmt: skip
        group.create_array(
            "p_gold", shape=(n_items,), chunks=(max(chunk_items, 1),), dtype=np.float32,
            fill_value=np.nan, dimension_names=["item"],
        )  # fmt: skip

    return create_or_resume_store(
        AttributionStore,
        path,
        attrs={
            **attrs,
            "kind": KIND,
            "chunk_items": chunk_items,
            "n_layers": n_layers,
            "n_neurons": n_neurons,
        },
        labels={"item_id": item_ids, "culture": cultures, "task": tasks},
        resume_keys=("item_id", "task"),
        chunk_items=chunk_items,
        lay_out=lay_out,
    )


def open_attribution_store(path: str | Path) -> AttributionStore:
    """A finished attribution store for reading (complete; chunks are checked as they are read)."""
    try:
        group = zarr.open_group(str(path), mode="r")
        store = AttributionStore(group, Path(path))
        pending = store.pending_chunks()
    except Exception as err:  # a damaged or missing zarr.json: zarr raises many types
        raise CorruptStoreError(
            f"attribution store {path} cannot be opened ({type(err).__name__}: {err}); delete it "
            "and rerun attribute"
        ) from err
    if group.attrs.get("kind") != KIND:
        raise InputError(f"{path} is not an attribution store (kind {group.attrs.get('kind')!r})")
    if pending:
        raise InputError(
            f"attribution store {path} is incomplete: chunk(s) {pending[:5]} not written; delete "
            "it and rerun attribute"
        )
    return store


def is_attribution_store(path: str | Path) -> bool:
    try:
        return zarr.open_group(str(path), mode="r").attrs.get("kind") == KIND
    except Exception:  # not a zarr group at all: not an attribution store
        return False


@dataclass(frozen=True)
class AttributionAggregates:
    """Per-culture means of the scores: the attribution selectors' inputs (float64)."""

    cultures: list[str]
    cultural: np.ndarray  # [C, L, D] mean over each culture's cultural items
    control: np.ndarray | None  # [L, D] mean over the control items of max(score, 0)
    # [C, L, D] mean over each culture's exclusion items; NaN for a culture with none (the mean
    # of nothing: zeros would rank every neuron alike and exclude the first by position)
    exclusion: np.ndarray | None
    items: dict[str, dict[str, int]]  # task -> culture -> items
    mean_p_gold: dict[str, float]  # task -> mean p(gold)


def aggregate_attribution(store: AttributionStore) -> AttributionAggregates:
    """Sum the scores per task and culture, chunk by chunk (each chunk checked)."""
    tasks = np.asarray(store.labels("task"))
    cultures_per_item = np.asarray(store.labels("culture"))
    cultural_cultures = sorted(set(cultures_per_item[tasks == "cultural"]))
    if not cultural_cultures:
        raise InputError(f"attribution store {store.path} holds no cultural items")
    index = {c: i for i, c in enumerate(cultural_cultures)}
    _, n_layers, n_neurons = store.group["score"].shape
    shape = (len(cultural_cultures), n_layers, n_neurons)
    sums = {"cultural": np.zeros(shape), "exclusion": np.zeros(shape)}
    control_sum = np.zeros((n_layers, n_neurons))
    p_sum = {task: 0.0 for task in TASKS}
    for chunk in range(store.n_chunks):
        rows = store.chunk_slice(chunk)
        score, p_gold = store.checked_chunk(chunk)
        chunk_tasks, chunk_cultures = tasks[rows], cultures_per_item[rows]
        for task in TASKS:
            here = chunk_tasks == task
            p_sum[task] += float(p_gold[here].sum(dtype=np.float64))
            if not here.any():
                continue
            if task == "control":
                # CULNIG clamps control scores at 0 per item before averaging.
                control_sum += np.maximum(score[here], 0).sum(axis=0, dtype=np.float64)
                continue
            for culture in np.unique(chunk_cultures[here]):
                if culture not in index:
                    continue  # an exclusion item about a culture with no cultural items
                which = here & (chunk_cultures == culture)
                sums[task][index[culture]] += score[which].sum(axis=0, dtype=np.float64)
    items: dict[str, dict[str, int]] = {}
    for task in TASKS:
        counted = cultures_per_item[tasks == task]
        items[task] = {str(c): int((counted == c).sum()) for c in sorted(set(counted))}
    n_cultural = np.array([items["cultural"][c] for c in cultural_cultures], dtype=np.float64)
    cultural = sums["cultural"] / n_cultural[:, None, None]
    n_control = sum(items["control"].values())
    control = control_sum / n_control if n_control else None
    exclusion = None
    if items["exclusion"]:
        n_excl = np.array([items["exclusion"].get(c, 0) for c in cultural_cultures], dtype=float)
        with np.errstate(invalid="ignore"):
            exclusion = sums["exclusion"] / n_excl[:, None, None]  # 0 / 0: NaN, no items
    mean_p = {
        task: p_sum[task] / max(1, sum(items[task].values())) for task in TASKS if items[task]
    }
    return AttributionAggregates(cultural_cultures, cultural, control, exclusion, items, mean_p)
