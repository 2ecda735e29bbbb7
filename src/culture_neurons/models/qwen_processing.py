"""Qwen2-VL-style image prompts from the model's tokenizer and image processor alone.

transformers 5 builds `Qwen2_5_VLProcessor` with a video processor, and its video processor needs
torchvision; without torchvision `AutoProcessor` raises ImportError even for image-only use. This
stand-in does what the real processor does for images (expand each `<|image_pad|>` into
`t*h*w / merge_size**2` copies, one per visual token, and tag them in `mm_token_type_ids`) with the
checkpoint's own tokenizer, image processor and chat template. Where torchvision is installed the
adapter uses the real processor, and a test checks that both give the same batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import BatchFeature
from transformers.utils import cached_file


def load_processor_chat_template(path: str, **hub: Any) -> str | None:
    """The processor-level chat template of a checkpoint (chat_template.jinja or .json), if any."""
    for filename in ("chat_template.jinja", "chat_template.json"):
        resolved = cached_file(path, filename, _raise_exceptions_for_missing_entries=False, **hub)
        if resolved is None:
            continue
        with open(resolved, encoding="utf-8") as handle:
            text = handle.read()
        return json.loads(text)["chat_template"] if filename.endswith(".json") else text
    return None


class QwenVLImageProcessorStandIn:
    """Tokenizer + image processor + chat template, callable like `Qwen2_5_VLProcessor`."""

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any,
        chat_template: str | None = None,
        *,
        mm_token_type_ids: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        self.emit_mm_token_type_ids = mm_token_type_ids

    def apply_chat_template(
        self, conversation: list[dict[str, Any]], chat_template: str | None = None, **kwargs: Any
    ) -> str:
        return self.tokenizer.apply_chat_template(
            conversation, chat_template=chat_template or self.chat_template, **kwargs
        )

    def _expand(self, text: str, counts: Iterator[int]) -> str:
        head, *rest = text.split(self.image_token)
        pieces = [head]
        for tail in rest:
            try:
                pieces.append(self.image_token * next(counts))
            except StopIteration:
                raise ValueError("more image placeholders in the text than images") from None
            pieces.append(tail)
        return "".join(pieces)

    def __call__(
        self,
        text: str | Sequence[str],
        images: Sequence[Any] | None = None,
        **text_kwargs: Any,
    ) -> BatchFeature:
        texts = [text] if isinstance(text, str) else list(text)
        image_inputs: dict[str, Any] = {}
        if images:
            image_inputs = dict(self.image_processor(images=list(images), return_tensors="pt"))
            merge = self.image_processor.merge_size**2
            counts = iter((image_inputs["image_grid_thw"].prod(dim=-1) // merge).tolist())
            texts = [self._expand(t, counts) for t in texts]
            if next(counts, None) is not None:
                raise ValueError("more images than image placeholders in the text")
        encoded = dict(self.tokenizer(texts, **text_kwargs))
        if self.emit_mm_token_type_ids:
            input_ids = torch.as_tensor(encoded["input_ids"])
            # 0 text, 1 image, 2 video, as ProcessorMixin.create_mm_token_type_ids numbers them.
            types = (input_ids == self.image_token_id).long()
            encoded["mm_token_type_ids"] = types + 2 * (input_ids == self.video_token_id).long()
        return BatchFeature(
            {**encoded, **image_inputs}, tensor_type=text_kwargs.get("return_tensors")
        )

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)
