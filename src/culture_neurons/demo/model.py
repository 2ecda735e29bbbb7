"""The demo VLM: a tiny Qwen2.5-VL (real transformers classes) trained here on the demo's train
portion, saved with `save_pretrained` and loaded back through the ordinary adapter path.

Everything is built offline: a word-level tokenizer over the demo's own vocabulary (each fictional
name is one token), Qwen's special tokens and chat template, Qwen's image processor, and a model
small enough to learn the 64 (culture, object) -> name associations in about two minutes on two
CPU cores.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from tqdm import tqdm
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
)

from culture_neurons.demo.defaults import DEFAULT_TRAINING
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import prompt_items
from culture_neurons.models.prompt import build_prompt_text
from culture_neurons.models.qwen2_5_vl import Qwen2_5_VLAdapter
from culture_neurons.models.qwen_processing import QwenVLImageProcessorStandIn
from culture_neurons.models.tiny import QWEN_TEMPLATE

log = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
UNK = "[UNK]"
# Lower-cased words around the fixed prompt text: the chat template's system turn and roles.
TEMPLATE_WORDS = "you are a helpful assistant . system user assistant"


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", "isolated"),
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(),
        ]
    )


def build_demo_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over every word of ``texts`` plus Qwen's special tokens."""
    pre = _pre_tokenizer()
    words = set()
    for text in [*texts, TEMPLATE_WORDS]:
        words.update(piece for piece, _ in pre.pre_tokenize_str(text.lower()))
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, UNK, *sorted(words)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre
    # WordPiece's decoder joins tokens with spaces (and merges nothing without "##" prefixes).
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=UNK,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = QWEN_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def build_demo_model(
    tokenizer: PreTrainedTokenizerFast, settings: dict[str, Any]
) -> Qwen2_5_VLForConditionalGeneration:
    hidden = int(settings["hidden_size"])
    heads = 4
    # Multimodal RoPE splits each head's rotary frequencies over (time, height, width).
    half = hidden // heads // 2
    mrope_section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 4,
            "out_hidden_size": hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        text_config={
            "hidden_size": hidden,
            "num_hidden_layers": int(settings["layers"]),
            "intermediate_size": int(settings["intermediate_size"]),
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 1024,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": mrope_section,
            },
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(int(settings["seed"]))
    return Qwen2_5_VLForConditionalGeneration(config)


def _all_texts(frames: Iterable[pd.DataFrame]) -> list[str]:
    return [
        build_prompt_text(q, list(o))
        for frame in frames
        for q, o in zip(frame["question"], frame["options"], strict=True)
    ]


def _encode(adapter: Qwen2_5_VLAdapter, rows: pd.DataFrame) -> list[dict[str, torch.Tensor]]:
    """Per item: prompt ids, pixels and the answer ids (name + end of turn), encoded once."""
    encoded = []
    eos = adapter.tokenizer.eos_token_id
    for item, row in zip(prompt_items(rows), rows.itertuples(index=False), strict=True):
        batch = adapter.build_batch([item])
        answer = adapter.tokenizer(row.options[row.label], add_special_tokens=False)["input_ids"]
        entry = {key: batch[key] for key in ("pixel_values", "image_grid_thw")}
        for key in ("input_ids", "mm_token_type_ids"):
            if key in batch:
                entry[key] = batch[key][0]  # one unpadded row
        entry["answer"] = torch.tensor([*answer, eos])
        encoded.append(entry)
    return encoded


def _collate(encoded: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompt+answer sequences; the loss sees only the answer tokens."""
    sequences = [torch.cat([e["input_ids"], e["answer"]]) for e in encoded]
    length = max(len(s) for s in sequences)
    batch_size = len(encoded)
    input_ids = torch.full((batch_size, length), pad_id)
    attention = torch.zeros((batch_size, length), dtype=torch.long)
    labels = torch.full((batch_size, length), -100)
    token_types = torch.zeros((batch_size, length), dtype=torch.long)
    for row, (item, sequence) in enumerate(zip(encoded, sequences, strict=True)):
        start = length - len(sequence)
        input_ids[row, start:] = sequence
        attention[row, start:] = 1
        labels[row, length - len(item["answer"]) :] = item["answer"]
        if "mm_token_type_ids" in item:
            token_types[row, start : start + len(item["input_ids"])] = item["mm_token_type_ids"]
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "pixel_values": torch.cat([e["pixel_values"] for e in encoded]),
        "image_grid_thw": torch.cat([e["image_grid_thw"] for e in encoded]),
    }
    if "mm_token_type_ids" in encoded[0]:
        batch["mm_token_type_ids"] = token_types
    return batch


def train_demo_model(
    train: pd.DataFrame,
    vocabulary_items: pd.DataFrame,
    out_dir: str | Path,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, train and save the demo VLM; returns the training summary."""
    settings = {**DEFAULT_TRAINING, **(settings or {})}
    if len(train) < int(settings["batch_size"]):
        # The loop takes whole batches only: with fewer items it would never take a step.
        raise InputError(
            f"the demo's train portion has {len(train)} items, fewer than demo_training."
            f"batch_size ({settings['batch_size']})"
        )
    tokenizer = build_demo_tokenizer(_all_texts([train, vocabulary_items]))
    model = build_demo_model(tokenizer, settings)
    image_processor = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = QwenVLImageProcessorStandIn(tokenizer, image_processor, QWEN_TEMPLATE)
    adapter = Qwen2_5_VLAdapter(model, processor)
    start = time.perf_counter()
    encoded = _encode(adapter, train)
    encode_s = time.perf_counter() - start

    model.train()
    steps, batch_size = int(settings["steps"]), int(settings["batch_size"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(settings["learning_rate"]))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=float(settings["learning_rate"]), total_steps=steps, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(int(settings["seed"]))
    losses: list[float] = []
    start = time.perf_counter()
    with tqdm(total=steps, desc="train", unit="step", mininterval=2.0) as progress:
        while len(losses) < steps:
            order = torch.randperm(len(encoded), generator=generator).tolist()
            for first in range(0, len(order) - batch_size + 1, batch_size):
                chosen = [encoded[i] for i in order[first : first + batch_size]]
                batch = _collate(chosen, tokenizer.pad_token_id)
                loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(float(loss.detach()))
                progress.update(1)
                progress.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
                if len(losses) >= steps:
                    break
    train_s = time.perf_counter() - start
    model.eval()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(QWEN_TEMPLATE)
    summary = {
        "synthetic": True,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocabulary": len(tokenizer),
        "decoder_layers": int(settings["layers"]),
        "mlp_neurons_per_layer": int(settings["intermediate_size"]),
        "settings": settings,
        "train_items": len(train),
        "encode_s": round(encode_s, 2),
        "train_s": round(train_s, 2),
        "initial_loss": round(sum(losses[:5]) / min(5, len(losses)), 4),
        "final_loss": round(sum(losses[-20:]) / min(20, len(losses)), 4),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
