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

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

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


def _cache_argument(stack: nn.Module, cache: DynamicCache) -> dict[str, DynamicCache]:
    """The KV cache as the decoder's forward names it: ``cache`` from transformers 5.25 on
    (where ``past_key_values`` is deprecated), ``past_key_values`` before."""
    parameters = inspect.signature(stack.forward).parameters
    return {"cache" if "cache" in parameters else "past_key_values": cache}


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


@dataclass
class DecodeStats:
    """What decoding cost: decoder calls, rows, and how many rows a draft finished."""

    forwards: int = 0  # decoder calls
    row_forwards: int = 0  # rows over all decoder calls (a row's prefill and each of its steps)
    rows: int = 0
    drafted: int = 0
    accepted: int = 0


class _Penalty:
    """The repetition penalty as `generate()` applies it: every token already in the row (prompt
    and generated) has its logit divided (positive) or multiplied (negative) by the penalty."""

    def __init__(self, prompts: Sequence[Prompt], settings: GreedySettings, vocab: int) -> None:
        self.factor = settings.repetition_penalty
        self.seen = None
        if self.factor != 1.0:
            device = prompts[0].embeds.device
            self.seen = torch.zeros(len(prompts), vocab, dtype=torch.bool, device=device)
            for row, prompt in enumerate(prompts):
                self.seen[row, prompt.input_ids.to(device)] = True

    def apply(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.seen is None:
            return logits
        penalised = torch.where(logits < 0, logits * self.factor, logits / self.factor)
        return torch.where(self.seen[rows], penalised, logits)

    def add(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        if self.seen is not None:
            self.seen[rows, tokens] = True


@dataclass
class _Rows:
    """Rows between decoder calls: their KV cache and what the next step needs. ``active``
    holds each row's number in the prompts given, in the cache's row order."""

    cache: DynamicCache
    active: torch.Tensor
    next_tokens: torch.Tensor
    going: torch.Tensor
    attention: torch.Tensor  # [rows, width]: 1 where a cached position is attended to
    last_position: torch.Tensor  # [P, rows]


class _ReservedLayer(DynamicLayer):
    """A full-attention cache layer held at the front of buffers with ``room`` positions to
    spare: a decode step writes its one position in place, where the plain `DynamicLayer`
    copies the whole cache (every row, every position) to append it. The first update (the
    prefill) sizes the buffers."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self._length = 0

    @staticmethod
    def _reserve(states: torch.Tensor, room: int) -> torch.Tensor:
        rows, heads, length, dim = states.shape
        buffer = states.new_empty(rows, heads, length + room, dim)
        buffer[:, :, :length] = states
        return buffer

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self._length]
        self.values = self._values[:, :, : self._length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if not self.is_initialized:
            self.device, self.dtype, self.is_initialized = key_states.device, key_states.dtype, True
            self._keys = key_states.new_empty(*key_states.shape[:2], new + self.room,
                                              key_states.shape[3])  # fmt: skip
            self._values = value_states.new_empty(*value_states.shape[:2], new + self.room,
                                                  value_states.shape[3])  # fmt: skip
        elif self._length + new > self._keys.shape[-2]:  # out of room: reserve as much again
            self._keys = self._reserve(self.keys, self._length + new)
            self._values = self._reserve(self.values, self._length + new)
        self._keys[:, :, self._length : self._length + new] = key_states
        self._values[:, :, self._length : self._length + new] = value_states
        self._length += new
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys = self._keys[indices]
        self._values = self._values[indices]
        self._expose()

    def crop(self, max_length: int) -> None:  # pragma: no cover - greedy_decode never crops
        raise NotImplementedError("a reserved cache layer is not cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:  # pragma: no cover
        raise NotImplementedError("a reserved cache layer is not repeated")

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError("a reserved cache layer is not reordered")


def _reserved_cache(config: Any, room: int) -> DynamicCache:
    """The model's dynamic cache with every full-attention layer a `_ReservedLayer` (a
    sliding-window layer keeps its own update)."""
    cache = DynamicCache(config=config)
    for index, layer in enumerate(_cache_layers(cache)):
        if type(layer) is DynamicLayer:
            cache.layers[index] = _ReservedLayer(room)
    return cache


@torch.inference_mode()
def greedy_decode(
    adapter: ModelAdapter,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    settings: GreedySettings,
    select_rows: RowHook | None = None,
    drafts: Sequence[Sequence[int]] | None = None,
    stats: DecodeStats | None = None,
) -> list[list[int]]:
    """Greedy new tokens of every prompt (one row each), stopping a row at end of sequence.

    ``select_rows(indices)`` is told which of the given rows the next decoder calls see
    whenever finished rows leave the batch, so per-row interventions (keep masks) can follow.

    The KV cache keeps room for the decode steps (`_ReservedLayer`): a step writes its one
    position in place instead of copying the whole cache.

    ``drafts`` (one token list per row, e.g. the item's unmasked answer) are checked instead of
    decoded: the prefill also reads each row's draft, and its greedy choice at every draft
    position is compared with the draft's token. A row that agrees everywhere is finished by
    that one call; any other keeps its tokens up to and including its first disagreement (its
    own greedy choice there) and decodes on from it, the rejected draft positions masked out of
    its attention. The tokens are those of step-by-step greedy decoding.
    """
    if not prompts:
        return []
    stats = stats if stats is not None else DecodeStats()
    rows = len(prompts)
    if drafts is not None and len(drafts) != rows:
        raise ValueError(f"{len(drafts)} drafts for {rows} prompts")
    head = adapter.model.get_output_embeddings()
    device = prompts[0].embeds.device
    penalty = _Penalty(prompts, settings, head.out_features)
    eos = torch.tensor(settings.eos_token_ids, dtype=torch.long, device=device)
    generated: list[list[int]] = [[] for _ in range(rows)]

    def choose(states: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        # .to(device): with a model spread over GPUs the head may sit on another one.
        logits = head(states).float().to(device)
        tokens = penalty.apply(logits, which).argmax(dim=-1)
        penalty.add(which, tokens)
        return tokens

    part = _prefill(
        adapter, prompts, drafts, max_new_tokens, choose, generated, eos, stats, room=max_new_tokens
    )
    _decode(adapter, part, max_new_tokens, choose, generated, eos, stats, select_rows)
    return generated


def _prefill(
    adapter: ModelAdapter,
    prompts: Sequence[Prompt],
    drafts: Sequence[Sequence[int]] | None,
    max_new_tokens: int,
    choose: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    generated: list[list[int]],
    eos: torch.Tensor,
    stats: DecodeStats,
    room: int,
) -> _Rows:
    """One decoder call over every row (left-padded prompts, drafts appended), and each row's
    first token (or its checked draft); ``room``: cache positions kept for the steps."""
    embed = adapter.model.get_input_embeddings()
    device = prompts[0].embeds.device
    rows = len(prompts)
    every_row = torch.arange(rows, device=device)
    # The tokens each row feeds after its prompt: all of its draft but the last token (whose
    # successor is never needed: a draft ends at end of sequence or at the token limit).
    checked = [min(len(d), max_new_tokens) for d in drafts] if drafts is not None else [0] * rows
    fed = (
        [list(d[: max(0, n - 1)]) for d, n in zip(drafts, checked, strict=True)]
        if drafts is not None
        else [[] for _ in range(rows)]
    )
    lengths = [p.length + len(f) for p, f in zip(prompts, fed, strict=True)]
    width = max(lengths)
    hidden = prompts[0].embeds.shape[-1]
    n_components = prompts[0].positions.shape[0]
    embeds = prompts[0].embeds.new_zeros(rows, width, hidden)
    attention = torch.zeros(rows, width, dtype=torch.long, device=device)
    positions = torch.ones(n_components, rows, width, dtype=torch.long, device=device)
    for row, (prompt, tokens) in enumerate(zip(prompts, fed, strict=True)):
        start = width - lengths[row]  # left padding: the last token sits at the end
        end = start + prompt.length
        embeds[row, start:end] = prompt.embeds
        attention[row, start:] = 1
        positions[:, row, start:end] = prompt.positions
        if tokens:
            ids = torch.tensor(tokens, dtype=torch.long, device=device)
            embeds[row, end:] = embed(ids).to(embeds.dtype)
            steps = torch.arange(1, len(tokens) + 1, device=device)
            positions[:, row, end:] = prompt.positions[:, -1:] + steps
    cache = _reserved_cache(adapter.model.config, room)
    stack = decoder_stack(adapter)
    out = stack(
        inputs_embeds=embeds,
        attention_mask=attention,
        position_ids=positions[0] if n_components == 1 else positions,
        use_cache=True,
        **_cache_argument(stack, cache),
    )
    stats.forwards += 1
    stats.row_forwards += rows
    stats.rows += rows
    last_position = positions[:, :, -1].clone()
    if drafts is None:
        next_tokens = choose(out.last_hidden_state[:, -1], every_row)
        for row, token in enumerate(next_tokens.tolist()):
            generated[row].append(token)
        going = ~torch.isin(next_tokens, eos)
    else:
        next_tokens, going = _verify_drafts(
            drafts, checked, width, out.last_hidden_state, choose, generated, eos, attention,
            last_position, stats,
        )  # fmt: skip
    going &= torch.tensor([len(g) < max_new_tokens for g in generated], device=device)
    return _Rows(cache, every_row, next_tokens, going, attention, last_position)


def _cache_layers(cache: DynamicCache) -> list[Any]:
    return list(getattr(cache, "layers", []))


def _decode(
    adapter: ModelAdapter,
    part: _Rows,
    max_new_tokens: int,
    choose: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    generated: list[list[int]],
    eos: torch.Tensor,
    stats: DecodeStats,
    select_rows: RowHook | None,
) -> None:
    """One token per step for every row still going, until none is."""
    stack = decoder_stack(adapter)
    embed = adapter.model.get_input_embeddings()
    cache, active, next_tokens, going = part.cache, part.active, part.next_tokens, part.going
    attention, last_position = part.attention, part.last_position
    two_d = last_position.shape[0] == 1
    cache_argument = _cache_argument(stack, cache)  # the same cache object every step
    while True:
        if not bool(going.all()):
            if not bool(going.any()):
                break
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, next_tokens = active[keep], next_tokens[keep]
            attention, last_position = attention[keep], last_position[:, keep]
            if select_rows is not None:
                select_rows(active)
        attention = torch.cat([attention, attention.new_ones(len(active), 1)], dim=1)
        last_position = last_position + 1
        step_positions = last_position.unsqueeze(-1)
        out = stack(
            inputs_embeds=embed(next_tokens).unsqueeze(1),
            attention_mask=attention,
            position_ids=step_positions[0] if two_d else step_positions,
            use_cache=True,
            **cache_argument,
        )
        stats.forwards += 1
        stats.row_forwards += len(active)
        next_tokens = choose(out.last_hidden_state[:, -1], active)
        for row, token in zip(active.tolist(), next_tokens.tolist(), strict=True):
            generated[row].append(token)
        going = ~torch.isin(next_tokens, eos)
        going &= torch.tensor([len(generated[r]) < max_new_tokens for r in active.tolist()],
                              device=next_tokens.device)  # fmt: skip


def _verify_drafts(
    drafts: Sequence[Sequence[int]],
    checked: list[int],
    width: int,
    states: torch.Tensor,
    choose: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    generated: list[list[int]],
    eos: torch.Tensor,
    attention: torch.Tensor,
    last_position: torch.Tensor,
    stats: DecodeStats,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy choices at every draft position of the prefill's output, position by position
    (the repetition penalty sees the tokens before each one). Returns each row's last token
    and whether it decodes on; masks the rejected draft positions out of ``attention`` and
    moves ``last_position`` back to each row's last accepted token."""
    device = states.device
    rows = len(drafts)
    stats.drafted += sum(1 for n in checked if n > 0)
    if min(checked, default=1) == 0:
        raise ValueError("every draft needs at least one token")
    last = torch.zeros(rows, dtype=torch.long, device=device)
    matching = [True] * rows
    for k in range(max(checked, default=0)):
        which = [r for r in range(rows) if matching[r] and k < checked[r]]
        if not which:
            break
        index = torch.tensor(which, dtype=torch.long, device=device)
        # Row r's prediction of draft token k sits at column width - checked[r] + k.
        columns = torch.tensor([width - checked[r] + k for r in which], device=device)
        tokens = choose(states[index, columns], index).tolist()
        for r, token in zip(which, tokens, strict=True):
            generated[r].append(token)
            last[r] = token
            if token != drafts[r][k]:
                matching[r] = False
                # Its draft positions after this one were read under a wrong prefix.
                rejected = checked[r] - 1 - k
                if rejected > 0:
                    attention[r, width - rejected :] = 0
                    last_position[:, r] -= rejected
    for r in range(rows):
        if matching[r]:
            stats.accepted += 1
    # A row goes on from its last token unless that ended it (a draft shorter than the token
    # limit without an end-of-sequence token, fully accepted, goes on too).
    return last, ~torch.isin(last, eos)
