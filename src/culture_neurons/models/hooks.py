"""Scoped forward hooks on decoder `act_fn` modules: recording statistics and keep-mask ablation.

Each intervention is a context manager over `(module, hook)` pairs, in the spirit of
TransformerLens' `run_with_hooks`: hooks exist only inside the `with` block and are removed on
exit, exceptions included; nothing is stored on the modules or in globals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

ForwardHook = Callable[[nn.Module, tuple[Any, ...], Any], Any]


@contextmanager
def hooks_attached(
    pairs: Sequence[tuple[nn.Module, Callable[..., Any]]], *, pre: bool = False
) -> Iterator[None]:
    """Register forward hooks (``pre``: forward pre-hooks, which may replace a module's inputs)
    for the duration of the block, removing every one of them on exit."""
    handles = []
    try:
        for module, hook in pairs:
            register = module.register_forward_pre_hook if pre else module.register_forward_hook
            handles.append(register(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class ActivationStats:
    """Per-row activation statistics of one batch, on the host.

    fire_count[b, l, n]: valid prompt tokens of row b where act_fn output (layer l, neuron n) > 0.
    pos_sum[b, l, n]: sum of those positive outputs, in float32.
    tokens[b]: valid prompt tokens of row b.
    act_sum[l, n]: sum of the outputs (any sign) over every row's valid tokens, in float64: with
    the token total it gives the mean that the mean intervention patches in.
    """

    fire_count: torch.Tensor  # [B, L, D] int32
    pos_sum: torch.Tensor  # [B, L, D] float32
    tokens: torch.Tensor  # [B] int32
    act_sum: torch.Tensor  # [L, D] float64


Reduced = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def reduce_positive(output: torch.Tensor, valid: torch.Tensor) -> Reduced:
    """Per row and neuron: valid tokens where ``output`` > 0, the sum of those outputs, and the
    sum of all valid outputs (any sign).

    output [B, T, D]; valid [B, T, 1] bool. Returns int32, float32 and float32 [B, D].
    """
    firing = (output > 0) & valid
    zero = output.new_zeros(())
    # where(), not a product: a padded position may hold NaN, and NaN * 0 is NaN.
    positive = torch.where(firing, output, zero)
    total = torch.where(valid, output, zero)
    return (
        firing.sum(dim=1, dtype=torch.int32),
        positive.sum(dim=1, dtype=torch.float32),
        total.sum(dim=1, dtype=torch.float32),
    )


def reduce_positive_rows(output: torch.Tensor, row_tokens: Sequence[torch.Tensor]) -> Reduced:
    """`reduce_positive`, one row at a time over the indices of that row's valid tokens.

    The CPU path: a row's valid activations (tokens x neurons, a few MiB) stay in cache through
    the compare and both sums, where the batched form streams the whole [B, T, D] block through
    memory four times (about 6x faster at B=32, T=220, D=2048 on 2 cores).
    """
    rows, neurons = output.shape[0], output.shape[-1]
    count = torch.empty(rows, neurons, dtype=torch.int32, device=output.device)
    positive = torch.empty(rows, neurons, dtype=torch.float32, device=output.device)
    total = torch.empty(rows, neurons, dtype=torch.float32, device=output.device)
    for row, tokens in enumerate(row_tokens):
        values = output[row].index_select(0, tokens)
        torch.sum(values > 0, dim=0, dtype=torch.int32, out=count[row])
        torch.sum(values.clamp_min(0), dim=0, dtype=torch.float32, out=positive[row])
        torch.sum(values, dim=0, dtype=torch.float32, out=total[row])
    return count, positive, total


class FirstCallFallback:
    """A `torch.compile`d function that runs eager where compilation fails.

    torch.compile returns at once; the compiler (Dynamo, Inductor, Triton, a C compiler) only
    runs at the first call, inside the recording hook. A failure of that first call (no Triton,
    no working compiler on the node) switches to the eager function for good, with one warning,
    and answers that call eagerly: the results are the same, only slower. Once a call has
    succeeded, errors are real and propagate.
    """

    def __init__(self, compiled: Callable[..., Any], eager: Callable[..., Any]) -> None:
        self._compiled = compiled
        self._eager = eager
        self._first = True
        self.fell_back = False

    def __call__(self, *args: Any) -> Any:
        if not self._first:
            return (self._eager if self.fell_back else self._compiled)(*args)
        try:
            result = self._compiled(*args)
        except Exception as error:  # any compiler failure; a real error recurs eagerly below
            log.warning(
                "recording runs eager: torch.compile failed at its first call (%s: %s)",
                type(error).__name__, " ".join(str(error).split())[:300],
            )  # fmt: skip
            self.fell_back = True
            result = self._eager(*args)
        self._first = False
        return result


def compiled_or_eager(function: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(function, dynamic=True)``, falling back to ``function`` itself where
    compilation is unavailable, when compiling or at the first compiled call."""
    try:
        compiled = torch.compile(function, dynamic=True)
    except Exception as error:  # no Triton, unsupported platform: stay correct, only slower
        log.warning("recording runs eager (torch.compile unavailable: %s)", error)
        return function
    return FirstCallFallback(compiled, function)


_compiled_reduce: Callable[..., Reduced] | None = None


def fused_reduce(output: torch.Tensor) -> Callable[..., Reduced]:
    """`reduce_positive`, compiled into one pass over the activations on CUDA.

    Eager, the reduction reads the [B, T, D] activations several times; Inductor fuses the
    compare, the selects and the three sums into one kernel. Where compilation is unavailable the
    eager function runs (same result, see `compiled_or_eager`). The CPU takes
    `reduce_positive_rows` instead (see `ActivationRecorder`).
    """
    global _compiled_reduce
    if output.device.type != "cuda":
        return reduce_positive
    if _compiled_reduce is None:
        _compiled_reduce = compiled_or_eager(reduce_positive)
    return _compiled_reduce


class ActivationRecorder:
    """Reduces each decoder layer's prefill act_fn output over valid tokens, on the device.

    The hook keeps one `[B, D]` count and sum per layer in preallocated `[B, L, D]` buffers on the
    mask's device; nothing of size tokens x neurons outlives a hook call. Only the first forward of
    each layer (the prefill, whose length is the mask's) is recorded: the mask describes the prompt,
    and the decode steps of `generate()` that follow are ignored.
    """

    def __init__(self, act_fn_modules: Sequence[nn.Module], valid_mask: torch.Tensor) -> None:
        if valid_mask.dim() != 2:
            raise ValueError(
                f"valid_mask must be [batch, tokens], got shape {tuple(valid_mask.shape)}"
            )
        if not act_fn_modules:
            raise ValueError("no act_fn modules to record")
        self.modules = list(act_fn_modules)
        self.valid_mask = valid_mask.bool()
        self._masks: dict[torch.device, torch.Tensor] = {}
        self._row_tokens: dict[torch.device, list[torch.Tensor]] = {}
        self._fire: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._act_sum: torch.Tensor | None = None
        self._recorded = [False] * len(self.modules)
        self._stats: ActivationStats | None = None

    def hooks(self) -> list[tuple[nn.Module, ForwardHook]]:
        return [(module, self._make_hook(layer)) for layer, module in enumerate(self.modules)]

    def _mask_on(self, device: torch.device) -> torch.Tensor:
        # Layers may sit on different GPUs (device_map="auto"): one copy of the mask per device.
        if device not in self._masks:
            self._masks[device] = self.valid_mask.to(device).unsqueeze(-1)
        return self._masks[device]

    def _reduce(self, output: torch.Tensor) -> Reduced:
        if output.device.type == "cuda":
            return fused_reduce(output)(output, self._mask_on(output.device))
        if output.device not in self._row_tokens:
            self._row_tokens[output.device] = [
                row.nonzero().squeeze(1).to(output.device) for row in self.valid_mask
            ]
        return reduce_positive_rows(output, self._row_tokens[output.device])

    def _make_hook(self, layer: int) -> ForwardHook:
        @torch.no_grad()  # the statistics must not keep an autograd graph of the forward alive
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            batch, length = self.valid_mask.shape
            if self._recorded[layer]:
                if output.shape[1] == length:
                    raise RuntimeError(
                        f"layer {layer} ran a second full-length forward inside one recording "
                        "block; record one batch per block"
                    )
                return None  # a decode step of generate()
            if output.dim() != 3 or tuple(output.shape[:2]) != (batch, length):
                raise ValueError(
                    f"layer {layer}: act_fn output of shape {tuple(output.shape)} does not match "
                    f"the valid mask [{batch}, {length}]; the first forward must be the prefill"
                )
            if self._fire is None:
                shape = (batch, len(self.modules), output.shape[-1])
                device = self.valid_mask.device
                self._fire = torch.zeros(shape, dtype=torch.int32, device=device)
                self._sum = torch.zeros(shape, dtype=torch.float32, device=device)
                self._act_sum = torch.zeros(shape[1:], dtype=torch.float64, device=device)
            count, positive, total = self._reduce(output)
            self._fire[:, layer] = count
            self._sum[:, layer] = positive
            self._act_sum[layer] = total.sum(dim=0, dtype=torch.float64)
            self._recorded[layer] = True
            return None

        return hook

    def finalize(self) -> ActivationStats:
        missing = [layer for layer, done in enumerate(self._recorded) if not done]
        if missing:
            raise RuntimeError(f"no prefill forward was recorded for decoder layers {missing}")
        assert self._fire is not None and self._sum is not None and self._act_sum is not None
        self._stats = ActivationStats(
            fire_count=self._fire.cpu(),
            pos_sum=self._sum.cpu(),
            tokens=self.valid_mask.sum(dim=1, dtype=torch.int32).cpu(),
            act_sum=self._act_sum.cpu(),
        )
        self._fire = self._sum = self._act_sum = None
        self._masks.clear()
        self._row_tokens.clear()
        return self._stats

    @property
    def stats(self) -> ActivationStats:
        if self._stats is None:
            raise RuntimeError("statistics are available once the recording block has exited")
        return self._stats

    @property
    def fire_count(self) -> torch.Tensor:
        return self.stats.fire_count

    @property
    def pos_sum(self) -> torch.Tensor:
        return self.stats.pos_sum

    @property
    def tokens(self) -> torch.Tensor:
        return self.stats.tokens

    @property
    def act_sum(self) -> torch.Tensor:
        return self.stats.act_sum


@contextmanager
def record_activation_stats(
    act_fn_modules: Sequence[nn.Module], valid_mask: torch.Tensor
) -> Iterator[ActivationRecorder]:
    """Record per-row firing counts and positive sums of the prefill inside the block.

    Usage::

        with record_activation_stats(adapter.act_fn_modules(), mask) as rec:
            adapter.generate(batch)
        rec.fire_count  # [B, L, D] int32 on the host, once the block has exited
    """
    recorder = ActivationRecorder(act_fn_modules, valid_mask)
    with hooks_attached(recorder.hooks()):
        yield recorder
    recorder.finalize()


class KeepMasks:
    """Applies each row's intervention to each layer's act_fn output at every forward:
    ``output * factor[m] + offset[m]`` for the row's bank ``m``.

    ``keep`` (the factor bank) is ``[M, L, D]``: 1 leaves a neuron as it is, 0 deactivates it
    (the paper's keep mask), k scales it. ``offset`` (``[M, L, D]`` or None for all zero) adds a
    constant, e.g. the identification mean for mean-patching (factor 0, offset the mean). Each
    batch row picks its bank by ``row_mask_index``, so one batch mixes masks and kinds.
    """

    def __init__(
        self,
        act_fn_modules: Sequence[nn.Module],
        keep: torch.Tensor,
        row_mask_index: torch.Tensor | None = None,
        offset: torch.Tensor | None = None,
    ) -> None:
        self.modules = list(act_fn_modules)
        if keep.dim() != 3 or keep.shape[1] != len(self.modules):
            raise ValueError(
                f"keep must be [masks, layers={len(self.modules)}, neurons], "
                f"got {tuple(keep.shape)}"
            )
        if offset is not None and tuple(offset.shape) != tuple(keep.shape):
            raise ValueError(
                f"offset must have the factor bank's shape {tuple(keep.shape)}, "
                f"got {tuple(offset.shape)}"
            )
        if row_mask_index is None:
            if keep.shape[0] != 1:
                raise ValueError(f"{keep.shape[0]} masks given but no row_mask_index to pick them")
        else:
            row_mask_index = torch.as_tensor(row_mask_index, dtype=torch.long)
            if row_mask_index.dim() != 1:
                raise ValueError("row_mask_index must be a 1-D [batch] tensor")
            if row_mask_index.numel() and (
                int(row_mask_index.min()) < 0 or int(row_mask_index.max()) >= keep.shape[0]
            ):
                raise ValueError(f"row_mask_index out of range for {keep.shape[0]} masks")
        self.keep = keep
        self.offset = offset
        self.row_mask_index = row_mask_index
        self._rows: torch.Tensor | None = None  # the rows of the next forward; None: all
        self._factors: dict[int, torch.Tensor] = {}  # [B, 1, D] over every row given
        self._offsets: dict[int, torch.Tensor | None] = {}
        self._selected: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _per_row(self, bank: torch.Tensor, layer: int, output: torch.Tensor) -> torch.Tensor:
        per_mask = bank[:, layer].to(device=output.device, dtype=output.dtype)  # [M, D]
        if self.row_mask_index is None:
            return per_mask[0]  # [D], broadcast over rows and tokens
        return per_mask[self.row_mask_index.to(output.device)].unsqueeze(1)  # [B, 1, D]

    def _banks(self, layer: int, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Built once per layer at its first call, when the activation's device and dtype are known.
        if layer not in self._factors:
            self._factors[layer] = self._per_row(self.keep, layer, output)
            offset = None
            if self.offset is not None and bool((self.offset[:, layer] != 0).any()):
                offset = self._per_row(self.offset, layer, output)
            self._offsets[layer] = offset
        factor, offset = self._factors[layer], self._offsets[layer]
        if self._rows is None or factor.dim() != 3:
            return factor, offset
        if layer not in self._selected:
            rows = self._rows.to(factor.device)
            self._selected[layer] = (factor[rows], None if offset is None else offset[rows])
        return self._selected[layer]

    def select_rows(self, indices: torch.Tensor) -> None:
        """The next forwards see only these rows of the batch given (numbered as in
        ``row_mask_index``, not as in the previous selection): finished rows leave the batch
        during decoding."""
        self._rows = torch.as_tensor(indices, dtype=torch.long)
        self._selected = {}

    def _make_hook(self, layer: int) -> ForwardHook:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            factor, offset = self._banks(layer, output)
            if factor.dim() == 3 and output.shape[0] != factor.shape[0]:
                raise ValueError(
                    f"layer {layer}: batch of {output.shape[0]} rows but row_mask_index has "
                    f"{factor.shape[0]} (beam search or sampling several sequences changes the "
                    "batch size; use greedy decoding)"
                )
            if offset is None:
                return output * factor
            return torch.addcmul(offset, output, factor)

        return hook

    def hooks(self) -> list[tuple[nn.Module, ForwardHook]]:
        # A layer where every bank leaves every neuron as it is needs no hook at all.
        changes = (self.keep != 1).any(dim=2).any(dim=0)  # [L]
        if self.offset is not None:
            changes |= (self.offset != 0).any(dim=2).any(dim=0)
        return [
            (module, self._make_hook(layer))
            for layer, module in enumerate(self.modules)
            if bool(changes[layer])
        ]


@contextmanager
def apply_keep_masks(
    act_fn_modules: Sequence[nn.Module],
    keep: torch.Tensor,
    row_mask_index: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
) -> Iterator[KeepMasks]:
    """Intervene on neurons inside the block: act_fn output of row b becomes
    ``output * keep[m, l] + offset[m, l]`` with ``m = row_mask_index[b]``.

    keep is `[M, L, D]` with 1 = keep, 0 = deactivate (paper section 3.3) and any other value a
    scale factor; offset (same shape, None = 0) is added after scaling. row_mask_index `[B]`
    picks each row's bank, or None when M == 1 and every row uses bank 0.
    """
    masks = KeepMasks(act_fn_modules, keep, row_mask_index, offset)
    with hooks_attached(masks.hooks()):
        yield masks
