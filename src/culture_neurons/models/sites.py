"""Unit "sites": where neurons are recorded and ablated (issue 35).

- ``decoder_mlp``: the decoder MLPs' ``act_fn`` outputs, as `hooks` has always done.
- ``vision_mlp``: the vision encoder's MLP activations, over each image's patch tokens.
- ``attention_heads``: each decoder layer's attention heads, as the slices of ``o_proj``'s input.

Each site answers the same three calls: `site_shape` (what a statistics store holds),
`record_site` (per-item statistics of the prefill, an `ActivationStats`) and `intervene_site`
(per-unit factor banks, as `apply_keep_masks`). See docs/sites.md for what "fires" means and which
tokens count at each site.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from culture_neurons.errors import InputError

from .base import ModelAdapter
from .hooks import (
    ActivationRecorder,
    ActivationStats,
    ForwardHook,
    KeepMasks,
    apply_keep_masks,
    hooks_attached,
    record_activation_stats,
    reduce_positive_rows,
)
from .layers import mlp_width

DECODER_MLP, VISION_MLP, ATTENTION_HEADS = "decoder_mlp", "vision_mlp", "attention_heads"
SITES: tuple[str, ...] = (DECODER_MLP, VISION_MLP, ATTENTION_HEADS)

ForwardPreHook = Callable[[nn.Module, tuple[Any, ...]], Any]
#: Per item, the rows of the flattened ``[rows, D]`` vision activation that are its patch tokens.
RowsOf = Callable[[torch.Tensor], list[torch.Tensor]]

# Module-name fragments of an image encoder (as `layers._VISION_MARKERS`).
_VISION_MARKERS: tuple[str, ...] = ("visual", "vision", "image_tower", "img_encoder")


@dataclass(frozen=True)
class SiteShape:
    """What one site of one model holds: ``n_layers`` x ``n_units`` units."""

    site: str
    n_layers: int
    n_units: int
    statistic: str  # "fires" (act output > 0) or "l2_norm" (heads)
    layers_path: str  # dotted path of the hooked layer list, for store metadata
    in_vision_tower: bool  # runs once per image before the decoder (vision_mlp)


# ------------------------------------------------------------------------------------- structure
def _check_site(site: str) -> None:
    if site not in SITES:
        raise InputError(f"unknown unit site {site!r}; the sites are {', '.join(SITES)}")


def _vision_act(layer: nn.Module) -> nn.Module | None:
    mlp = getattr(layer, "mlp", None)
    for name in ("act_fn", "activation_fn"):  # Qwen's SwiGLU; CLIP's and SigLIP's fc1 -> fc2
        module = getattr(mlp, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def find_vision_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The vision encoder's layer list and its dotted path, found by structure: the one layer
    list inside a vision module whose layers have an MLP activation (``model.visual.blocks``,
    ``model.vision_tower.encoder.layers``, ``vision_tower.vision_model.encoder.layers``...)."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and any(marker in name.lower() for marker in _VISION_MARKERS)
        and all(_vision_act(layer) is not None for layer in module)
    ]
    if len(found) != 1:
        what = "has no vision tower" if not found else "has several vision layer lists"
        raise InputError(
            f"{type(model).__name__} {what} ({[n for n, _ in found] or 'none found'}): "
            f"the unit site {VISION_MLP!r} needs exactly one vision encoder with MLP layers"
        )
    return found[0]


def used_vision_layers(config: Any, n_layers: int) -> int:
    """How many leading vision layers feed the decoder.

    LLaVA-NeXT reads ``hidden_states[vision_feature_layer]`` (index 0: the embeddings, k: the
    output of layer k-1), so with the usual -2 the last layer's output is never used: its neurons
    could not change the answer, and ablating them would be a no-op. Qwen2.5-VL merges the last
    layer's output, so every layer counts.
    """
    selection = getattr(config, "vision_feature_layer", None)
    if selection is None:
        return n_layers
    indices = [selection] if isinstance(selection, int) else list(selection)
    used = max(index % (n_layers + 1) for index in indices)
    if used < 1:
        raise InputError(
            f"vision_feature_layer {selection!r} reads the embeddings only: no vision layer "
            f"feeds the decoder, so the unit site {VISION_MLP!r} has nothing to study"
        )
    return used


def vision_act_modules(adapter: ModelAdapter) -> list[nn.Module]:
    """The vision MLP activations of the layers whose output reaches the decoder, in order."""
    _, layers = find_vision_layers(adapter.model)
    used = used_vision_layers(adapter.model.config, len(layers))
    return [_vision_act(layer) for layer in layers[:used]]  # type: ignore[misc]


def attention_o_projs(adapter: ModelAdapter) -> tuple[list[nn.Module], int]:
    """Each decoder layer's ``self_attn.o_proj`` and the number of heads in its input."""
    modules, heads = [], set()
    for index, layer in enumerate(adapter.decoder_layers()):
        attn = getattr(layer, "self_attn", None)
        o_proj = getattr(attn, "o_proj", None)
        if not isinstance(o_proj, nn.Linear):
            raise InputError(
                f"{type(adapter.model).__name__}: {adapter.layers_path}.{index} has no "
                f"self_attn.o_proj, which the unit site {ATTENTION_HEADS!r} hooks"
            )
        modules.append(o_proj)
        heads.add(_head_count(attn, o_proj))
    if len(heads) != 1:
        raise InputError(f"decoder layers differ in attention heads {sorted(heads)}")
    return modules, heads.pop()


def _head_count(attn: nn.Module, o_proj: nn.Linear) -> int:
    # o_proj's input holds num_attention_heads slices of head_dim (also under GQA, where the keys
    # and values have fewer heads).
    config = getattr(attn, "config", None)
    head_dim = getattr(attn, "head_dim", None) or getattr(config, "head_dim", None)
    if not head_dim and config is not None:
        head_dim = config.hidden_size // config.num_attention_heads
    if not head_dim or o_proj.in_features % head_dim:
        raise InputError(
            f"cannot split o_proj's {o_proj.in_features} inputs into heads of {head_dim}"
        )
    return o_proj.in_features // head_dim


def site_shape(adapter: ModelAdapter, site: str) -> SiteShape:
    """Layers and units of ``site`` in this model; an `InputError` where the model has none."""
    _check_site(site)
    if site == DECODER_MLP:
        return SiteShape(site, adapter.n_layers, adapter.n_neurons, "fires", adapter.layers_path,
                         in_vision_tower=False)  # fmt: skip
    if site == ATTENTION_HEADS:
        modules, heads = attention_o_projs(adapter)
        return SiteShape(site, len(modules), heads, "l2_norm", adapter.layers_path,
                         in_vision_tower=False)  # fmt: skip
    path, layers = find_vision_layers(adapter.model)
    used = used_vision_layers(adapter.model.config, len(layers))
    widths = {mlp_width(layer) for layer in layers[:used]}
    if len(widths) != 1:
        raise InputError(f"vision layers differ in MLP width {sorted(widths)}")
    return SiteShape(site, used, widths.pop(), "fires", path, in_vision_tower=True)


# ---------------------------------------------------------------------- vision tokens per item
def segment_rows(counts: Sequence[int]) -> list[torch.Tensor]:
    """Consecutive blocks of ``counts`` rows: the patches of each image, concatenated in batch
    order (Qwen2.5-VL; its window reordering permutes patches within an image only)."""
    ends = torch.tensor(list(counts), dtype=torch.long).cumsum(0).tolist()
    return [torch.arange(end - count, end) for count, end in zip(counts, ends, strict=True)]


def crop_rows(crops: Sequence[int], positions: int, skip_first: bool) -> list[torch.Tensor]:
    """Rows of a flattened ``[crops, positions, D]`` activation per image, every crop's positions
    but the first where it is a class token (CLIP's CLS, which is no patch of the image)."""
    first = int(skip_first)
    rows, start = [], 0
    for count in crops:
        crop_starts = torch.arange(start, start + count) * positions
        rows.append((crop_starts[:, None] + torch.arange(first, positions)).reshape(-1))
        start += count
    return rows


def _has_class_token(model: nn.Module) -> bool:
    return any(
        isinstance(getattr(module, "class_embedding", None), nn.Parameter)
        for name, module in model.named_modules()
        if any(marker in name.lower() for marker in _VISION_MARKERS)
    )


def vision_rows(adapter: ModelAdapter, batch: Mapping[str, Any]) -> RowsOf:
    """A function of a vision activation giving each item's patch rows of it (flattened)."""
    config = adapter.model.config
    items = int(batch["input_ids"].shape[0])
    if "image_grid_thw" in batch:
        grid = batch["image_grid_thw"]
        if grid.shape[0] != items:
            raise ValueError(f"{grid.shape[0]} images for {items} items: one image per item")
        counts = grid.prod(-1).tolist()
        return lambda output: segment_rows(counts)
    if "image_sizes" in batch and getattr(config, "image_grid_pinpoints", None) is not None:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        sizes = batch["image_sizes"]
        if sizes.shape[0] != items:
            raise ValueError(f"{sizes.shape[0]} images for {items} items: one image per item")
        # The crops get_image_features cuts each image into (anyres grid plus the base crop).
        crops = [
            image_size_to_num_patches(
                size, config.image_grid_pinpoints, config.vision_config.image_size
            )
            for size in sizes
        ]
        cls = _has_class_token(adapter.model)
        return lambda output: crop_rows(crops, output.shape[1], cls)
    raise InputError(
        f"cannot map the vision tokens of {type(adapter.model).__name__} to items: the batch has "
        "neither image_grid_thw (Qwen2.5-VL) nor image_sizes with image_grid_pinpoints (LLaVA-NeXT)"
    )


class VisionRecorder:
    """Per-item statistics of the vision MLP activations of one batch's single vision forward.

    The vision tower runs once per batch, on every image, before the decoder; a second forward in
    one block would be another batch's images, so it is an error, as for the decoder.
    """

    def __init__(self, modules: Sequence[nn.Module], rows_of: RowsOf, items: int) -> None:
        if not modules:
            raise ValueError("no vision modules to record")
        self.modules = list(modules)
        self.rows_of = rows_of
        self.items = items
        self._rows: list[torch.Tensor] | None = None
        self._fire: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._act_sum: torch.Tensor | None = None
        self._recorded = [False] * len(self.modules)
        self._stats: ActivationStats | None = None

    def hooks(self) -> list[tuple[nn.Module, ForwardHook]]:
        return [(module, self._make_hook(layer)) for layer, module in enumerate(self.modules)]

    def _item_rows(self, output: torch.Tensor) -> list[torch.Tensor]:
        if self._rows is None:
            rows = self.rows_of(output)
            total = output.reshape(-1, output.shape[-1]).shape[0]
            if sum(len(r) for r in rows) > total or any(len(r) and int(r.max()) >= total
                                                        for r in rows):  # fmt: skip
                raise ValueError(
                    f"vision activation of shape {tuple(output.shape)} does not hold the "
                    f"{sum(len(r) for r in rows)} patch tokens the batch's images have"
                )
            self._rows = [r.to(output.device) for r in rows]
        return self._rows

    def _make_hook(self, layer: int) -> ForwardHook:
        @torch.no_grad()
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            if self._recorded[layer]:
                raise RuntimeError(
                    f"vision layer {layer} ran a second forward inside one recording block; "
                    "record one batch per block"
                )
            flat = output.reshape(-1, output.shape[-1])
            rows = self._item_rows(output)
            # Every item reads its own rows of the one flat activation (expand copies nothing).
            count, positive, total = reduce_positive_rows(flat.expand(self.items, -1, -1), rows)
            if self._fire is None:
                shape = (self.items, len(self.modules), flat.shape[-1])
                self._fire = torch.zeros(shape, dtype=torch.int32, device=flat.device)
                self._sum = torch.zeros(shape, dtype=torch.float32, device=flat.device)
                self._act_sum = torch.zeros(shape[1:], dtype=torch.float64, device=flat.device)
            self._fire[:, layer] = count.to(self._fire.device)
            self._sum[:, layer] = positive.to(self._sum.device)
            self._act_sum[layer] = total.sum(dim=0, dtype=torch.float64).to(self._act_sum.device)
            self._recorded[layer] = True

        return hook

    def finalize(self) -> ActivationStats:
        missing = [layer for layer, done in enumerate(self._recorded) if not done]
        if missing:
            raise RuntimeError(
                f"no vision forward was recorded for vision layers {missing} (a batch without "
                "images does not run the vision tower)"
            )
        assert self._fire is not None and self._sum is not None and self._act_sum is not None
        assert self._rows is not None
        self._stats = ActivationStats(
            fire_count=self._fire.cpu(),
            pos_sum=self._sum.cpu(),
            tokens=torch.tensor([len(r) for r in self._rows], dtype=torch.int32),
            act_sum=self._act_sum.cpu(),
        )
        self._fire = self._sum = self._act_sum = None
        return self._stats

    @property
    def stats(self) -> ActivationStats:
        if self._stats is None:
            raise RuntimeError("statistics are available once the recording block has exited")
        return self._stats


# ---------------------------------------------------------------------------- attention heads
def head_norms(o_proj_input: torch.Tensor, heads: int) -> torch.Tensor:
    """``[..., H * head_dim]`` -> ``[..., H]``: each head's output L2 norm, in float32."""
    split = o_proj_input.unflatten(-1, (heads, -1))
    return torch.linalg.vector_norm(split, dim=-1, dtype=torch.float32)


class HeadNormRecorder(ActivationRecorder):
    """`ActivationRecorder` over each head's output norm at o_proj's input: ``fire_count`` counts
    valid tokens with a non-zero norm, ``pos_sum`` and ``act_sum`` sum the norms."""

    def __init__(self, o_projs: Sequence[nn.Module], valid_mask: torch.Tensor, heads: int) -> None:
        super().__init__(o_projs, valid_mask)
        self.heads = heads

    def _make_hook(self, layer: int) -> ForwardHook:
        record = super()._make_hook(layer)

        @torch.no_grad()
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            return record(module, args, head_norms(args[0], self.heads))

        return hook


class HeadMasks(KeepMasks):
    """`KeepMasks` over heads: the factor of head h scales columns ``h*head_dim:(h+1)*head_dim``
    of o_proj's input (a forward pre-hook), row by row as ``row_mask_index`` says."""

    def __init__(
        self,
        o_projs: Sequence[nn.Module],
        keep: torch.Tensor,
        heads: int,
        row_mask_index: torch.Tensor | None = None,
    ) -> None:
        super().__init__(o_projs, keep, row_mask_index)
        self.heads = heads

    def _make_hook(self, layer: int) -> ForwardPreHook:  # type: ignore[override]
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            inputs = args[0]
            factor, _ = self._banks(layer, inputs)  # [H] or [B, 1, H]
            if factor.dim() == 3 and inputs.shape[0] != factor.shape[0]:
                raise ValueError(
                    f"layer {layer}: batch of {inputs.shape[0]} rows but row_mask_index has "
                    f"{factor.shape[0]} (beam search or sampling several sequences changes the "
                    "batch size; use greedy decoding)"
                )
            scaled = inputs.unflatten(-1, (self.heads, -1)) * factor.unsqueeze(-1)
            return (scaled.flatten(-2), *args[1:])

        return pre_hook


# ----------------------------------------------------------------------------------- the API
@contextmanager
def record_site(adapter: ModelAdapter, site: str, batch: Mapping[str, Any]) -> Iterator[Any]:
    """Record per-item statistics of ``site`` over the prefill of ``batch`` inside the block;
    ``recorder.stats`` (an `ActivationStats` ``[B, L, units]``) once the block has exited.

    decoder_mlp and attention_heads count the valid prompt tokens (`valid_token_mask`);
    vision_mlp counts each item's image patch tokens over all its crops.
    """
    _check_site(site)
    if site == DECODER_MLP:
        with record_activation_stats(
            adapter.act_fn_modules(), adapter.valid_token_mask(batch)
        ) as recorder:
            yield recorder
        return
    if site == ATTENTION_HEADS:
        modules, heads = attention_o_projs(adapter)
        recorder = HeadNormRecorder(modules, adapter.valid_token_mask(batch), heads)
    else:
        items = int(batch["input_ids"].shape[0])
        recorder = VisionRecorder(vision_act_modules(adapter), vision_rows(adapter, batch), items)
    with hooks_attached(recorder.hooks()):
        yield recorder
    recorder.finalize()


def _check_bank(shape: SiteShape, keep: torch.Tensor) -> None:
    expected = (shape.n_layers, shape.n_units)
    if keep.dim() != 3 or tuple(keep.shape[1:]) != expected:
        raise ValueError(
            f"{shape.site}: keep must be [masks, layers={expected[0]}, units={expected[1]}], "
            f"got {tuple(keep.shape)}"
        )


class _NoRows:
    """The vision intervention's handle: images are encoded once per batch, so finished rows
    leaving the decoder's batch change nothing."""

    def __init__(self, masks: KeepMasks) -> None:
        self.masks = masks

    def select_rows(self, indices: torch.Tensor) -> None:
        return None


@contextmanager
def intervene_site(
    adapter: ModelAdapter,
    site: str,
    keep: torch.Tensor,
    row_mask_index: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
) -> Iterator[object]:
    """Scale (and shift) ``site``'s units inside the block: bank ``m = row_mask_index[b]`` of
    ``keep`` ``[M, L, units]`` (1 keeps a unit, 0 silences it, k scales it) and of ``offset``
    (same shape, None = 0). Yields a handle with ``select_rows(indices)``.

    vision_mlp takes one bank for every image of the batch (``M == 1``, no row_mask_index);
    attention_heads takes no offset (a head's mean output vector is not recorded).
    """
    shape = site_shape(adapter, site)
    _check_bank(shape, keep)
    if site == DECODER_MLP:
        with apply_keep_masks(adapter.act_fn_modules(), keep, row_mask_index, offset) as masks:
            yield masks
        return
    if site == ATTENTION_HEADS:
        if offset is not None:
            raise ValueError(
                f"{ATTENTION_HEADS}: an offset (mean-patching) is not supported for heads; "
                "a head's mean output vector is not recorded"
            )
        modules, heads = attention_o_projs(adapter)
        masks = HeadMasks(modules, keep, heads, row_mask_index)
        with hooks_attached(masks.hooks(), pre=True):
            yield masks
        return
    if row_mask_index is not None or keep.shape[0] != 1:
        raise ValueError(
            f"{VISION_MLP}: the vision tower encodes every image of a batch in one forward, so one "
            f"bank applies to the whole batch: give keep [1, L, D] and no row_mask_index (got "
            f"{keep.shape[0]} banks{'' if row_mask_index is None else ' and a row_mask_index'})"
        )
    with apply_keep_masks(vision_act_modules(adapter), keep, None, offset) as masks:
        yield _NoRows(masks)
