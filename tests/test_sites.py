"""Unit sites (issue 35): the vision MLP and the attention heads, beside the decoder MLP, on the
tiny checkpoints of every family (and a LLaVA-NeXT with a SigLIP tower)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from torch import nn
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from culture_neurons.errors import InputError
from culture_neurons.models import ModelAdapter, apply_keep_masks, record_activation_stats
from culture_neurons.models.hooks import ActivationStats, ForwardHook, hooks_attached
from culture_neurons.models.sites import (
    ATTENTION_HEADS,
    DECODER_MLP,
    SITES,
    VISION_MLP,
    crop_rows,
    intervene_site,
    record_site,
    segment_rows,
    site_shape,
)
from culture_neurons.models.tiny import make_items

pytest_plugins = ["tests.tiny_models"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (family, checkpoint): every tiny family, and LLaVA-NeXT with a SigLIP tower.
VARIANTS = [
    ("qwen2_5_vl", None),
    ("llava_next", None),
    ("pangea", None),
    ("llava_next", "llava_next_siglip"),
]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: v[1] or v[0])
def adapter(request: pytest.FixtureRequest, load_tiny: Callable[..., ModelAdapter]) -> ModelAdapter:
    family, checkpoint = request.param
    return load_tiny(family, checkpoint=checkpoint)


def is_qwen(adapter: ModelAdapter) -> bool:
    return adapter.family == "qwen2_5_vl"


def vision_layers(adapter: ModelAdapter) -> list[nn.Module]:
    """The vision encoder's layers, written out per family (not through the code under test)."""
    if is_qwen(adapter):
        return list(adapter.model.model.visual.blocks)
    return list(adapter.model.model.vision_tower.encoder.layers)


def vision_act(layer: nn.Module) -> nn.Module:
    return getattr(layer.mlp, "act_fn", None) or layer.mlp.activation_fn


def o_projs(adapter: ModelAdapter) -> list[nn.Linear]:
    return [layer.self_attn.o_proj for layer in adapter.decoder_layers()]


def hook_counts(modules: Sequence[nn.Module]) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules]


def all_modules(adapter: ModelAdapter) -> list[nn.Module]:
    layers = vision_layers(adapter)
    return [vision_act(layer) for layer in layers] + o_projs(adapter) + adapter.act_fn_modules()


def capture_outputs(
    modules: Sequence[nn.Module],
) -> tuple[list[tuple[nn.Module, ForwardHook]], list]:
    """Plain hooks keeping every output of each module, in call order."""
    store: list[list[torch.Tensor]] = [[] for _ in modules]

    def make(index: int) -> ForwardHook:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            store[index].append(output.detach().clone())

        return hook

    return [(m, make(i)) for i, m in enumerate(modules)], store


def capture_inputs(
    modules: Sequence[nn.Module],
) -> tuple[list[tuple[nn.Module, ForwardHook]], list]:
    store: list[list[torch.Tensor]] = [[] for _ in modules]

    def make(index: int) -> ForwardHook:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            store[index].append(args[0].detach().clone())

        return hook

    return [(m, make(i)) for i, m in enumerate(modules)], store


def last_logits(adapter: ModelAdapter, batch: Any) -> torch.Tensor:
    with torch.inference_mode():
        return adapter.model(**batch).logits[:, -1].float()


def per_item_patches(adapter: ModelAdapter, batch: Any, output: torch.Tensor) -> list[torch.Tensor]:
    """Each item's patch activations ``[patches, D]``, split by hand from the raw output."""
    if is_qwen(adapter):
        counts = [int(t * h * w) for t, h, w in batch["image_grid_thw"].tolist()]
        return list(torch.split(output, counts))
    config = adapter.model.config
    crops = [
        image_size_to_num_patches(
            size, config.image_grid_pinpoints, config.vision_config.image_size
        )
        for size in batch["image_sizes"]
    ]
    first = 1 if config.vision_config.model_type == "clip_vision_model" else 0  # CLIP's CLS
    return [part[:, first:].reshape(-1, part.shape[-1]) for part in torch.split(output, crops)]


def brute_force(values: list[list[torch.Tensor]]) -> ActivationStats:
    """values[item][layer] = that item's activations ``[tokens, D]``."""
    fire = torch.stack([torch.stack([(v > 0).sum(0).int() for v in item]) for item in values])
    pos = torch.stack(
        [torch.stack([v.double().clamp_min(0).sum(0) for v in item]) for item in values]
    )
    act = torch.stack([torch.stack([v.double().sum(0) for v in item]) for item in values]).sum(0)
    tokens = torch.tensor([item[0].shape[0] for item in values], dtype=torch.int32)
    return ActivationStats(fire, pos.float(), tokens, act)


def assert_stats_equal(got: ActivationStats, expected: ActivationStats) -> None:
    assert got.fire_count.dtype == torch.int32 and got.pos_sum.dtype == torch.float32
    assert got.tokens.dtype == torch.int32 and got.act_sum.dtype == torch.float64
    assert torch.equal(got.tokens, expected.tokens)
    assert torch.equal(got.fire_count, expected.fire_count)
    torch.testing.assert_close(got.pos_sum, expected.pos_sum, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got.act_sum, expected.act_sum, rtol=1e-5, atol=1e-4)


def random_bank(
    shape: tuple[int, ...], seed: int, values: Sequence[float] = (0.0, 1.0)
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    choice = torch.randint(len(values), shape, generator=generator)
    return torch.tensor(values)[choice]


# ------------------------------------------------------------------------------------- shapes
def test_site_shapes(adapter: ModelAdapter) -> None:
    decoder = site_shape(adapter, DECODER_MLP)
    assert (decoder.n_layers, decoder.n_units) == (adapter.n_layers, adapter.n_neurons)
    assert decoder.statistic == "fires" and not decoder.in_vision_tower
    heads = site_shape(adapter, ATTENTION_HEADS)
    config = adapter.model.config.get_text_config()
    assert (heads.n_layers, heads.n_units) == (adapter.n_layers, config.num_attention_heads)
    assert heads.statistic == "l2_norm" and not heads.in_vision_tower
    vision = site_shape(adapter, VISION_MLP)
    layers = vision_layers(adapter)
    # Qwen merges the last layer's output; LLaVA-NeXT reads hidden_states[-2], so its last layer
    # feeds nothing and is left out.
    assert vision.n_layers == (len(layers) if is_qwen(adapter) else len(layers) - 1)
    assert vision.n_units == adapter.model.config.vision_config.intermediate_size
    assert vision.statistic == "fires" and vision.in_vision_tower
    assert vision.layers_path in {"model.visual.blocks", "model.vision_tower.encoder.layers"}
    assert [site_shape(adapter, s).site for s in SITES] == list(SITES)


def test_the_vision_layers_left_out_feed_nothing(adapter: ModelAdapter) -> None:
    """The claim behind leaving LLaVA-NeXT's last vision layer out: silencing it is a no-op."""
    layers = vision_layers(adapter)
    used = site_shape(adapter, VISION_MLP).n_layers
    batch = adapter.build_batch(make_items(2))
    before = last_logits(adapter, batch)

    def silence(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(output)

    with hooks_attached([(vision_act(layer), silence) for layer in layers[used:]]):
        assert torch.equal(last_logits(adapter, batch), before)
    with hooks_attached([(vision_act(layers[used - 1]), silence)]):
        assert not torch.allclose(last_logits(adapter, batch), before, atol=1e-5)


# ------------------------------------------------------------------- 1. hooks equal the maths
def test_vision_bank_scales_the_activation_as_by_hand(adapter: ModelAdapter) -> None:
    shape = site_shape(adapter, VISION_MLP)
    keep = random_bank((1, shape.n_layers, shape.n_units), seed=0, values=(0.0, 1.0, 2.5))
    offset = torch.randn(keep.shape, generator=torch.Generator().manual_seed(1)) * (keep == 0)
    mlps = [layer.mlp for layer in vision_layers(adapter)[: shape.n_layers]]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def grab(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        seen.append((args[0].detach().clone(), output.detach().clone()))

    batch = adapter.build_batch(make_items(3))
    with (
        hooks_attached([(mlp, grab) for mlp in mlps]),
        intervene_site(adapter, VISION_MLP, keep, offset=offset),
        torch.inference_mode(),
    ):
        adapter.model(**batch)
    assert len(seen) == len(mlps)
    with torch.inference_mode():
        for layer, (mlp, (x, y)) in enumerate(zip(mlps, seen, strict=True)):
            if is_qwen(adapter):  # SwiGLU
                gate = mlp.act_fn(mlp.gate_proj(x)) * keep[0, layer] + offset[0, layer]
                by_hand = mlp.down_proj(gate * mlp.up_proj(x))
            else:  # CLIP / SigLIP: fc1 -> activation -> fc2
                by_hand = mlp.fc2(mlp.activation_fn(mlp.fc1(x)) * keep[0, layer] + offset[0, layer])
            torch.testing.assert_close(y, by_hand, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(y, mlp(x), atol=1e-4), "the bank changed this layer"
    assert sum(hook_counts(all_modules(adapter))) == 0


def test_head_banks_scale_o_proj_input_slices_row_by_row(adapter: ModelAdapter) -> None:
    shape = site_shape(adapter, ATTENTION_HEADS)
    keep = random_bank((2, shape.n_layers, shape.n_units), seed=2, values=(0.0, 0.5, 1.0, 3.0))
    rows = torch.tensor([1, 0, 1])
    modules = o_projs(adapter)
    seen_in: list[torch.Tensor] = []
    seen_out: list[torch.Tensor] = []

    def before(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen_in.append(args[0].detach().clone())

    def after(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        seen_out.append(output.detach().clone())

    # Registered before the bank's pre-hook, `before` sees o_proj's input as attention made it.
    handles = [m.register_forward_pre_hook(before) for m in modules]
    handles += [m.register_forward_hook(after) for m in modules]
    batch = adapter.build_batch(make_items(3))
    try:
        with intervene_site(adapter, ATTENTION_HEADS, keep, rows), torch.inference_mode():
            adapter.model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen_in) == len(seen_out) == len(modules)
    heads = shape.n_units
    with torch.inference_mode():
        for layer, (o_proj, x, y) in enumerate(zip(modules, seen_in, seen_out, strict=True)):
            factor = keep[rows, layer]  # [B, H]
            split = x.view(*x.shape[:2], heads, -1) * factor[:, None, :, None]
            torch.testing.assert_close(y, o_proj(split.flatten(2)), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(y, o_proj(x), atol=1e-4)


# ------------------------------------------------------------ 2. recording equals full capture
def vision_stats_by_hand(
    adapter: ModelAdapter, items: list[dict[str, Any]]
) -> tuple[ActivationStats, ActivationStats]:
    """(record_site's stats, brute force from the raw outputs) for one batch of ``items``."""
    used = site_shape(adapter, VISION_MLP).n_layers
    acts = [vision_act(layer) for layer in vision_layers(adapter)[:used]]
    capture, store = capture_outputs(acts)
    batch = adapter.build_batch(items)
    with hooks_attached(capture), record_site(adapter, VISION_MLP, batch) as recorder:
        adapter.generate(batch, max_new_tokens=3, min_new_tokens=3)
    assert [len(calls) for calls in store] == [1] * used, "the vision tower ran once"
    per_layer = [per_item_patches(adapter, batch, calls[0]) for calls in store]
    values = [[per_layer[layer][item] for layer in range(used)] for item in range(len(items))]
    return recorder.stats, brute_force(values)


def test_vision_recording_equals_full_capture(adapter: ModelAdapter) -> None:
    items = make_items(4)
    got, expected = vision_stats_by_hand(adapter, items)
    assert_stats_equal(got, expected)
    assert len(set(got.tokens.tolist())) > 1, "images of different sizes, different patch counts"
    assert (got.fire_count > 0).any() and (got.fire_count < got.tokens[:, None, None]).any()
    assert (got.act_sum < 0).any(), "negative activations count in the mean's sum"
    for i, item in enumerate(items):
        alone, _ = vision_stats_by_hand(adapter, [item])
        assert torch.equal(alone.tokens[0], got.tokens[i])
        assert torch.equal(alone.fire_count[0], got.fire_count[i])
        torch.testing.assert_close(alone.pos_sum[0], got.pos_sum[i], rtol=1e-5, atol=1e-4)


def test_vision_recording_by_forward_equals_by_generate(adapter: ModelAdapter) -> None:
    batch = adapter.build_batch(make_items(3, seed=1))
    with record_site(adapter, VISION_MLP, batch) as by_forward, torch.inference_mode():
        adapter.model(**batch)
    with record_site(adapter, VISION_MLP, batch) as by_generate:
        adapter.generate(batch, max_new_tokens=2)
    assert torch.equal(by_forward.stats.fire_count, by_generate.stats.fire_count)
    assert torch.equal(by_forward.stats.pos_sum, by_generate.stats.pos_sum)


def test_head_recording_equals_full_capture(adapter: ModelAdapter) -> None:
    heads = site_shape(adapter, ATTENTION_HEADS).n_units
    modules = o_projs(adapter)
    batch = adapter.build_batch(make_items(4))
    mask = adapter.valid_token_mask(batch)
    capture, store = capture_inputs(modules)
    with hooks_attached(capture), record_site(adapter, ATTENTION_HEADS, batch) as recorder:
        adapter.generate(batch, max_new_tokens=3, min_new_tokens=3)
    assert [len(calls) for calls in store] == [3] * len(modules), "prefill and two decode steps"
    values = [
        [calls[0][b][mask[b]].unflatten(-1, (heads, -1)).norm(dim=-1) for calls in store]
        for b in range(mask.shape[0])
    ]
    got = recorder.stats
    assert got.fire_count.shape == (4, adapter.n_layers, heads)
    assert_stats_equal(got, brute_force(values))
    assert torch.equal(got.tokens, mask.sum(1).int())
    torch.testing.assert_close(got.act_sum, got.pos_sum.double().sum(0), rtol=1e-5, atol=1e-3)
    # Not vacuous: padding and special tokens would have counted.
    unmasked = batch["attention_mask"].bool()
    all_tokens = [[calls[0][b][unmasked[b]].unflatten(-1, (heads, -1)).norm(dim=-1)
                   for calls in store] for b in range(4)]  # fmt: skip
    assert not torch.allclose(brute_force(all_tokens).pos_sum, got.pos_sum)

    items = make_items(4)
    for i in (0, 3):
        alone_batch = adapter.build_batch([items[i]])
        with record_site(adapter, ATTENTION_HEADS, alone_batch) as alone, torch.inference_mode():
            adapter.model(**alone_batch)
        assert torch.equal(alone.stats.fire_count[0], got.fire_count[i])
        torch.testing.assert_close(alone.stats.pos_sum[0], got.pos_sum[i], rtol=1e-4, atol=1e-3)


# ---------------------------------------------------- 3. a head's ablation equals zeroed weights
def test_head_ablation_equals_zeroed_o_proj_columns(adapter: ModelAdapter) -> None:
    shape = site_shape(adapter, ATTENTION_HEADS)
    layer, head = 1, 2
    head_dim = o_projs(adapter)[layer].in_features // shape.n_units
    keep = torch.ones(1, shape.n_layers, shape.n_units)
    keep[0, layer, head] = 0
    batch = adapter.build_batch(make_items(3))
    before = last_logits(adapter, batch)
    with intervene_site(adapter, ATTENTION_HEADS, keep):
        ablated = last_logits(adapter, batch)
        ablated_tokens = adapter.generate(batch, max_new_tokens=4)
    weight = o_projs(adapter)[layer].weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[:, head * head_dim : (head + 1) * head_dim] = 0
        by_hand = last_logits(adapter, batch)
        # The pre-hook holds at every decode step too: the same greedy continuation.
        assert torch.equal(adapter.generate(batch, max_new_tokens=4), ablated_tokens)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    torch.testing.assert_close(ablated, by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ablated, before, atol=1e-4)
    assert torch.equal(last_logits(adapter, batch), before), "weights and hooks restored"


def test_head_banks_per_row_and_select_rows(adapter: ModelAdapter) -> None:
    shape = site_shape(adapter, ATTENTION_HEADS)
    keep = random_bank((2, shape.n_layers, shape.n_units), seed=7)
    rows = torch.tensor([0, 1, 1, 0])
    batch = adapter.build_batch(make_items(4))
    alone = []
    for m in range(2):
        with intervene_site(adapter, ATTENTION_HEADS, keep[m : m + 1]):
            alone.append(last_logits(adapter, batch))
    with intervene_site(adapter, ATTENTION_HEADS, keep, rows) as handle:
        mixed = last_logits(adapter, batch)
        # Rows 1 and 3 alone (finished rows left the batch): each keeps its own bank.
        handle.select_rows(torch.tensor([1, 3]))
        subset = adapter.build_batch([make_items(4)[1], make_items(4)[3]])
        picked = last_logits(adapter, subset)
    for b, m in enumerate(rows.tolist()):
        torch.testing.assert_close(mixed[b], alone[m][b], rtol=1e-5, atol=1e-5)
    with intervene_site(adapter, ATTENTION_HEADS, keep[1:2]):
        expected = last_logits(adapter, subset)
    with intervene_site(adapter, ATTENTION_HEADS, keep[0:1]):
        other = last_logits(adapter, subset)
    torch.testing.assert_close(picked, torch.stack([expected[0], other[1]]), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alone[0], alone[1], atol=1e-4)


def test_head_banks_hook_only_layers_they_change(adapter: ModelAdapter) -> None:
    shape = site_shape(adapter, ATTENTION_HEADS)
    keep = torch.ones(2, shape.n_layers, shape.n_units)
    keep[1, 1, 0] = 0
    with intervene_site(adapter, ATTENTION_HEADS, keep, torch.tensor([0, 1])):
        assert hook_counts(o_projs(adapter)) == [0, 1, 0]
    assert hook_counts(o_projs(adapter)) == [0, 0, 0]


def enter(context: Any) -> None:
    """Enter and leave a context manager (where entering is what must fail)."""
    with context:
        pass


def test_bad_input_is_refused_clearly(adapter: ModelAdapter) -> None:
    heads, vision = site_shape(adapter, ATTENTION_HEADS), site_shape(adapter, VISION_MLP)
    head_bank = torch.ones(1, heads.n_layers, heads.n_units)
    vision_bank = torch.ones(1, vision.n_layers, vision.n_units)
    decoder_bank = torch.ones(1, adapter.n_layers, adapter.n_neurons)
    with pytest.raises(InputError, match="unknown unit site 'mlp'"):
        site_shape(adapter, "mlp")
    with pytest.raises(ValueError, match="offset .* not supported for heads"):
        enter(intervene_site(adapter, ATTENTION_HEADS, head_bank, offset=head_bank * 0))
    with pytest.raises(ValueError, match="one bank applies to the whole batch"):
        enter(
            intervene_site(adapter, VISION_MLP, vision_bank.repeat(2, 1, 1), torch.tensor([0, 1]))
        )
    with pytest.raises(ValueError, match="one bank applies to the whole batch"):
        enter(intervene_site(adapter, VISION_MLP, vision_bank, torch.tensor([0, 0])))
    for site, bank in ((VISION_MLP, vision_bank), (ATTENTION_HEADS, head_bank),
                       (DECODER_MLP, decoder_bank)):  # fmt: skip
        for wrong in (bank[:, :-1], bank[:, :, :-1], bank[0]):
            with pytest.raises(ValueError, match=f"{site}: keep must be"):
                enter(intervene_site(adapter, site, wrong))
    with pytest.raises(ValueError, match="offset must have the factor bank's shape"):
        enter(intervene_site(adapter, VISION_MLP, vision_bank, offset=vision_bank[:, :, :-1]))
    batch = adapter.build_batch(make_items(2))
    with (
        pytest.raises(RuntimeError, match="second forward"),
        torch.inference_mode(),
        record_site(adapter, VISION_MLP, batch),
    ):
        adapter.model(**batch)
        adapter.model(**batch)
    with (
        pytest.raises(RuntimeError, match="second full-length forward"),
        torch.inference_mode(),
        record_site(adapter, ATTENTION_HEADS, batch),
    ):
        adapter.model(**batch)
        adapter.model(**batch)
    with pytest.raises(RuntimeError, match="no vision forward was recorded"):
        enter(record_site(adapter, VISION_MLP, batch))
    text_only = [{**item, "image": None} for item in make_items(2)]
    with pytest.raises(InputError, match="cannot map the vision tokens"):
        enter(record_site(adapter, VISION_MLP, adapter.build_batch(text_only)))
    assert sum(hook_counts(all_modules(adapter))) == 0, "every hook removed after the errors"


def test_a_model_without_a_vision_tower_has_no_vision_site(
    load_tiny: Callable[..., ModelAdapter],
) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = load_tiny("pangea").tokenizer
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    text = ModelAdapter(Qwen2ForCausalLM(config), tokenizer)
    with pytest.raises(InputError, match=r"Qwen2ForCausalLM has no vision tower.*'vision_mlp'"):
        site_shape(text, VISION_MLP)
    with pytest.raises(InputError, match="Qwen2ForCausalLM has no vision tower"):
        enter(intervene_site(text, VISION_MLP, torch.ones(1, 1, 1)))
    # Its heads are there (GQA: o_proj's input holds all 4 query heads, not the 1 kv head).
    assert site_shape(text, ATTENTION_HEADS).n_units == 4
    batch = text.build_batch([{**item, "image": None} for item in make_items(2)])
    with record_site(text, ATTENTION_HEADS, batch) as recorder, torch.inference_mode():
        text.model(**batch)
    assert recorder.stats.pos_sum.shape == (2, 2, 4) and (recorder.stats.pos_sum > 0).all()


# ------------------------------------------------------- 5. decoder_mlp is today's behaviour
def test_decoder_mlp_site_is_the_decoder_hooks_exactly(adapter: ModelAdapter) -> None:
    batch = adapter.build_batch(make_items(3))
    modules = adapter.act_fn_modules()
    with record_site(adapter, DECODER_MLP, batch) as site:
        adapter.generate(batch, max_new_tokens=2)
    with record_activation_stats(modules, adapter.valid_token_mask(batch)) as plain:
        adapter.generate(batch, max_new_tokens=2)
    for field in ("fire_count", "pos_sum", "tokens", "act_sum"):
        assert torch.equal(getattr(site.stats, field), getattr(plain.stats, field)), field

    shape = (2, adapter.n_layers, adapter.n_neurons)
    keep = random_bank(shape, seed=3, values=(0.0, 1.0, 2.0))
    offset = torch.randn(shape, generator=torch.Generator().manual_seed(4)) * (keep == 0)
    rows = torch.tensor([1, 0, 1])
    with intervene_site(adapter, DECODER_MLP, keep, rows, offset):
        by_site = last_logits(adapter, batch)
    with apply_keep_masks(modules, keep, rows, offset):
        by_hooks = last_logits(adapter, batch)
    assert torch.equal(by_site, by_hooks)
    assert not torch.allclose(by_site, last_logits(adapter, batch), atol=1e-4)


# ------------------------------------------------------------------------------ pure helpers
def test_segment_and_crop_rows() -> None:
    assert [r.tolist() for r in segment_rows([2, 3, 1])] == [[0, 1], [2, 3, 4], [5]]
    # Two images of 2 and 1 crops, 3 positions a crop, the first a CLS token.
    assert [r.tolist() for r in crop_rows([2, 1], 3, skip_first=True)] == [[1, 2, 4, 5], [7, 8]]
    assert [r.tolist() for r in crop_rows([1, 1], 2, skip_first=False)] == [[0, 1], [2, 3]]
