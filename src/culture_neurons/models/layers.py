"""Locate a model's decoder layers and their MLP `act_fn` modules (never the vision tower's)."""

from __future__ import annotations

from torch import nn

# Where the language decoder's layers live, newest layout first. transformers >= 4.52 nests the text
# model under `model.language_model` for VLMs; older LLaVA put it at `language_model.model`, older
# Qwen2-VL and every causal LM at `model`. The first path that resolves to decoder layers wins.
DECODER_LAYER_PATHS: tuple[str, ...] = (
    "model.language_model.layers",
    "model.language_model.model.layers",
    "language_model.model.layers",
    "language_model.layers",
    "model.text_model.layers",
    "model.layers",
)

# Module names that belong to an image encoder; their MLPs (Qwen2.5-VL's
# `visual.blocks.*.mlp.act_fn`, CLIP's `activation_fn`) must never be taken for decoder neurons.
_VISION_MARKERS: tuple[str, ...] = ("visual", "vision", "image_tower", "img_encoder")


def _resolve(root: nn.Module, path: str) -> object | None:
    obj: object = root
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            return None
    return obj


def _is_decoder_stack(obj: object) -> bool:
    return (
        isinstance(obj, nn.ModuleList)
        and len(obj) > 0
        and all(
            isinstance(getattr(getattr(layer, "mlp", None), "act_fn", None), nn.Module)
            for layer in obj
        )
    )


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The language decoder's layer list and its dotted path; an error when none or several."""
    for path in DECODER_LAYER_PATHS:
        obj = _resolve(model, path)
        if _is_decoder_stack(obj):
            return path, obj  # type: ignore[return-value]
    # Unknown layout: accept a single layer list with `mlp.act_fn` outside any vision module.
    found = [
        (name, module)
        for name, module in model.named_modules()
        if _is_decoder_stack(module)
        and not any(marker in name.lower() for marker in _VISION_MARKERS)
    ]
    if len(found) == 1:
        return found[0]
    names = [name for name, _ in found]
    raise ValueError(
        f"cannot locate the decoder layers of {type(model).__name__}: tried "
        f"{', '.join(DECODER_LAYER_PATHS)}; layer lists with mlp.act_fn: {names or 'none'}"
    )


def decoder_act_fns(layers: nn.ModuleList, path: str = "layers") -> list[nn.Module]:
    """`layers[i].mlp.act_fn` in layer order, each a distinct module so that a hook fires once."""
    modules = [layer.mlp.act_fn for layer in layers]
    seen: dict[int, int] = {}
    for index, module in enumerate(modules):
        first = seen.setdefault(id(module), index)
        if first != index:
            raise ValueError(
                f"{path}.{index}.mlp.act_fn is the same module as {path}.{first}.mlp.act_fn; "
                "a forward hook on it would fire once per sharing layer and mix their activations. "
                "Give each layer its own activation module before hooking."
            )
    return modules


def mlp_width(layer: nn.Module) -> int:
    """Number of MLP neurons (intermediate size) of one decoder layer."""
    mlp = layer.mlp
    for name in ("gate_proj", "up_proj", "fc1"):
        proj = getattr(mlp, name, None)
        if isinstance(proj, nn.Linear):
            return proj.out_features
    size = getattr(mlp, "intermediate_size", None)
    if isinstance(size, int):
        return size
    raise ValueError(f"cannot tell the intermediate size of {type(mlp).__name__}")
