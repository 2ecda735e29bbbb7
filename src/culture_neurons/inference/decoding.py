"""Greedy decoding driven directly over the decoder stack: the fast path of the engine.

Masked evaluation answers every item under many masks, and the masks act on the decoder MLPs
only. So the part of the forward that no mask touches (processor, vision encoder, merging image
features into the text embeddings, position ids) runs once per item: `capture_prompts` lets the
model's own `generate()` prepare the first decoder call and stops it there, keeping exactly what
the decoder stack would have received. `greedy_decode` then runs the decoder for any number of
rows (item, mask) built from those captures as one `DecodeBatch`: left-padded rows, one prefill,
one token per step, and a row leaves the batch (and the KV cache) at its end-of-sequence token.
The result is the same token sequence as `model.generate(do_sample=False)` on the item alone;
tests compare the two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from culture_neurons.errors import InputError
from culture_neurons.inference.drafts import DraftFeed, verify
from culture_neurons.inference.kv_cache import reserved_cache
from culture_neurons.models.base import ModelAdapter
from culture_neurons.models.compat import OutOfMemoryError, cache_argument

__all__ = ["OutOfMemoryError"]  # re-exported: callers catch it where they decode

log = logging.getLogger(__name__)


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


class DecodeBatch:
    """Rows decoded together, and all that changes while they are: the KV cache (with room for
    ``max_new_tokens`` steps, see `culture_neurons.inference.kv_cache`), which of the prompts
    are still in it (``rows``, in the cache's row order), each row's attention mask and last
    position, the tokens the next step feeds, the repetition penalty's seen tokens, every row's
    ``generated`` tokens and the ``stats``.

    `prefill` runs the prompts (and drafts) in one decoder call; then `drop_finished` and `step`
    alternate until no row is left. ``select_rows(rows)`` is told which of the prompts the next
    decoder calls see whenever finished rows leave, so per-row interventions can follow.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        prompts: Sequence[Prompt],
        *,
        settings: GreedySettings,
        max_new_tokens: int,
        stats: DecodeStats,
        select_rows: RowHook | None = None,
    ) -> None:
        self.adapter = adapter
        self.prompts = prompts
        self.max_new_tokens = max_new_tokens
        self.stats = stats
        self.select_rows = select_rows
        self.decoder = decoder_stack(adapter)
        self.embed = adapter.model.get_input_embeddings()
        self.head = adapter.model.get_output_embeddings()
        self.device = prompts[0].embeds.device
        self.penalty = _Penalty(prompts, settings, self.head.out_features)
        self.eos = torch.tensor(settings.eos_token_ids, dtype=torch.long, device=self.device)
        self.generated: list[list[int]] = [[] for _ in prompts]
        self.cache = reserved_cache(adapter.model.config, room=max_new_tokens)
        self._cache_kwargs = cache_argument(self.decoder, self.cache)  # one cache object throughout
        self.rows = torch.arange(len(prompts), device=self.device)
        # Set by `prefill`: until then no row goes on.
        self.going = torch.zeros(len(prompts), dtype=torch.bool, device=self.device)
        self.next_tokens = self.attention = self.last_position = torch.empty(0, dtype=torch.long)

    def _choose(self, states: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Greedy tokens of ``rows`` from their last hidden ``states``, penalised, then seen."""
        # .to(device): with a model spread over GPUs the head may sit on another one.
        logits = self.head(states).float().to(self.device)
        tokens = self.penalty.apply(logits, rows).argmax(dim=-1)
        self.penalty.add(rows, tokens)
        return tokens

    def _forward(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One decoder call over the rows in the cache; their last hidden states [rows, t, H]."""
        out = self.decoder(
            inputs_embeds=embeds,
            attention_mask=self.attention,
            position_ids=positions[0] if positions.shape[0] == 1 else positions,
            use_cache=True,
            **self._cache_kwargs,
        )
        self.stats.forwards += 1
        self.stats.row_forwards += len(self.rows)
        return out.last_hidden_state

    def _went(self, next_tokens: torch.Tensor) -> None:
        """The rows' new last tokens: each goes on unless it ended its row or the row is full."""
        self.next_tokens = next_tokens
        self.going = ~torch.isin(next_tokens, self.eos)
        self.going &= torch.tensor(
            [len(self.generated[r]) < self.max_new_tokens for r in self.rows.tolist()],
            device=next_tokens.device,
        )

    def prefill(self, drafts: Sequence[Sequence[int]] | None = None) -> None:
        """One decoder call over every row (left-padded prompts, drafts appended), and each
        row's first token, or its checked draft (`culture_neurons.inference.drafts`)."""
        prompts, device = self.prompts, self.device
        feed = DraftFeed.of(drafts, len(prompts), self.max_new_tokens)
        lengths = [p.length + len(f) for p, f in zip(prompts, feed.fed, strict=True)]
        rows, width = len(prompts), max(lengths)
        embeds = prompts[0].embeds.new_zeros(rows, width, prompts[0].embeds.shape[-1])
        self.attention = torch.zeros(rows, width, dtype=torch.long, device=device)
        n_components = prompts[0].positions.shape[0]
        positions = torch.ones(n_components, rows, width, dtype=torch.long, device=device)
        for row, (prompt, tokens) in enumerate(zip(prompts, feed.fed, strict=True)):
            start = width - lengths[row]  # left padding: the last token sits at the end
            end = start + prompt.length
            embeds[row, start:end] = prompt.embeds
            self.attention[row, start:] = 1
            positions[:, row, start:end] = prompt.positions
            if tokens:
                ids = torch.tensor(tokens, dtype=torch.long, device=device)
                embeds[row, end:] = self.embed(ids).to(embeds.dtype)
                steps = torch.arange(1, len(tokens) + 1, device=device)
                positions[:, row, end:] = prompt.positions[:, -1:] + steps
        states = self._forward(embeds, positions)
        self.stats.rows += rows
        self.last_position = positions[:, :, -1].clone()
        if drafts is None:
            first = self._choose(states[:, -1], self.rows)
            for row, token in enumerate(first.tolist()):
                self.generated[row].append(token)
            self._went(first)
        else:
            self._went(self.verify(drafts, feed, states))

    def verify(
        self, drafts: Sequence[Sequence[int]], feed: DraftFeed, states: torch.Tensor
    ) -> torch.Tensor:
        """Keeps each row's checked draft tokens (`culture_neurons.inference.drafts.verify`),
        masks the rejected draft positions out of its attention and moves its last position
        back to its last accepted token; returns each row's last token."""
        self.stats.drafted += sum(1 for n in feed.checked if n > 0)
        verdict = verify(drafts, feed, states, self._choose)
        self.stats.accepted += verdict.accepted
        width = self.attention.shape[1]
        for row, (tokens, rejected) in enumerate(zip(verdict.tokens, verdict.rejected,
                                                     strict=True)):  # fmt: skip
            self.generated[row] += tokens
            if rejected > 0:
                self.attention[row, width - rejected :] = 0
                self.last_position[:, row] -= rejected
        # A row goes on from its last token unless that ended it (a draft shorter than the token
        # limit without an end-of-sequence token, fully accepted, goes on too).
        return torch.tensor([t[-1] for t in verdict.tokens], dtype=torch.long, device=self.device)

    def drop_finished(self) -> bool:
        """Takes the finished rows out of the batch and its cache; False once none is left."""
        if bool(self.going.all()):
            return True
        if not bool(self.going.any()):
            return False
        keep = self.going.nonzero().squeeze(1)
        self.cache.batch_select_indices(keep)
        self.rows, self.next_tokens = self.rows[keep], self.next_tokens[keep]
        self.attention, self.last_position = self.attention[keep], self.last_position[:, keep]
        if self.select_rows is not None:
            self.select_rows(self.rows)
        return True

    def step(self) -> None:
        """One new token for every row in the batch."""
        ones = self.attention.new_ones(len(self.rows), 1)
        self.attention = torch.cat([self.attention, ones], dim=1)
        self.last_position = self.last_position + 1
        states = self._forward(
            self.embed(self.next_tokens).unsqueeze(1), self.last_position.unsqueeze(-1)
        )
        tokens = self._choose(states[:, -1], self.rows)
        for row, token in zip(self.rows.tolist(), tokens.tolist(), strict=True):
            self.generated[row].append(token)
        self._went(tokens)


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
    ``drafts`` (one token list per row, e.g. the item's unmasked answer) are checked instead of
    decoded (`culture_neurons.inference.drafts`); the tokens are those of step-by-step greedy
    decoding either way.
    """
    if not prompts:
        return []
    if drafts is not None and len(drafts) != len(prompts):
        raise ValueError(f"{len(drafts)} drafts for {len(prompts)} prompts")
    batch = DecodeBatch(
        adapter,
        prompts,
        settings=settings,
        max_new_tokens=max_new_tokens,
        stats=stats if stats is not None else DecodeStats(),
        select_rows=select_rows,
    )
    batch.prefill(drafts)
    while batch.drop_finished():
        batch.step()
    return batch.generated
