"""Model adapters (one per family), activation-recording and keep-mask hooks, unit sites."""

from .base import ModelAdapter
from .hooks import (
    ActivationRecorder,
    ActivationStats,
    KeepMasks,
    apply_keep_masks,
    hooks_attached,
    record_activation_stats,
)
from .prompt import build_prompt_text
from .registry import families, get_adapter, load_adapter, load_adapter_for_masks
from .sites import (
    ATTENTION_HEADS,
    DECODER_MLP,
    SITES,
    VISION_MLP,
    SiteShape,
    intervene_site,
    record_site,
    site_shape,
)
from .spec import TOKEN_SCOPES, AdapterSpec

__all__ = [
    "ATTENTION_HEADS",
    "DECODER_MLP",
    "SITES",
    "TOKEN_SCOPES",
    "VISION_MLP",
    "ActivationRecorder",
    "ActivationStats",
    "AdapterSpec",
    "KeepMasks",
    "ModelAdapter",
    "SiteShape",
    "apply_keep_masks",
    "build_prompt_text",
    "families",
    "get_adapter",
    "hooks_attached",
    "intervene_site",
    "load_adapter",
    "load_adapter_for_masks",
    "record_activation_stats",
    "record_site",
    "site_shape",
]
