"""The shared chunked-store machinery (record/chunked_store.py), through both stores that use it:
create-or-resume, checksums, damaged chunks and the resumable pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from culture_neurons.record import attribution_store, store
from culture_neurons.record.chunked_store import (
    CorruptStoreError,
    ResumablePass,
    StoreMismatchError,
    partial_path,
)

# 11 items in chunks of 4: the last chunk is short, and the cultures are uneven.
N_ITEMS, CHUNK, LAYERS, NEURONS = 11, 4, 2, 5
IDS = [f"item-{k:02d}" for k in range(N_ITEMS)]
CULTURES = ["ko", "sw", "ko", "mx", "sw", "ko", "ko", "mx", "sw", "ko", "mx"]


@dataclass
class Kind:
    """One store type: how to create it, write chunk k, read it as a reader does, and the
    array holding its per-item neuron data."""

    name: str
    create: Any
    write: Any
    read_all: Any
    neuron_array: str
    rerun: str


def _activation_write(s, chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    n = len(range(N_ITEMS)[s.chunk_slice(chunk)])
    s.write_chunk(
        chunk, rng.integers(0, 9, (n, LAYERS, NEURONS)), rng.random((n, LAYERS, NEURONS)),
        rng.integers(9, 20, n), rng.integers(0, 2, n), answers=[f"reply {chunk}.{i}" for i in
        range(n)], choices=rng.integers(-1, 4, n), act_sum=rng.normal(size=(LAYERS, NEURONS)),
    )  # fmt: skip


def _activation_read(path: Path) -> None:
    from culture_neurons.record.aggregate import aggregate

    aggregate(store.open_store(path), only_correct=False)


def _attribution_write(s, chunk: int) -> None:
    rng = np.random.default_rng(100 + chunk)
    n = len(range(N_ITEMS)[s.chunk_slice(chunk)])
    s.write_chunk(chunk, rng.normal(size=(n, LAYERS, NEURONS)), rng.random(n))


def _attribution_read(path: Path) -> None:
    attribution_store.aggregate_attribution(attribution_store.open_attribution_store(path))


KINDS = [
    Kind(
        "activation store",
        lambda path, **attrs: store.create_or_resume(
            path,
            item_ids=IDS,
            cultures=CULTURES,
            n_layers=LAYERS,
            n_neurons=NEURONS,
            chunk_items=CHUNK,
            attrs={"model": "tiny", **attrs},
        ),
        _activation_write,
        _activation_read,
        "fire_count",
        "record",
    ),
    Kind(
        "attribution store",
        lambda path, **attrs: attribution_store.create_or_resume(
            path,
            item_ids=IDS,
            cultures=CULTURES,
            tasks=["cultural"] * 8 + ["exclusion"] * 3,
            n_layers=LAYERS,
            n_neurons=NEURONS,
            chunk_items=CHUNK,
            attrs={"model": "tiny", **attrs},
        ),
        _attribution_write,
        _attribution_read,
        "score",
        "attribute",
    ),
]


def _files(path: Path) -> dict[str, bytes]:
    files = sorted(f for f in path.rglob("*") if f.is_file())
    return {str(f.relative_to(path)): f.read_bytes() for f in files}


def _complete(kind: Kind, path: Path) -> Path:
    s = kind.create(path)
    for chunk in s.pending_chunks():
        kind.write(s, chunk)
    return path


@pytest.fixture(params=KINDS, ids=lambda k: k.name)
def kind(request) -> Kind:
    return request.param


def test_layout_chunks_and_a_short_last_chunk(kind, tmp_path):
    s = kind.create(tmp_path / "s.zarr")
    assert (s.n_items, s.n_chunks, s.pending_chunks()) == (11, 3, [0, 1, 2])
    assert s.chunk_slice(2) == slice(8, 11) and s.pending_items() == 11
    kind.write(s, 1)
    assert s.pending_chunks() == [0, 2] and s.pending_items() == 7 and not s.complete
    assert not (tmp_path / "s.zarr.creating").exists()


def test_a_damaged_chunk_is_refused_on_read_and_rewritten_on_resume(kind, tmp_path):
    whole = _complete(kind, tmp_path / "whole.zarr")
    damaged = _complete(kind, tmp_path / "damaged.zarr")
    group = zarr.open_group(str(damaged), mode="r+")
    group[kind.neuron_array][5, 1, 3] = group[kind.neuron_array][5, 1, 3] + 1  # chunk 1
    with pytest.raises(CorruptStoreError) as err:
        kind.read_all(damaged)
    message = str(err.value)
    assert f"{kind.name} {damaged}, chunk 1 (items 4-7)" in message
    assert "checksum mismatch" in message and f"rerun {kind.rerun} for model 'tiny'" in message
    # Resuming unflags that chunk only; writing it again restores the undamaged store exactly.
    resumed = kind.create(damaged)
    assert resumed.pending_chunks() == [1]
    kind.write(resumed, 1)
    assert _files(damaged) == _files(whole)
    kind.read_all(damaged)


def test_a_chunk_without_its_checksum_is_recomputed(kind, tmp_path):
    path = _complete(kind, tmp_path / "s.zarr")
    zarr.open_group(str(path), mode="r+")["chunk_digest"][2] = ""
    with pytest.raises(CorruptStoreError, match=r"chunk 2 \(items 8-10\) has no checksum"):
        kind.read_all(path)
    assert kind.create(path).pending_chunks() == [2]


def test_a_partial_store_for_other_inputs_is_refused(kind, tmp_path):
    path = tmp_path / "p.zarr"
    kind.write(kind.create(path), 0)
    with pytest.raises(StoreMismatchError, match=f"partial {kind.name} .* delete it to start"):
        kind.create(path, dataset_fingerprint="another")
    assert kind.create(path).pending_chunks() == [1, 2]  # the same inputs resume


def test_a_half_made_store_is_never_resumed(kind, tmp_path):
    # A crash while laying out leaves only the ".creating" copy, which the next run replaces.
    (tmp_path / "s.zarr.creating").mkdir()
    (tmp_path / "s.zarr.creating" / "junk").write_text("left by a crash")
    s = kind.create(tmp_path / "s.zarr")
    assert s.pending_chunks() == [0, 1, 2] and not (tmp_path / "s.zarr.creating").exists()


def test_a_pass_stopped_early_resumes_and_publishes_the_same_store(kind, tmp_path):
    def run(path: Path, stop: int | None) -> ResumablePass:
        recording = ResumablePass.start(kind.create, path, stop_after_chunks=stop)
        for chunk in recording.chunks:
            kind.write(recording.store, chunk)
        return recording

    first = run(tmp_path / "out.zarr", 2)
    assert first.chunks == [0, 1] and first.publish() is None
    assert partial_path(tmp_path / "out.zarr").exists() and not (tmp_path / "out.zarr").exists()
    second = run(tmp_path / "out.zarr", None)
    assert second.chunks == [2] and second.publish() == tmp_path / "out.zarr"
    assert not partial_path(tmp_path / "out.zarr").exists()
    uninterrupted = run(tmp_path / "once.zarr", None)
    assert uninterrupted.chunks == [0, 1, 2]
    uninterrupted.publish()
    assert _files(tmp_path / "out.zarr") == _files(tmp_path / "once.zarr")
    kind.read_all(tmp_path / "out.zarr")
