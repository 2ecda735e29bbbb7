"""Decode images from their references (shard + row, or hub dataset + row) in items.parquet.

Photos are turned upright (EXIF orientation, as `datasets` does) and, given the model's
`PixelBound`, decoded no larger than its image processor keeps of them: a 6000x4000 phone photo
is 72 MB as RGB, the processor's input a few MB.
"""

from __future__ import annotations

import io
import math
import threading
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps

from culture_neurons.data.cvqa import HUB_PREFIX, load_hub_dataset, parse_hub_reference

ORIENTATION_TAG = 0x0112
#: EXIF orientations that swap width and height (a transpose or a quarter turn).
_TURNED = frozenset({5, 6, 7, 8})
#: Bytes of image columns the shard readers keep decompressed between calls, all readers together.
ROW_GROUP_CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class PixelBound:
    """How small an image may be decoded without changing what the model's processor makes of it.

    ``max_pixels``: the processor scales an image down to at most this area, its sides
    multiples of ``factor`` (Qwen2.5-VL's `smart_resize`: 28), so a larger image may be scaled
    to exactly that size first. ``min_width``/``min_height``: the processor needs at least these
    sides (a fixed input size, or LLaVA-NeXT's largest grid pinpoint), so an image may be scaled
    down until one side reaches its minimum. Given both, the larger size wins.
    """

    max_pixels: int | None = None
    min_width: int = 0
    min_height: int = 0
    factor: int = 1

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        if self.min_width < 0 or self.min_height < 0:
            raise ValueError(f"negative minimum size {self.min_width}x{self.min_height}")
        if self.factor < 1:
            raise ValueError(f"factor must be positive, got {self.factor}")

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The size to decode a ``width`` x ``height`` image to: never larger, never smaller
        than the processor's own result, the aspect ratio kept as the processor keeps it."""
        sizes = [] if self.max_pixels is None else [self._area(width, height)]
        if self.min_width or self.min_height:
            scale = min(1.0, max(self.min_width / width, self.min_height / height))
            sizes.append((max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
        return max(sizes, key=lambda size: size[0] * size[1], default=(width, height))

    def _area(self, width: int, height: int) -> tuple[int, int]:
        # smart_resize's arithmetic (transformers' Qwen2-VL image processor): only an image over
        # the bound after rounding to the factor is scaled down, to sides floored to the factor,
        # which the processor then keeps as they are.
        f = self.factor
        if round(height / f) * f * round(width / f) * f <= self.max_pixels:
            return width, height
        beta = math.sqrt(width * height / self.max_pixels)
        return max(f, math.floor(width / beta / f) * f), max(f, math.floor(height / beta / f) * f)


def decode_image(
    image: dict[str, Any] | None, *, draft: bool = False, bound: PixelBound | None = None
) -> Image.Image:
    """Decode an HF Image struct ({bytes, path}) to RGB, upright (EXIF orientation applied).

    ``draft`` lets JPEG decode at 1/8 scale: enough to prove the file decodes, ~50x faster on
    CVQA's 6000x4000 photos. ``bound`` downscales to what the model's processor keeps: a JPEG is
    decoded at the smallest DCT scale (1/2, 1/4, 1/8) still at least that size, then resized.
    """
    if image is None:
        raise ValueError("no image")
    data = image.get("bytes")
    if data is None and image.get("path"):
        with open(image["path"], "rb") as handle:
            data = handle.read()
    if not data:
        raise ValueError("empty image")
    picture = Image.open(io.BytesIO(data))
    target = None
    if draft:
        picture.draft("RGB", (64, 64))
    elif bound is not None:
        # The bound speaks of the upright image; the file stores it before its EXIF turn.
        turned = picture.getexif().get(ORIENTATION_TAG) in _TURNED
        width, height = picture.size
        if turned:
            height, width = width, height
        target = bound.target_size(width, height)
        if target != (width, height):
            stored = target[::-1] if turned else target
            picture.draft("RGB", stored)  # a no-op for other formats than JPEG
        else:
            target = None
    picture.load()
    picture = ImageOps.exif_transpose(picture).convert("RGB")
    if target is not None and picture.size != target:
        picture = picture.resize(target, Image.Resampling.BICUBIC)
    return picture


class _RowGroupCache:
    """Decompressed image columns of recently read row groups, least recently used dropped first
    once they hold more than ``budget`` bytes (the last one read is always kept). CVQA's row
    groups hold hundreds of 2-5 MB photos, so caching one per shard would grow with the data."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._groups: OrderedDict[tuple[str, int], pa.ChunkedArray] = OrderedDict()
        self._lock = threading.Lock()  # the input workers read shards from several threads

    def get(self, key: tuple[str, int], read) -> pa.ChunkedArray:
        with self._lock:
            if key in self._groups:
                self._groups.move_to_end(key)
                return self._groups[key]
            column = read()
            self._groups[key] = column
            while len(self._groups) > 1 and self.nbytes > self.budget:
                self._groups.popitem(last=False)
            return column

    @property
    def nbytes(self) -> int:
        return sum(column.nbytes for column in self._groups.values())

    def clear(self) -> None:
        with self._lock:
            self._groups.clear()


_row_groups = _RowGroupCache(ROW_GROUP_CACHE_BYTES)


class _ShardReader:
    """Random access to one parquet shard's image column, row groups cached in `_row_groups`."""

    def __init__(self, path: str):
        self.path = path
        self.file = pq.ParquetFile(path)
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]

    def image(self, row: int) -> dict[str, Any]:
        group = bisect_right(self.starts, row) - 1
        column = _row_groups.get(
            (self.path, group),
            lambda: self.file.read_row_group(group, columns=["image"]).column("image"),
        )
        # One row to Python: the column stays in Arrow's buffers, not as a list of bytes copies.
        return column[row - self.starts[group]].as_py()


@lru_cache(maxsize=16)
def _shard_reader(path: str) -> _ShardReader:
    return _ShardReader(path)


@lru_cache(maxsize=2)
def _hub_dataset(reference: str):
    hub_id, revision, split = parse_hub_reference(reference)
    return load_hub_dataset(hub_id, revision, split)


def load_image(image_source: str, image_row: int, bound: PixelBound | None = None) -> Image.Image:
    """The RGB image an items.parquet row points at, upright, within ``bound`` if given."""
    if image_source.startswith(HUB_PREFIX):
        image = _hub_dataset(image_source)[int(image_row)]["image"]
    else:
        image = _shard_reader(image_source).image(int(image_row))
    return decode_image(image, bound=bound)
