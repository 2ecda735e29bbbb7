"""What an image processor keeps of a photo, as the `PixelBound` that images may be decoded to.

Only processors whose resizing is known get a bound; an unknown one gets None (decode at full
size), since a bound below what it resizes to would change the model's input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from culture_neurons.data.images import PixelBound

_SIZE_KEYS = ("height", "width", "shortest_edge", "longest_edge", "max_pixels")


def size_fields(size: Any) -> dict[str, int]:
    """The set fields of an image processor's ``size`` (a dict, or transformers 5's SizeDict)."""
    if size is None:
        return {}
    get = size.get if isinstance(size, Mapping) else (lambda key: getattr(size, key, None))
    return {key: int(get(key)) for key in _SIZE_KEYS if get(key) is not None}


def area_bound(image_processor: Any) -> PixelBound | None:
    """Qwen2-VL-style processors scale an image to at most ``max_pixels`` (its ``size``'s
    ``longest_edge``, or the older ``max_pixels`` attribute), sides multiples of the patch size
    times the merge size."""
    if not getattr(image_processor, "do_resize", True):
        return None
    fields = size_fields(getattr(image_processor, "size", None))
    max_pixels = getattr(image_processor, "max_pixels", None) or fields.get("longest_edge")
    patch, merge = (getattr(image_processor, n, None) for n in ("patch_size", "merge_size"))
    if not (max_pixels and patch and merge):
        return None
    return PixelBound(max_pixels=int(max_pixels), factor=int(patch) * int(merge))


def pinpoints_bound(image_processor: Any) -> PixelBound | None:
    """LLaVA-NeXT's anyres picks the grid pinpoint that keeps most of the image and resizes into
    it; an image whose both sides still reach the largest pinpoint side keeps that choice (every
    pinpoint then scales it down, so each one's kept area depends on the aspect ratio only)."""
    pinpoints = getattr(image_processor, "image_grid_pinpoints", None)
    if not pinpoints:
        return None
    side = max(max(pinpoint) for pinpoint in pinpoints)
    return PixelBound(min_width=side, min_height=side)


def fixed_size_bound(image_processor: Any) -> PixelBound | None:
    """A processor resizing to a fixed height x width, or its shortest edge to a fixed length
    (CLIP-style, then cropped), needs no more than those sides."""
    fields = size_fields(getattr(image_processor, "size", None))
    if set(fields) == {"height", "width"}:
        return PixelBound(min_width=fields["width"], min_height=fields["height"])
    if set(fields) == {"shortest_edge"}:
        return PixelBound(min_width=fields["shortest_edge"], min_height=fields["shortest_edge"])
    return None


def processor_bound(image_processor: Any) -> PixelBound | None:
    """The bound of a processor whose family is not known: pinpoints or a fixed size, else None."""
    if image_processor is None or not getattr(image_processor, "do_resize", True):
        return None
    return pinpoints_bound(image_processor) or fixed_size_bound(image_processor)
