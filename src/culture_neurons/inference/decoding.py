"""Greedy decoding driven directly over the decoder stack: the fast path of the engine.

Masked evaluation answers every item under many masks, and the masks act on the decoder MLPs
only. So the part of the forward that no mask touches (processor, vision encoder, merging image
features into the text embeddings, position ids) runs once per item: `capture_prompts` lets the
model's own `generate()` prepare the first decoder call and stops it there, keeping exactly what
the decoder stack would have received. `greedy_decode` then runs the decoder for any number of
rows (item, mask) built from those captures: left-padded batches, one prefill, one token per step,
and a row leaves the batch (and the KV cache) at its end-of-sequence token. The result is the same
token sequence as `model.generate(do_sample=False)` on the item alone; tests compare the two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from culture_neurons.errors import InputError
from culture_neurons.models.base import ModelAdapter

log = logging.getLogger(__name__)

# torch < 2.5 has only the CUDA spelling.
OutOfMemoryError: type[Exception] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class _Captured(Exception):
    """Raised inside the decoder's pre-hook to stop `generate()` once its inputs are known."""


@dataclass
class Prompt:
    """One item's decoder inputs without padding, on the model's device.

    embeds [t, H]: text embeddings with the image features merged in; positions [P, t]: position
    ids (P = 1, or 3-4 components for multimodal RoPE); input_ids [t] (for the repetition penalty).
    """

    embeds: torch.Tensor
    positions: torch.Tensor
    input_ids: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.embeds.shape[0])


@dataclass(frozen=True)
class GreedySettings:
    """What `generate(do_sample=False)` would apply to the logits, read from the model."""

    eos_token_ids: tuple[int, ...]
    repetition_penalty: float = 1.0

    @classmethod
    def from_model(cls, model: nn.Module) -> GreedySettings:
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
        unsupported = {
            name: getattr(gen, name, None)
            for name in ("no_repeat_ngram_size", "bad_words_ids", "min_new_tokens", "min_length")
            if getattr(gen, name, None)
        }
        if unsupported:
            raise InputError(
                f"the model's generation config sets {unsupported}, which the fast greedy path "
                "does not apply; remove them from its generation_config.json"
            )
        penalty = getattr(gen, "repetition_penalty", None) or 1.0
        return cls(eos_token_ids=eos_ids, repetition_penalty=float(penalty))


def decoder_stack(adapter: ModelAdapter) -> nn.Module:
    """The module that owns the decoder layers (and the final norm): `model.language_model` etc."""
    parent = adapter.layers_path.rpartition(".")[0]
    return adapter.model.get_submodule(parent) if parent else adapter.model


@torch.inference_mode()
def capture_prompts(adapter: ModelAdapter, batch: Any) -> list[Prompt]:
    """Each row's decoder inputs, as `generate()` prepares them, with the padding removed."""
    stack = decoder_stack(adapter)
    seen: dict[str, Any] = {}

    def stop(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.update(kwargs)
        if args:
            seen.setdefault("input_ids", args[0])
        raise _Captured

    handle = stack.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        adapter.generate(batch, max_new_tokens=1)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"{type(adapter.model).__name__}.generate() never called its decoder")
    embeds = seen.get("inputs_embeds")
    if embeds is None:
        embeds = adapter.model.get_input_embeddings()(seen["input_ids"])
    attention = batch["attention_mask"].bool()
    if embeds.shape[:2] != attention.shape:
        raise RuntimeError(
            f"decoder inputs {tuple(embeds.shape[:2])} do not match the batch "
            f"{tuple(attention.shape)}"
        )
    positions = seen.get("position_ids")
    prompts = []
    for row in range(attention.shape[0]):
        valid = attention[row]
        if positions is None:
            # The decoder would count from 0 over the padded sequence; alone, the item starts at 0.
            row_positions = torch.arange(int(valid.sum()), device=embeds.device)[None]
        elif positions.dim() == 2:
            row_positions = positions[row, valid][None]
        else:
            row_positions = positions[:, row, valid]
        input_ids = batch["input_ids"][row][valid.to(batch["input_ids"].device)]
        prompts.append(Prompt(embeds[row, valid], row_positions, input_ids))
    return prompts


RowHook = Callable[[torch.Tensor], None]


@torch.inference_mode()
def greedy_decode(
    adapter: ModelAdapter,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    settings: GreedySettings,
    select_rows: RowHook | None = None,
) -> list[list[int]]:
    """Greedy new tokens of every prompt (one row each), stopping a row at end of sequence.

    ``select_rows(indices)`` is told which rows stay whenever finished rows leave the batch, so
    per-row interventions (keep masks) can follow; the prefill is the first decoder call.
    """
    if not prompts:
        return []
    stack = decoder_stack(adapter)
    embed = adapter.model.get_input_embeddings()
    head = adapter.model.get_output_embeddings()
    device = prompts[0].embeds.device
    rows, width = len(prompts), max(p.length for p in prompts)
    hidden = prompts[0].embeds.shape[-1]
    n_components = prompts[0].positions.shape[0]
    embeds = prompts[0].embeds.new_zeros(rows, width, hidden)
    attention = torch.zeros(rows, width, dtype=torch.long, device=device)
    positions = torch.ones(n_components, rows, width, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        start = width - prompt.length  # left padding: the last prompt token sits at the end
        embeds[row, start:] = prompt.embeds
        attention[row, start:] = 1
        positions[:, row, start:] = prompt.positions
    seen = None
    if settings.repetition_penalty != 1.0:
        seen = torch.zeros(rows, head.out_features, dtype=torch.bool, device=device)
        for row, prompt in enumerate(prompts):
            seen[row, prompt.input_ids.to(device)] = True
    eos = torch.tensor(settings.eos_token_ids, dtype=torch.long, device=device)
    two_d = n_components == 1

    cache = DynamicCache(config=adapter.model.config)
    out = stack(
        inputs_embeds=embeds,
        attention_mask=attention,
        position_ids=positions[0] if two_d else positions,
        past_key_values=cache,
        use_cache=True,
    )
    active = torch.arange(rows, device=device)
    last_position = positions[:, :, -1]
    generated: list[list[int]] = [[] for _ in range(rows)]
    for step in range(max_new_tokens):
        # .to(device): with a model spread over GPUs the head may sit on another one.
        logits = head(out.last_hidden_state[:, -1]).float().to(device)
        if seen is not None:
            penalised = torch.where(
                logits < 0,
                logits * settings.repetition_penalty,
                logits / settings.repetition_penalty,
            )
            logits = torch.where(seen, penalised, logits)
        next_tokens = logits.argmax(dim=-1)
        for row, token in zip(active.tolist(), next_tokens.tolist(), strict=True):
            generated[row].append(token)
        if step == max_new_tokens - 1:
            break
        going = ~torch.isin(next_tokens, eos)
        if not bool(going.all()):
            if not bool(going.any()):
                break
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, next_tokens = active[keep], next_tokens[keep]
            attention, last_position = attention[keep], last_position[:, keep]
            if seen is not None:
                seen = seen[keep]
            if select_rows is not None:
                select_rows(keep)
        if seen is not None:
            seen[torch.arange(len(next_tokens), device=device), next_tokens] = True
        attention = torch.cat([attention, attention.new_ones(len(active), 1)], dim=1)
        last_position = last_position + 1
        step_positions = last_position.unsqueeze(-1)
        out = stack(
            inputs_embeds=embed(next_tokens).unsqueeze(1),
            attention_mask=attention,
            position_ids=step_positions[0] if two_d else step_positions,
            past_key_values=cache,
            use_cache=True,
        )
    return generated
