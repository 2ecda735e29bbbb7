"""Tiny random-init checkpoints of each supported family, built offline.

Each is a real transformers architecture (Qwen2.5-VL; LLaVA-NeXT with a CLIP tower and a Mistral or
Qwen2 decoder) at toy size, with a byte-level BPE tokenizer trained here on a few sentences, the
family's special tokens, a chat template that mimics the real one, and the real image processor
classes. `build_tiny_model` writes the checkpoint as `save_pretrained` would, so that it loads
through `load_adapter` exactly as a hub checkpoint does; tests and the demo workflow use them.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2VLImageProcessor,
    SiglipVisionConfig,
)

from .prompt import build_prompt_text

TINY_FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "llava_next", "pangea")
#: Extra checkpoints of a family, by name -> family: LLaVA-NeXT with a SigLIP tower (no CLS token,
#: the "full" feature strategy), for the vision-site tests. Not in TINY_FAMILIES, which tests
#: parametrize over.
TINY_VARIANTS: dict[str, str] = {"llava_next_siglip": "llava_next"}

TEXT_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    # Wider than transformers' 0.02, so that a random decoder's greedy output depends on its input
    # (with 0.02 the tiny Qwen answers every prompt alike, and batch tests would prove little).
    "initializer_range": 0.1,
}

# LLaVA-NeXT tiles: a 28 px CLIP crop (2x2 patches of 14 px + CLS) and grids of up to 2x2 crops.
CLIP_SIZE, CLIP_PATCH = 28, 14
GRID_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56], [28, 84], [84, 28]]

QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# llava-hf's llava-v1.6-mistral template: images first, then the text, inside [INST] ... [/INST].
MISTRAL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] "
    "{% for content in message['content'] if content['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for content in message['content'] if content['type'] == 'text' %}"
    "{{ content['text'] }}{% endfor %} [/INST]"
    "{% elif message['role'] == 'assistant' %}"
    "{% for content in message['content'] if content['type'] == 'text' %}"
    "{{ ' ' + content['text'] }}{% endfor %}</s>"
    "{% endif %}"
    "{% endfor %}"
)

# Qwen2's text-only template, as a Qwen2 tokenizer carries it: it cannot place an image, which is
# why the Pangea adapter brings its own.
QWEN2_TEXT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    build_prompt_text(
        "What is shown in the picture?", ["a temple", "a market", "a river", "a dish"]
    ),
    "You are a helpful assistant. system user assistant",
    "the a an of in on is are what which where who festival food dress dance city country",
    string.ascii_letters + " " + string.digits + " " + string.punctuation,
]


def _tokenizer(
    specials: list[str], *, bos: str | None, eos: str, pad: str, unk: str | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE (every string encodes, no unk needed) with the family's special tokens."""
    model_specials = [t for t in (unk, bos) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        _CORPUS,
        trainers.BpeTrainer(
            vocab_size=384,
            special_tokens=model_specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    if bos:  # Mistral's tokenizer prepends <s> to every sequence
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))],
        )
    named = {"eos_token": eos, "pad_token": pad}
    if bos:
        named["bos_token"] = bos
    if unk:
        named["unk_token"] = unk
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    extra = [t for t in specials if t not in named.values()]
    fast.add_special_tokens({**named, "additional_special_tokens": extra})
    return fast


def _text_config(
    config_cls: type,
    tokenizer: PreTrainedTokenizerFast,
    sizes: dict[str, Any] | None = None,
    **extra: object,
) -> object:
    return config_cls(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(sizes or TEXT_SIZES),
        **extra,
    )


QWEN_VISION_SIZES = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
}


def _build_qwen2_5_vl(
    out: Path,
    *,
    text_sizes: dict[str, Any] | None = None,
    vision_sizes: dict[str, Any] | None = None,
    longest_edge: int = 112,
) -> None:
    tok = _tokenizer(
        [
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
    )
    ids = tok.convert_tokens_to_ids
    text_sizes = {**TEXT_SIZES, **(text_sizes or {})}
    head_dim = text_sizes["hidden_size"] // text_sizes["num_attention_heads"]
    text = _text_config(
        dict,  # Qwen2_5_VLConfig builds its own text config from a dict
        tok,
        text_sizes,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 3, head_dim // 2 - 5],
        },
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config={
            **QWEN_VISION_SIZES,
            **(vision_sizes or {}),
            "out_hidden_size": text_sizes["hidden_size"],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(out)
    tok.chat_template = QWEN_TEMPLATE
    tok.save_pretrained(out)
    # Qwen's processor needs a torchvision-backed video processor to be built, so the checkpoint
    # is written file by file, as the hub repo holds it; AutoProcessor assembles it where it can.
    # `size`, not min_pixels/max_pixels: transformers 5.17 writes those into the class-wide default.
    Qwen2VLImageProcessor(
        size={"shortest_edge": 56 * 56, "longest_edge": longest_edge * longest_edge}
    ).save_pretrained(out)
    (out / "processor_config.json").write_text(
        json.dumps({"processor_class": "Qwen2_5_VLProcessor"}, indent=2)
    )


def _build_llava_next(out: Path, *, decoder: str, vision_tower: str = "clip") -> None:
    if decoder == "mistral":
        tok = _tokenizer(
            ["<image>", "[INST]", "[/INST]"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>"
        )
        text = _text_config(MistralConfig, tok, sliding_window=None)
        tok.chat_template = MISTRAL_TEMPLATE
    else:
        tok = _tokenizer(
            ["<|im_start|>", "<|im_end|>", "<image>"],
            bos=None,
            eos="<|im_end|>",
            pad="<|endoftext|>",
        )
        text = _text_config(Qwen2Config, tok)
        tok.chat_template = QWEN2_TEXT_TEMPLATE
    if vision_tower == "clip":
        vision = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=CLIP_SIZE,
            patch_size=CLIP_PATCH,
            projection_dim=32,
        )
        strategy, class_tokens = "default", 1  # CLIP's CLS token, dropped again by "default"
    else:  # SigLIP has no class token: every position is a patch, and "full" keeps them all
        vision = SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=CLIP_SIZE,
            patch_size=CLIP_PATCH,
        )
        strategy, class_tokens = "full", 0
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    LlavaNextForConditionalGeneration(config).save_pretrained(out)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": CLIP_SIZE},
        crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE},
        image_grid_pinpoints=GRID_PINPOINTS,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=CLIP_PATCH,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=class_tokens,
        chat_template=MISTRAL_TEMPLATE if decoder == "mistral" else None,
    )
    processor.save_pretrained(out)


# (height, width): different aspect ratios give different numbers of visual tokens per row, so a
# batch of these is padded by image as well as by text length.
IMAGE_SIZES: list[tuple[int, int]] = [(56, 56), (56, 112), (84, 28), (112, 84)]

QUESTIONS: list[tuple[str, list[str]]] = [
    ("What is shown in the picture?", ["a temple", "a market", "a river", "a dish"]),
    ("Which festival is this?", ["Diwali", "Carnival", "Hanami", "Eid"]),
    (
        "Where was this photo taken? Name the city shown in the picture, please.",
        ["Lima", "Oslo", "Dhaka", "Accra"],
    ),
    ("What food is this?", ["rice", "bread", "noodles with a spicy sauce", "soup"]),
]


def random_image(height: int, width: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def make_items(n: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """n multiple-choice items (question, options, image) of varied image sizes and text lengths."""
    items = []
    for i in range(n):
        question, options = QUESTIONS[(i + seed) % len(QUESTIONS)]
        height, width = IMAGE_SIZES[(i + seed) % len(IMAGE_SIZES)]
        image = random_image(height, width, seed + i)
        items.append({"question": question, "options": list(options), "image": image})
    return items


def build_tiny_model(family: str, out_dir: str | Path, *, seed: int = 0, **qwen_sizes: Any) -> Path:
    """Write a random-init tiny checkpoint of `family` or of a `TINY_VARIANTS` name (weights,
    tokenizer, processor).

    ``qwen_sizes`` (qwen2_5_vl only: text_sizes, vision_sizes, longest_edge) override the toy
    sizes, for the benchmark's mid-size model.
    """
    if qwen_sizes and family != "qwen2_5_vl":
        raise ValueError(f"size overrides are for qwen2_5_vl only, not {family!r}")
    if family not in TINY_FAMILIES and family not in TINY_VARIANTS:
        raise ValueError(
            f"no tiny model for family {family!r}; have {TINY_FAMILIES + tuple(TINY_VARIANTS)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "qwen2_5_vl":
            _build_qwen2_5_vl(out, **qwen_sizes)
        else:
            _build_llava_next(
                out,
                decoder="qwen2" if family == "pangea" else "mistral",
                vision_tower="siglip" if family == "llava_next_siglip" else "clip",
            )
    return out
