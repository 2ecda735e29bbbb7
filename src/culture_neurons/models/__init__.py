"""Model adapters (one per family), activation-recording and keep-mask hooks."""

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
from .spec import TOKEN_SCOPES, AdapterSpec

__all__ = [
    "TOKEN_SCOPES",
    "ActivationRecorder",
    "ActivationStats",
    "AdapterSpec",
    "KeepMasks",
    "ModelAdapter",
    "apply_keep_masks",
    "build_prompt_text",
    "families",
    "get_adapter",
    "hooks_attached",
    "load_adapter",
    "load_adapter_for_masks",
    "record_activation_stats",
]
