"""Pangea (neulab/Pangea-7B-hf): LLaVA-NeXT with a Qwen2 decoder and Qwen's ChatML turns."""

from __future__ import annotations

from .llava_next import LlavaNextAdapter

#: The prompt layout of the Pangea model card (system turn, then `<image>` on its own line before
#: the user text). Pangea documents its prompt on the model card rather than through a processor
#: template, and a Qwen2 tokenizer's text-only template cannot place an image, so this one is always
#: used.
PANGEA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class PangeaAdapter(LlavaNextAdapter):
    family = "pangea"
    chat_template = PANGEA_CHAT_TEMPLATE
