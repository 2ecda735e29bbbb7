"""Small thumbnails of the items' images, written once per item however many neurons list it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from PIL import Image

from culture_neurons.data.images import load_image
from culture_neurons.errors import InputError

log = logging.getLogger(__name__)

#: Longest side of a thumbnail in pixels: a glance at the photo, a few kB of JPEG.
THUMB_SIDE = 128


def thumbnail_name(item_id: str) -> str:
    # Item ids are the dataset's own strings: keep them readable but safe as file names.
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in item_id)
    return f"{safe}.jpg"


def write_thumbnails(
    items: pd.DataFrame, item_ids: Iterable[str], out_dir: str | Path, *, side: int = THUMB_SIDE
) -> dict[str, str]:
    """A JPEG thumbnail (longest side ``side``) of each listed item with an image, written into
    ``out_dir`` unless there already; item id -> file name. Text items (no image) are left out.
    ``items`` is indexed by item id with ``image_source`` and ``image_row``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for item_id in sorted(set(item_ids)):
        if item_id not in items.index:
            raise InputError(f"item {item_id!r} of the activation store is not in items.parquet")
        row = items.loc[item_id]
        source = row.get("image_source")
        if source is None or pd.isna(source) or not str(source):
            continue
        name = thumbnail_name(item_id)
        path = out / name
        if not path.exists():
            try:
                image = load_image(str(source), int(row["image_row"]))
            except Exception as err:  # a missing shard or an undecodable image: name the item
                where = f"{source}#{row['image_row']}"
                raise InputError(f"item {item_id}: image {where}: {err}") from err
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
            image.convert("RGB").save(path, "JPEG", quality=80, optimize=True)
        written[item_id] = name
    log.info("%d thumbnails in %s", len(written), out)
    return written
