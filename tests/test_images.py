"""Image decoding: photos upright (EXIF orientation), downscaled to no less than what the model's
processor keeps of them, and shard row groups cached within a byte budget."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from culture_neurons.data import images
from culture_neurons.data.images import ORIENTATION_TAG, PixelBound, decode_image
from culture_neurons.models.image_bound import area_bound, pinpoints_bound, processor_bound

RED, BLUE = (230, 20, 20), (20, 20, 230)

# exif_transpose turns a stored image upright with these; the file stores the inverse.
STORED_TURN = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.ROTATE_180}


def upright_photo(width: int, height: int) -> Image.Image:
    """Left half red, right half blue, as the photo is meant to be seen."""
    picture = Image.new("RGB", (width, height), BLUE)
    picture.paste(RED, (0, 0, width // 2, height))
    return picture


def tagged_jpeg(upright: Image.Image, orientation: int) -> bytes:
    """The JPEG a phone writes: pixels as the sensor saw them, plus the turn that rights them."""
    stored = upright.transpose(STORED_TURN[orientation]) if orientation in STORED_TURN else upright
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def colour_at(picture: Image.Image, x: float, y: float) -> tuple[int, ...]:
    return picture.getpixel((int(x * (picture.width - 1)), int(y * (picture.height - 1))))


def near(colour: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return max(abs(a - b) for a, b in zip(colour, expected, strict=True)) < 40


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_tagged_photo_decodes_upright(orientation: int) -> None:
    data = tagged_jpeg(upright_photo(60, 40), orientation)
    if orientation in (6, 8):
        assert Image.open(io.BytesIO(data)).size == (40, 60)  # stored on its side
    picture = decode_image({"bytes": data, "path": None})
    assert picture.size == (60, 40)
    assert picture.mode == "RGB"
    for y in (0.1, 0.5, 0.9):
        assert near(colour_at(picture, 0.1, y), RED)
        assert near(colour_at(picture, 0.9, y), BLUE)


@pytest.mark.parametrize("orientation", [6, 8])
def test_tagged_photo_is_bounded_upright(orientation: int) -> None:
    """The bound speaks of the upright photo, though the file stores it on its side."""
    data = tagged_jpeg(upright_photo(3000, 2000), orientation)
    bound = PixelBound(max_pixels=60_000)
    picture = decode_image({"bytes": data, "path": None}, bound=bound)
    assert picture.size == bound.target_size(3000, 2000) == (300, 200)  # 60,000 pixels
    assert near(colour_at(picture, 0.1, 0.5), RED)
    assert near(colour_at(picture, 0.9, 0.5), BLUE)


def test_bound_decodes_at_the_draft_scale_then_resizes(monkeypatch) -> None:
    """A JPEG far above the bound is decoded at the DCT scale just above the target (not at
    full size), then resized to the target; the result matches a full decode resized alike."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(250, 375, 3), dtype=np.uint8)
    photo = Image.fromarray(noise).resize((3000, 2000), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    data = {"bytes": buffer.getvalue(), "path": None}
    requested = []
    draft = JpegImageFile.draft

    def spy(self, mode, size):
        requested.append(size)
        result = draft(self, mode, size)
        requested.append(self.size)
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    bound = PixelBound(max_pixels=200_000, factor=28)
    target = bound.target_size(3000, 2000)
    picture = decode_image(data, bound=bound)
    assert picture.size == target == (532, 364)  # sides floored to multiples of 28
    assert requested == [target, (750, 500)]  # the 1/4 scale: 1/8 would be below the target
    reference = decode_image(data).resize(target, Image.Resampling.BICUBIC)
    difference = np.abs(np.asarray(picture, float) - np.asarray(reference, float)).mean()
    assert difference < 6, difference


def test_image_within_the_bound_is_unchanged() -> None:
    """The demo's 112 px images (and the fixtures') reach the model exactly as before."""
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (112, 112, 3), np.uint8))
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        picture.save(buffer, format=fmt)
        data = {"bytes": buffer.getvalue(), "path": None}
        plain = decode_image(data)
        bounded = decode_image(data, bound=PixelBound(max_pixels=112 * 112))
        assert bounded.size == (112, 112)
        assert bounded.tobytes() == plain.tobytes()


@pytest.mark.parametrize(
    ("bound", "size", "expected"),
    [
        (PixelBound(max_pixels=600 * 400), (6000, 4000), (600, 400)),
        (PixelBound(max_pixels=600 * 400), (4000, 6000), (400, 600)),
        (PixelBound(max_pixels=600 * 400), (500, 300), (500, 300)),  # never upscaled
        (PixelBound(max_pixels=200_704, factor=28), (3000, 2000), (532, 364)),
        (PixelBound(max_pixels=200_704, factor=28), (485, 415), (485, 415)),  # rounds within
        (PixelBound(min_width=1008, min_height=1008), (6000, 4000), (1512, 1008)),
        (PixelBound(min_width=1008, min_height=1008), (900, 4000), (900, 4000)),
        (PixelBound(min_width=224, min_height=336), (2000, 2000), (336, 336)),
        (PixelBound(), (6000, 4000), (6000, 4000)),
    ],
)
def test_target_size(bound: PixelBound, size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert bound.target_size(*size) == expected


def test_target_size_keeps_the_aspect_and_never_falls_below_the_bound() -> None:
    for width, height in [(3000, 2000), (4032, 3024), (1000, 5000), (7, 4001)]:
        w, h = PixelBound(max_pixels=100_000).target_size(width, height)
        assert 0.99 * 100_000 <= w * h <= 100_000 or (w, h) == (width, height)
        assert abs(w / h - width / height) < 0.01 * width / height + 1 / h
        w, h = PixelBound(min_width=336, min_height=336).target_size(width, height)
        assert min(w, h) >= min(336, width, height)


def test_bad_bound_is_named() -> None:
    with pytest.raises(ValueError, match="max_pixels must be positive"):
        PixelBound(max_pixels=0)


# -- the processors' own resizing: the downscaled image must give the model the same input --------

PHOTO_SIZES = [(3000, 2000), (2000, 3000), (4032, 3024), (6000, 4000), (1500, 4000), (2100, 1000)]


@pytest.mark.parametrize("max_pixels", [1280 * 28 * 28, 256 * 28 * 28])
def test_qwen_grid_is_unchanged_by_the_bound(max_pixels: int) -> None:
    from transformers import AutoImageProcessor

    from culture_neurons.models.qwen2_5_vl import DEFAULT_MIN_PIXELS, cap_image_pixels

    processor = AutoImageProcessor.from_pretrained("resources/demo/model")
    cap_image_pixels(processor, DEFAULT_MIN_PIXELS, max_pixels)
    bound = area_bound(processor)
    assert bound == PixelBound(max_pixels=max_pixels, factor=28)
    for size in PHOTO_SIZES:
        target = bound.target_size(*size)
        assert target[0] * target[1] < size[0] * size[1] / 2  # a real downscale
        grids = [
            processor(images=[Image.new("RGB", s)], return_tensors="pt")["image_grid_thw"].tolist()
            for s in (size, target)
        ]
        assert grids[0] == grids[1], (size, target)


def test_llava_next_patches_are_unchanged_by_the_bound() -> None:
    from transformers import LlavaNextImageProcessor

    processor = LlavaNextImageProcessor(
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    )
    bound = processor_bound(processor)
    assert bound == pinpoints_bound(processor) == PixelBound(min_width=1008, min_height=1008)
    for size in PHOTO_SIZES:
        target = bound.target_size(*size)
        shapes = [
            processor(images=[Image.new("RGB", s)], return_tensors="pt")["pixel_values"].shape
            for s in (size, target)
        ]
        assert shapes[0] == shapes[1], (size, target)


def test_unknown_or_non_resizing_processor_gets_no_bound() -> None:
    class Unknown:
        size = {"shortest_edge": 3136, "longest_edge": 1003520}  # Qwen's, but not known as such

    class NoResize:
        do_resize = False
        size = {"height": 224, "width": 224}

    assert processor_bound(Unknown()) is None
    assert processor_bound(NoResize()) is None
    assert processor_bound(None) is None


# -- shard row groups ---------------------------------------------------------------------------


def test_row_group_cache_stays_within_its_budget(tmp_path, monkeypatch) -> None:
    """Reading rows across many row groups of photo-sized images keeps at most the budget (and
    the group in use) decompressed, and every row comes back right."""
    blob = 200_000  # bytes per image
    rows = [{"bytes": bytes([k]) * blob, "path": None} for k in range(24)]
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])
    path = tmp_path / "shard.parquet"
    pq.write_table(pa.Table.from_pylist([{"image": r} for r in rows], schema), path,
                   row_group_size=4)  # fmt: skip
    cache = images._RowGroupCache(budget=3 * 4 * blob)
    monkeypatch.setattr(images, "_row_groups", cache)
    reader = images._ShardReader(str(path))
    peak = 0
    for k in [0, 5, 9, 13, 17, 21, 1, 22, 3, 23, 10, 11]:
        assert reader.image(k)["bytes"] == rows[k]["bytes"]
        peak = max(peak, cache.nbytes)
    assert 4 * blob <= peak <= 3 * 4 * blob + 4 * 100  # three groups (plus offsets), not six
