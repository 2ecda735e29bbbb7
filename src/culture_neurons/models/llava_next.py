"""LLaVA-NeXT (e.g. llava-hf/llava-v1.6-mistral-7b-hf): class and processor."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from .base import ModelAdapter
from .spec import AdapterSpec

# Vision towers that prepend a CLS token the "default" feature strategy drops again.
_CLS_VISION_MODELS = frozenset({"clip_vision_model"})


def complete_llava_next_processor(processor: Any, config: Any) -> None:
    """Fill in what older conversions left out of processor_config.json, from the model config.

    Without `patch_size` the processor cannot tell how many `<image>` tokens an image expands to;
    the values must match the vision tower or the model rejects the batch.
    """
    if getattr(processor, "patch_size", None) is not None:
        return
    vision = config.vision_config
    processor.patch_size = vision.patch_size
    processor.vision_feature_select_strategy = config.vision_feature_select_strategy
    processor.num_additional_image_tokens = int(vision.model_type in _CLS_VISION_MODELS)


class LlavaNextAdapter(ModelAdapter):
    family = "llava_next"
    model_class_name = "LlavaNextForConditionalGeneration"

    @classmethod
    def load_processor(cls, spec: AdapterSpec, model: PreTrainedModel) -> Any:
        processor = super().load_processor(spec, model)
        complete_llava_next_processor(processor, model.config)
        return processor
