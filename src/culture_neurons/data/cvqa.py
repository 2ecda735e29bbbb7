"""Read CVQA-schema rows from a local folder of parquet shards or from the Hugging Face hub.

Rows are yielded with a reference to where their image lives (shard path + row, or the hub
dataset + row) instead of the image itself, so the 5 GB of CVQA photos are never copied.
"""

from __future__ import annotations

import ast
import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from culture_neurons.errors import InputError

HUB_PREFIX = "hf://"
#: The CVQA parquet schema's columns, in the dataset's order (the demo generator writes them all).
CVQA_COLUMNS = (
    "image",
    "ID",
    "Subset",
    "Question",
    "Translated Question",
    "Options",
    "Translated Options",
    "Label",
    "Category",
    "Image Type",
    "Image Source",
    "License",
)
#: What prepare_data reads besides the image.
TEXT_COLUMNS = CVQA_COLUMNS[1:10]
REQUIRED_COLUMNS = ("image", "ID", "Subset", "Label")


class SourceError(InputError):
    """The configured data source cannot be read as CVQA."""


@dataclass(frozen=True)
class RawRow:
    """One source row: its image reference and its text fields (image bytes kept for checks)."""

    image_source: str
    image_row: int
    fields: dict[str, Any]
    image: dict[str, Any] | None


def hub_reference(hub_id: str, revision: str | None, split: str = "test") -> str:
    return f"{HUB_PREFIX}{hub_id}@{revision or 'main'}:{split}"


def parse_hub_reference(reference: str) -> tuple[str, str, str]:
    body = reference.removeprefix(HUB_PREFIX)
    repo_rev, split = body.rsplit(":", 1)
    hub_id, revision = repo_rev.rsplit("@", 1)
    return hub_id, revision, split


# What ast.literal_eval raises on malformed data: besides syntax, e.g. "{[]: 1}" is a TypeError.
_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)


def parse_subset(subset: str) -> tuple[str, str]:
    """CVQA's Subset is the string of a (language, country) tuple; return (country, language).

    Parsed with ast.literal_eval: the field is data, never code.
    """
    try:
        value = ast.literal_eval(subset)
    except _LITERAL_ERRORS as err:
        raise ValueError(f"Subset {subset!r} is not a Python tuple literal") from err
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"Subset {subset!r} is not a (language, country) pair")
    language, country = (str(v).strip() for v in value)
    if not language or not country:
        raise ValueError(f"Subset {subset!r} has an empty language or country")
    return country, language


def parse_options(value: Any) -> list[str]:
    """Options arrive as a list of strings, or (older revisions) as one string of a list."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except _LITERAL_ERRORS as err:
            raise ValueError(f"options string {value[:60]!r} is not a list literal") from err
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"options of type {type(value).__name__} are not a list")
    # A missing option becomes empty, not the text "None", so the row fails the 4-option check.
    return ["" if v is None else str(v) for v in value]


def local_shards(data_dir: str | Path, pattern: str) -> list[Path]:
    shards = sorted(Path(p) for p in glob.glob(str(Path(data_dir) / pattern)))
    if not shards:
        raise SourceError(f"no parquet shards match {pattern!r} under {data_dir}")
    return shards


def count_local_rows(shards: list[Path]) -> int:
    return sum(pq.ParquetFile(s).metadata.num_rows for s in shards)


def iter_local_rows(shards: list[Path]) -> Iterator[RawRow]:
    """Stream rows batch by batch so that a shard's images are never all in memory."""
    for shard in shards:
        parquet = pq.ParquetFile(shard)
        names = set(parquet.schema_arrow.names)
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise SourceError(f"{shard} lacks CVQA column(s) {missing}")
        columns = ["image", *[c for c in TEXT_COLUMNS if c in names]]
        row = 0
        for batch in parquet.iter_batches(batch_size=64, columns=columns):
            for record in batch.to_pylist():
                image = record.pop("image")
                yield RawRow(str(shard), row, record, image)
                row += 1


def load_dataset_offline_aware(
    hub_id: str, config_name: str | None, revision: str | None, split: str
):
    """``datasets.load_dataset``; a hub that cannot be reached (offline, or no network) is one
    line naming the dataset instead of a retry log and a traceback."""
    import datasets

    try:
        return datasets.load_dataset(hub_id, config_name, revision=revision, split=split)
    except ConnectionError as err:
        raise SourceError(
            f"dataset {hub_id} (revision {revision or 'main'}) cannot be loaded: the Hugging "
            "Face hub is not reachable from this machine (offline) and the dataset is not in "
            "the local cache. Fetch it where the hub is reachable, or point dataset.source: "
            f"local at a copy ({err})"
        ) from err
    except ValueError as err:
        if "split" not in str(err).lower():
            raise
        raise SourceError(f"dataset {hub_id}: {err}") from err


def load_hub_dataset(hub_id: str, revision: str | None, split: str = "test"):
    """The hub copy, with images left undecoded (decoding all of CVQA takes minutes)."""
    import datasets

    dataset = load_dataset_offline_aware(hub_id, None, revision, split)
    return dataset.cast_column("image", datasets.Image(decode=False))


def iter_hub_rows(dataset, reference: str) -> Iterator[RawRow]:
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise SourceError(f"{reference} lacks CVQA column(s) {missing}")
    for row, record in enumerate(dataset):
        record = dict(record)
        image = record.pop("image")
        yield RawRow(reference, row, record, image)
