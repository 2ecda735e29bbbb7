"""Qwen2.5-VL (e.g. Qwen/Qwen2.5-VL-7B-Instruct): class, processor and image-size cap."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, PreTrainedModel

from culture_neurons.data.images import PixelBound

from .base import ModelAdapter
from .compat import set_pixel_bounds
from .image_bound import area_bound
from .loading import hub_kwargs
from .qwen_processing import QwenVLImageProcessorStandIn, load_processor_chat_template
from .spec import AdapterSpec

log = logging.getLogger(__name__)

#: Qwen's own floor (4 visual tokens); images are rarely this small.
DEFAULT_MIN_PIXELS = 56 * 56
#: At most 1280 visual tokens (one per 28x28 pixels after the 2x2 merge). The checkpoint's
#: preprocessor allows 16384*28*28 pixels, which turns a 6000x4000 CVQA photo into ~16k visual
#: tokens (~20x the compute and memory of every masked run); 1280*28*28 is the cap the Qwen2.5-VL
#: model card suggests and transformers' own default. It keeps the visual tokens below
#: LLaVA-NeXT's (up to 2928 at 672 px), and a 3:2 photo still gets 29x43 of them.
DEFAULT_MAX_PIXELS = 1280 * 28 * 28


def cap_image_pixels(image_processor: Any, min_pixels: int, max_pixels: int) -> None:
    """Bound the resized image area in place (in the form this transformers keeps it)."""
    if not 0 < min_pixels <= max_pixels:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
    set_pixel_bounds(image_processor, min_pixels, max_pixels)


class Qwen2_5_VLAdapter(ModelAdapter):
    family = "qwen2_5_vl"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"

    @classmethod
    def load_processor(cls, spec: AdapterSpec, model: PreTrainedModel) -> Any:
        kwargs = dict(spec.processor_kwargs)
        min_pixels = int(kwargs.pop("min_pixels", DEFAULT_MIN_PIXELS))
        max_pixels = int(kwargs.pop("max_pixels", DEFAULT_MAX_PIXELS))
        hub = hub_kwargs(spec)
        try:
            processor = AutoProcessor.from_pretrained(spec.path, **hub, **kwargs)
        except ImportError as err:  # the video processor needs torchvision
            log.info("using the image-only Qwen processor stand-in (%s)", str(err).strip()[:80])
            processor = QwenVLImageProcessorStandIn(
                AutoTokenizer.from_pretrained(spec.path, **hub, **kwargs),
                AutoImageProcessor.from_pretrained(spec.path, **hub),
                load_processor_chat_template(spec.path, **hub),
                mm_token_type_ids="mm_token_type_ids"
                in inspect.signature(model.forward).parameters,
            )
        cap_image_pixels(processor.image_processor, min_pixels, max_pixels)
        return processor

    @property
    def image_bound(self) -> PixelBound | None:
        """Qwen's processor scales an image to at most its ``max_pixels`` (`cap_image_pixels`)."""
        if not self.takes_images:
            return None
        return area_bound(self.processor.image_processor)
