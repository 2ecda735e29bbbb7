"""Any transformers VLM or causal LM whose decoder layers have `mlp.act_fn`."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, PreTrainedModel

from .base import ModelAdapter
from .loading import model_kwargs
from .spec import AdapterSpec


class GenericAdapter(ModelAdapter):
    """Loads `spec.model_class` if given, else the image-text-to-text Auto class, else causal LM.

    A text-only model (its processor is a tokenizer) gets the prompt without the image.
    """

    family = "generic"

    @classmethod
    def load_model(cls, spec: AdapterSpec) -> PreTrainedModel:
        if spec.model_class:
            return super().load_model(spec)
        try:
            return AutoModelForImageTextToText.from_pretrained(spec.path, **model_kwargs(spec))
        except ValueError:  # the config maps to no image-text-to-text class
            return AutoModelForCausalLM.from_pretrained(spec.path, **model_kwargs(spec))
