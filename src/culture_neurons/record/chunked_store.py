"""The chunked store: a Zarr v3 group written chunk by chunk, resumable and checksummed.

The activation store (`culture_neurons.record.store`) and the attribution store
(`culture_neurons.record.attribution_store`) are declarations on top of this module: their arrays,
attributes, checksummed parts and how a chunk is written. What they share lives here once:

* **Creation**: a store is laid out under ``<path>.creating`` and renamed into place, so a crash
  leaves no half-made store (`create_or_resume`).
* **Resume**: a partial store is reopened only if its attributes and item labels are those this
  run would write; anything else is refused (`StoreMismatchError`), never silently mixed.
* **Chunks**: chunk ``k`` holds items ``k * chunk_items ...``. Its data are written first, then
  its checksum (``chunk_digest[k]``), then its flag (``chunk_done[k]``): a job killed at any point
  resumes at the first unflagged chunk and rewrites it whole, so a resumed store is identical to
  one written without interruption.
* **Checksums**: SHA-256 of each checksummed part of a chunk, over the values as stored. A flagged
  chunk whose data no longer match (a flipped byte, a truncated or deleted chunk file, which zarr
  reads back as fill values) is unflagged on resume and recomputed; a reader refuses it, naming
  the chunk (`CorruptStoreError`).
* **The recording pass** (`ResumablePass`): the store grows beside its output
  (`partial_path`) and is moved into place once every chunk is written.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

import numpy as np
import zarr
from tqdm import tqdm

from culture_neurons.errors import InputError

log = logging.getLogger(__name__)


class StoreMismatchError(InputError):
    """A partial store exists but was started for other inputs."""


class CorruptStoreError(InputError):
    """A finished chunk's data no longer matches what was written (or cannot be read)."""


def sha256(*arrays: np.ndarray) -> str:
    """Checksum of arrays as stored: dtype, shape and bytes (text: its values, since zarr reads
    strings back with another dtype than they were written with)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.asarray(array)
        if array.dtype.kind in "UOT":
            digest.update(f"str{array.shape}".encode())
            digest.update("\x00".join(map(str, array.ravel())).encode())
        else:
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def jsonable(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``mapping`` as zarr stores it in JSON (tuples become lists), for comparing attributes."""
    return {k: (v if not isinstance(v, tuple) else list(v)) for k, v in mapping.items()}


@dataclass
class ChunkedStore:
    """A Zarr group written chunk by chunk of ``chunk_items`` items (see the module docstring).

    A store declares ``ITEM_ARRAY``, ``NAME``, ``RERUN`` and ``DIGEST_PARTS`` and implements
    `read_part` and `stored_digests`; the integrity checks and refusals are shared.
    """

    group: zarr.Group
    path: Path
    #: A per-item array whose length is the number of items.
    ITEM_ARRAY: ClassVar[str] = "tokens"
    #: What the store is called in messages.
    NAME: ClassVar[str] = "store"
    #: The rule that writes the store again (named when a store is refused).
    RERUN: ClassVar[str] = ""
    #: The separately checksummed parts of a chunk (a reader checks only the parts it reads).
    DIGEST_PARTS: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------------------ layout
    @property
    def n_items(self) -> int:
        return int(self.group[self.ITEM_ARRAY].shape[0])

    @property
    def chunk_items(self) -> int:
        return int(self.group.attrs["chunk_items"])

    @property
    def n_chunks(self) -> int:
        return int(self.group["chunk_done"].shape[0])

    def chunk_slice(self, chunk: int) -> slice:
        start = chunk * self.chunk_items
        return slice(start, min(start + self.chunk_items, self.n_items))

    def pending_chunks(self) -> list[int]:
        done = self.group["chunk_done"][:]
        return [int(k) for k in np.flatnonzero(~done)]

    def pending_items(self) -> int:
        """Items in the chunks not yet written."""
        return sum(len(range(self.n_items)[self.chunk_slice(k)]) for k in self.pending_chunks())

    @property
    def complete(self) -> bool:
        return bool(self.group["chunk_done"][:].all())

    @property
    def has_checksums(self) -> bool:
        return "chunk_digest" in self.group

    # ------------------------------------------------------------------------------ per store
    def read_part(self, chunk: int, part: str) -> tuple[np.ndarray, ...]:
        """The arrays of one checksummed part of a chunk, as stored."""
        raise NotImplementedError

    def stored_digests(self, chunk: int) -> dict[str, str]:
        """Part -> checksum written with the chunk (a part without one is missing)."""
        raise NotImplementedError

    def digest(self, part: str, data: tuple[np.ndarray, ...]) -> str:
        return sha256(*data)

    # ------------------------------------------------------------------------------ integrity
    def chunk_problem(
        self, chunk: int, part: str, data: tuple[np.ndarray, ...] | None = None
    ) -> str | None:
        """What is wrong with one part of a finished chunk (None: it matches its checksum).
        ``data``: the part as the caller already read it (so a reader hashes what it uses)."""
        try:
            data = self.read_part(chunk, part) if data is None else data
            stored = self.stored_digests(chunk)
        except Exception as err:  # zarr and its codecs raise many types for damaged files
            return f"cannot be read ({type(err).__name__}: {err})"
        if part not in stored:
            return "has no checksum (its checksum entry is missing)"
        if self.digest(part, data) != stored[part]:
            return f"{part} data differ from what was written (checksum mismatch)"
        return None

    def refuse(self, chunk: int, problem: str) -> NoReturn:
        rows = self.chunk_slice(chunk)
        raise CorruptStoreError(
            f"{self.NAME} {self.path}, chunk {chunk} (items {rows.start}-{rows.stop - 1}) "
            f"{problem}: its data cannot be trusted. Delete {self.path} and rerun {self.RERUN} "
            f"for model {self.group.attrs.get('model')!r}"
        )

    def checked_part(self, chunk: int, part: str) -> tuple[np.ndarray, ...]:
        """One part of a finished chunk, refused when it fails its checksum (a store from
        before checksums is read as it is)."""
        if not self.has_checksums:
            return self.read_part(chunk, part)
        try:
            data = self.read_part(chunk, part)
        except Exception as err:  # damaged files: zarr and the codecs raise many types
            self.refuse(chunk, f"cannot be read ({type(err).__name__}: {err})")
        problem = self.chunk_problem(chunk, part, data)
        if problem:
            self.refuse(chunk, problem)
        return data

    def check_parts(self, parts: Sequence[str]) -> None:
        """Refuse the store at the first chunk whose ``parts`` fail their checksum."""
        for chunk in range(self.n_chunks):
            for part in parts:
                problem = self.chunk_problem(chunk, part)
                if problem:
                    self.refuse(chunk, problem)

    def unflag_damaged(self) -> None:
        """On resume, a finished chunk that fails its checksum (or cannot be read) is unflagged,
        so the recording writes it again instead of keeping damaged data."""
        done = self.group["chunk_done"][:]
        for chunk in map(int, np.flatnonzero(done)):
            problems = [p for part in self.DIGEST_PARTS if (p := self.chunk_problem(chunk, part))]
            if problems:
                log.warning(
                    "%s %s, chunk %d %s: recomputing it", self.NAME, self.path, chunk, problems[0]
                )
                self.group["chunk_done"][chunk] = False


Store = TypeVar("Store", bound=ChunkedStore)


def create_or_resume(
    cls: type[Store],
    path: str | Path,
    *,
    attrs: Mapping[str, Any],
    labels: Mapping[str, Sequence[str]],
    resume_keys: Sequence[str],
    chunk_items: int,
    lay_out: Callable[[zarr.Group, int], None],
) -> Store:
    """Open the partial store at ``path`` if it was started for the same inputs, else create it.

    ``attrs``: every group attribute, which must describe everything that determines the content
    (model, revision, dtype, dataset fingerprint, package version, layout); ``labels``: the
    per-item text arrays (``item_id``, ``culture``, ...), of which ``resume_keys`` must equal a
    partial store's to resume it. ``lay_out(group, n_chunks)`` creates the store's own arrays;
    the index coordinates ``layer``/``neuron`` (sizes from ``attrs``), the labels and the chunk
    flags and checksums are created here.
    """
    path = Path(path)
    expected = jsonable(attrs)
    if path.exists():
        group = zarr.open_group(str(path), mode="r+")
        found = {k: group.attrs.get(k) for k in expected}
        same_items = all(
            key in group and list(group[key][:]) == list(labels[key]) for key in resume_keys
        )
        if found != expected or not same_items:
            raise StoreMismatchError(
                f"partial {cls.NAME} {path} was started for other inputs (found {found}); "
                "delete it to start over"
            )
        store = cls(group, path)
        store.unflag_damaged()
        return store
    tmp = path.with_name(path.name + ".creating")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    n_items = len(next(iter(labels.values())))
    n_chunks = -(-n_items // chunk_items)
    lay_out(group, n_chunks)
    write_index_coords(group, layer=expected["n_layers"], neuron=expected["n_neurons"])
    for name, values in labels.items():
        array = group.create_array(
            name, shape=(n_items,), chunks=(max(n_items, 1),), dtype=str, dimension_names=["item"]
        )
        array[:] = np.asarray(values, dtype=str)
    done = group.create_array(
        "chunk_done", shape=(n_chunks,), chunks=(max(n_chunks, 1),), dtype=bool, fill_value=False,
        dimension_names=["chunk"],
    )  # fmt: skip
    done[:] = False
    group.create_array(
        "chunk_digest", shape=(n_chunks,), chunks=(max(n_chunks, 1),), dtype=str,
        dimension_names=["chunk"],
    )  # fmt: skip
    group.attrs.update(expected)
    # Renamed into place only once fully laid out, so a crash here leaves no half-made store.
    tmp.rename(path)
    return cls(zarr.open_group(str(path), mode="r+"), path)


def write_index_coords(group: zarr.Group, **sizes: int) -> None:
    """An array ``0..n-1`` named like each dimension, which xarray takes as its index coordinate
    (so ``.sel(layer=3)`` works)."""
    for dim, n in sizes.items():
        array = group.create_array(
            dim, shape=(n,), chunks=(max(n, 1),), dtype=np.int64, dimension_names=[dim]
        )
        array[:] = np.arange(n, dtype=np.int64)


def partial_path(store_path: str | Path) -> Path:
    """Where a store grows until complete. Snakemake deletes a failed job's declared outputs,
    so the resumable copy lives beside the output, under another name."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + ".partial.zarr")


@dataclass
class ResumablePass:
    """One run of a recording over a store's unwritten chunks: the partial store, the chunks
    this run writes (all pending ones, or the first ``stop_after_chunks``) and where the finished
    store goes."""

    store: ChunkedStore
    final: Path
    chunks: list[int]
    #: Whether this run writes every pending chunk (else it stops early, as a kill would).
    finishes: bool

    @classmethod
    def start(
        cls,
        open_partial: Callable[[Path], ChunkedStore],
        store_path: str | Path,
        *,
        stop_after_chunks: int | None = None,
    ) -> ResumablePass:
        """Create or resume the partial store beside ``store_path`` (``open_partial``: the
        store's `create_or_resume` with this run's inputs)."""
        partial = partial_path(store_path)
        store = open_partial(partial)
        pending = store.pending_chunks()
        if len(pending) < store.n_chunks:
            log.info("resuming %s: %d of %d chunks left", partial, len(pending), store.n_chunks)
        finishes = stop_after_chunks is None or stop_after_chunks >= len(pending)
        return cls(store, Path(store_path), pending[:stop_after_chunks], finishes)

    def progress(self, desc: str) -> tqdm:
        """A progress bar over all items, the chunks written before already counted."""
        bar = tqdm(total=self.store.n_items, desc=desc, unit="item", mininterval=2.0)
        bar.update(self.store.n_items - self.store.pending_items())
        return bar

    def publish(self) -> Path | None:
        """Move the finished store into place (replacing an older one); None when this run
        stopped early and the store stays partial."""
        if not self.finishes:
            return None
        shutil.rmtree(self.final, ignore_errors=True)
        self.store.path.rename(self.final)
        return self.final
