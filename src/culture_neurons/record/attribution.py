"""Gradient x activation attribution of decoder-MLP neurons (CULNIG's score, on `act_fn`).

For one item, teacher-forced on the text of its correct option as the assistant's reply:

- ``p(gold)`` is the geometric mean, over the reply's tokens, of the probability the model gives
  each gold token after the prompt and the gold tokens before it:
  ``exp(mean_t log p(g_t | prompt, g_<t))``. The paper's answers are one letter (one token, so
  this is its probability); ours are the option's full text, and the mean keeps long and short
  options on one scale.
- the score of neuron ``(l, n)`` is ``p(gold) * max_t a_t * dp(gold)/da_t`` over the positions
  ``t`` whose activation can change a gold token's prediction: every non-padding position before
  the reply's last token (the prompt's, image positions included, and the reply's own). ``a_t``
  is the output of the layer's ``act_fn`` at ``t`` - the neuron that the masks deactivate.

CULNIG's public code (ynklab/CULNIG) hooks the gate projection's output (before the activation
function) instead; on a SwiGLU MLP ``act_fn(gate) * up`` the two differ by the chain rule's
``act_fn'(gate)`` and by where a zero lands: zeroing ``act_fn``'s output removes the neuron
exactly, zeroing the gate projection's output leaves ``act_fn(0) * up`` (0 for SiLU).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from culture_neurons.models.base import ModelAdapter
from culture_neurons.models.hooks import hooks_attached


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """No parameter gradients inside the block (only the activations' are needed): autograd then
    keeps no input saved for a weight's gradient. Restores each parameter's flag on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def gold_log_probs(
    logits: torch.Tensor, input_ids: torch.Tensor, n_gold: torch.Tensor
) -> torch.Tensor:
    """Mean log-probability per row of its last ``n_gold[b]`` tokens (left-padded rows: the
    reply ends every row), each predicted from the position before it: ``[B]`` float32.
    ``logits`` may hold only the last ``K > max(n_gold)`` positions (``logits_to_keep``)."""
    width = logits.shape[1] - 1
    if width < int(n_gold.max()):
        raise ValueError(f"logits of {width + 1} positions cannot score {int(n_gold.max())} tokens")
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = input_ids[:, input_ids.shape[1] - width :]
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, width]
    positions = torch.arange(width, device=picked.device)
    n_gold = n_gold.to(picked.device)
    is_gold = positions.unsqueeze(0) >= (width - n_gold).unsqueeze(1)
    return (picked * is_gold).sum(dim=1) / n_gold


def _tail_logits(model: nn.Module, batch: Any, keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions only (the model's lm head skips the others, which
    at a 150k vocabulary would dominate the pass's memory); all of them where the model's
    forward has no ``logits_to_keep``."""
    try:
        return model(**batch, use_cache=False, logits_to_keep=keep).logits
    except TypeError:
        return model(**batch, use_cache=False).logits


def attribution_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: non-padding positions before each row's last token."""
    positions = attention_mask.bool().clone()
    positions[:, -1] = False
    return positions


def attribution_scores(
    adapter: ModelAdapter, items: Sequence[dict[str, Any]], replies: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[B, L, D]`` float32 and ``p(gold)`` ``[B]`` of one batch (see the module text),
    on the host. One forward and one backward pass; parameters get no gradient."""
    batch, n_gold = adapter.build_teacher_forced_batch(items, replies)
    acts: dict[int, torch.Tensor] = {}

    def capture(layer: int):
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            if not output.requires_grad:  # nothing upstream needs a gradient: make it a leaf
                output.requires_grad_(True)
            acts[layer] = output

        return hook

    pairs = [(module, capture(i)) for i, module in enumerate(adapter.act_fn_modules())]
    model = adapter.model
    with torch.enable_grad(), frozen_parameters(model), hooks_attached(pairs):
        logits = _tail_logits(model, batch, int(n_gold.max()) + 1)
        p_gold = gold_log_probs(logits, batch["input_ids"], n_gold).exp()
        layers = sorted(acts)
        if layers != list(range(adapter.n_layers)):
            raise RuntimeError(f"act_fn hooks fired for layers {layers}, not {adapter.n_layers}")
        grads = torch.autograd.grad(p_gold.sum(), [acts[i] for i in layers])
    keep = attribution_positions(batch["attention_mask"]).unsqueeze(-1)  # [B, T, 1]
    scores = []
    for i in layers:
        product = acts[i].detach().float() * grads[i].float()
        product = product.masked_fill(~keep, float("-inf"))
        scores.append(product.amax(dim=1))  # [B, D]
    p = p_gold.detach().float()
    stacked = torch.stack(scores, dim=1) * p[:, None, None]
    return stacked.cpu(), p.cpu()
