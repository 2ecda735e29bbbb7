"""The partial folder of an ablate job: its finished chunks of answers, kept until the job's tables
are written, so that a killed job (or its shards) resumes where it stopped.

Layout: ``{partial}/work-{fingerprint}/manifest.json`` says what the work is (see
`culture_neurons.ablation.work.plan_work`); ``chunk-{i:05d}.parquet`` beside it holds chunk
``i``'s answers under every mask (long format, a ``mask`` column first). Each chunk file is
written to a temporary name and renamed, so a chunk file that exists is complete. Work for
another manifest lives in another ``work-*`` folder and is removed when new work starts, so
shards that start together never delete each other's chunks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MASK_COLUMN = "mask"


def partial_dir(out_dir: str | Path) -> Path:
    """Where the ablate job of ``out_dir`` keeps its finished chunks until its tables are written
    (and the shard jobs of a split ablate job put theirs). Snakemake deletes a failed job's
    outputs, so it lives beside ``out_dir``, not in it. Here, not in `work` beside
    `table_path`, so that the workflow names it without importing torch."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


def fingerprint(manifest: Mapping[str, Any]) -> str:
    """A stable hash of a JSON-able manifest (key order does not matter)."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ between two manifests (either side may lack one)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


class PartialWork:
    """The chunks of one manifest's work under ``folder``."""

    def __init__(self, folder: Path, n_chunks: int) -> None:
        self.folder = folder
        self.n_chunks = n_chunks

    def chunk_path(self, chunk: int) -> Path:
        return self.folder / f"chunk-{chunk:05d}.parquet"

    def done(self) -> list[int]:
        return [i for i in range(self.n_chunks) if self.chunk_path(i).exists()]

    def missing(self, chunks: Sequence[int] | None = None) -> list[int]:
        wanted = range(self.n_chunks) if chunks is None else chunks
        return [i for i in wanted if not self.chunk_path(i).exists()]

    def write_chunk(self, chunk: int, tables: Sequence[pd.DataFrame]) -> Path:
        """Store chunk ``chunk``'s answers, one table per mask, as one long parquet."""
        long = pd.concat(
            [t.assign(**{MASK_COLUMN: m}) for m, t in enumerate(tables)], ignore_index=True
        )
        long = long[[MASK_COLUMN, *(c for c in long.columns if c != MASK_COLUMN)]]
        path = self.chunk_path(chunk)
        _write_atomic(path, lambda tmp: long.to_parquet(tmp, index=False))
        return path

    def read_tables(self, n_masks: int) -> list[pd.DataFrame]:
        """Every chunk's answers joined in chunk order: one table per mask, rows in item order."""
        missing = self.missing()
        if missing:
            raise FileNotFoundError(f"chunk(s) {missing} missing in {self.folder}")
        parts: list[list[pd.DataFrame]] = [[] for _ in range(n_masks)]
        for chunk in range(self.n_chunks):
            long = pd.read_parquet(self.chunk_path(chunk))
            masks = long[MASK_COLUMN].to_numpy()
            per_mask = len(long) // n_masks
            for m in range(n_masks):
                rows = slice(m * per_mask, (m + 1) * per_mask)
                # Written mask by mask (`write_chunk`), so a slice is one mask's rows.
                if len(long) != per_mask * n_masks or not (masks[rows] == m).all():
                    raise ValueError(f"{self.chunk_path(chunk)} does not hold {n_masks} masks")
                parts[m].append(long.iloc[rows].drop(columns=MASK_COLUMN))
        return [pd.concat(p, ignore_index=True) for p in parts]


def open_partial(
    root: str | Path, manifest: Mapping[str, Any], n_chunks: int, *, create: bool = True
) -> PartialWork:
    """The partial work of ``manifest`` under ``root``, resumed if it was started before.

    With ``create`` the folder is made if new, and work under ``root`` for other manifests is
    removed (logging what differed); without it (gathering shards' chunks) nothing is changed.
    """
    root = Path(root)
    key = fingerprint(manifest)
    work = PartialWork(root / f"work-{key[:16]}", n_chunks)
    manifest_path = work.folder / MANIFEST
    if manifest_path.exists():
        found = json.loads(manifest_path.read_text())
        if found != manifest:
            raise ValueError(f"{manifest_path} does not hold the manifest its name says")
        log.info("resuming %s: %d of %d chunks done", work.folder, len(work.done()), n_chunks)
        return work
    if not create:
        return work
    for other in sorted(root.glob("work-*")):
        if other == work.folder:
            continue
        try:
            old = json.loads((other / MANIFEST).read_text())
            why = "differs in: " + ", ".join(differing_keys(old, manifest))
        except (OSError, ValueError):
            why = "it has no readable manifest"
        log.info("starting over: partial work %s was for other work (%s); removing it", other, why)
        shutil.rmtree(other, ignore_errors=True)
    work.folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    log.info("started %s: %d chunks to answer", work.folder, n_chunks)
    return work
