"""Recording and keep-mask hooks on the tiny checkpoints of every model family."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from culture_neurons.models import (
    KeepMasks,
    ModelAdapter,
    apply_keep_masks,
    hooks_attached,
    record_activation_stats,
)
from culture_neurons.models.hooks import (
    ActivationStats,
    ForwardHook,
    reduce_positive,
    reduce_positive_rows,
)
from culture_neurons.models.tiny import make_items

pytest_plugins = ["tests.tiny_models"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def first_outputs(modules: Sequence[nn.Module]) -> tuple[list[tuple[nn.Module, ForwardHook]], list]:
    """Hooks that keep a copy of each module's first output (the prefill), and where they put it."""
    store: list[torch.Tensor | None] = [None] * len(modules)

    def make(index: int) -> ForwardHook:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            if store[index] is None:
                store[index] = output.detach().clone()

        return hook

    return [(m, make(i)) for i, m in enumerate(modules)], store


def brute_force_stats(acts: list[torch.Tensor], mask: torch.Tensor) -> ActivationStats:
    """Row by row, over the valid positions only, from fully captured [B, T, D] activations."""
    batch, layers, width = mask.shape[0], len(acts), acts[0].shape[-1]
    fire = torch.zeros(batch, layers, width, dtype=torch.int32)
    total = torch.zeros(batch, layers, width, dtype=torch.float64)
    act_sum = torch.zeros(layers, width, dtype=torch.float64)
    for b in range(batch):
        for layer, act in enumerate(acts):
            valid = act[b][mask[b]].double()  # [valid tokens, D]
            fire[b, layer] = (valid > 0).sum(dim=0).int()
            total[b, layer] = torch.where(valid > 0, valid, 0.0).sum(dim=0)
            act_sum[layer] += valid.sum(dim=0)
    return ActivationStats(fire, total.float(), mask.sum(dim=1).int(), act_sum)


def record(
    adapter: ModelAdapter, items: list[dict[str, Any]], **generate: Any
) -> tuple[ActivationStats, torch.Tensor]:
    batch = adapter.build_batch(items)
    with record_activation_stats(adapter.act_fn_modules(), adapter.valid_token_mask(batch)) as rec:
        new_tokens = adapter.generate(batch, **generate)
    return rec.stats, new_tokens


def until_eos(adapter: ModelAdapter, new_tokens: torch.Tensor) -> list[list[int]]:
    """Generated ids up to and including the first end-of-sequence token of each row."""
    eos = adapter.model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    rows = []
    for row in new_tokens.tolist():
        stop = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:stop])
    return rows


def last_logits(adapter: ModelAdapter, batch: Any) -> torch.Tensor:
    with torch.inference_mode():
        return adapter.model(**batch).logits[:, -1].float()


def random_keep(adapter: ModelAdapter, masks: int, seed: int, zeros: float = 0.3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (masks, adapter.n_layers, adapter.n_neurons)
    return (torch.rand(shape, generator=generator) >= zeros).float()


def vision_activations(model: nn.Module) -> list[nn.Module]:
    return [
        module
        for name, module in model.named_modules()
        if ("visual" in name or "vision_tower" in name)
        and name.endswith(("act_fn", "activation_fn"))
    ]


def forward_hook_count(modules: Sequence[nn.Module]) -> int:
    return sum(len(m._forward_hooks) for m in modules)


# ---------------------------------------------------------------------------------------- recording
def test_hooks_fire_once_per_layer_per_forward_and_never_in_vision(
    tiny_adapter: ModelAdapter,
) -> None:
    modules = tiny_adapter.act_fn_modules()
    calls = [0] * len(modules)
    vision_calls = [0]

    def counter(index: int) -> ForwardHook:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            calls[index] += 1

        return hook

    def count_vision(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        vision_calls[0] += 1

    vision = vision_activations(tiny_adapter.model)
    batch = tiny_adapter.build_batch(make_items(2))
    pairs = [(m, counter(i)) for i, m in enumerate(modules)] + [(v, count_vision) for v in vision]
    with hooks_attached(pairs), torch.inference_mode():
        tiny_adapter.model(**batch)
    assert calls == [1] * len(modules)
    assert vision_calls[0] >= len(vision), "the vision tower ran, under hooks of its own"

    calls[:] = [0] * len(modules)
    with hooks_attached(pairs[: len(modules)]):
        tiny_adapter.generate(batch, max_new_tokens=3, min_new_tokens=3)
    assert calls == [3] * len(modules), "prefill plus two decode steps"


def test_recorded_stats_equal_brute_force(tiny_adapter: ModelAdapter) -> None:
    batch = tiny_adapter.build_batch(make_items(4))
    mask = tiny_adapter.valid_token_mask(batch)
    modules = tiny_adapter.act_fn_modules()
    capture, acts = first_outputs(modules)
    with hooks_attached(capture), record_activation_stats(modules, mask) as rec:
        tiny_adapter.generate(batch, max_new_tokens=3, min_new_tokens=3)
    expected = brute_force_stats(acts, mask)

    shape = (4, tiny_adapter.n_layers, tiny_adapter.n_neurons)
    assert rec.fire_count.shape == rec.pos_sum.shape == shape
    assert rec.fire_count.dtype == torch.int32 and rec.pos_sum.dtype == torch.float32
    assert rec.fire_count.device.type == "cpu" and rec.pos_sum.device.type == "cpu"
    assert torch.equal(rec.tokens, expected.tokens)
    assert torch.equal(rec.fire_count, expected.fire_count)
    torch.testing.assert_close(rec.pos_sum, expected.pos_sum, rtol=1e-5, atol=1e-5)
    assert rec.act_sum.shape == shape[1:] and rec.act_sum.dtype == torch.float64
    torch.testing.assert_close(rec.act_sum, expected.act_sum, rtol=1e-5, atol=1e-4)
    assert (rec.act_sum < 0).any(), "SiLU outputs below zero count in the mean's sum"
    # Not vacuous: neurons fire on some valid tokens but not all, and padding would have counted.
    assert (rec.fire_count > 0).any() and (rec.fire_count < rec.tokens[:, None, None]).any()
    unmasked = brute_force_stats(acts, batch["attention_mask"].bool())
    assert not torch.equal(unmasked.fire_count, rec.fire_count)


def test_row_wise_reduction_equals_the_batched_one() -> None:
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(3, 9, 5, generator=generator)
    valid = torch.rand(3, 9, generator=generator) > 0.4
    valid[1] = False  # a row without valid tokens counts nothing
    valid[2, ::2] = True
    output[~valid] = torch.nan  # what a padded position may hold must not leak into the sums
    rows = [row.nonzero().squeeze(1) for row in valid]
    count, total, plain = reduce_positive_rows(output, rows)
    expected_count, expected_total, expected_plain = reduce_positive(output, valid.unsqueeze(-1))
    assert torch.equal(count, expected_count)
    torch.testing.assert_close(total, expected_total)
    torch.testing.assert_close(plain, expected_plain)
    torch.testing.assert_close(plain, torch.where(valid.unsqueeze(-1), output, 0).sum(dim=1))
    assert count[1].sum() == 0 and count.sum() > 0


def test_decode_steps_are_not_recorded(tiny_adapter: ModelAdapter) -> None:
    items = make_items(3, seed=2)
    one, _ = record(tiny_adapter, items, max_new_tokens=1)
    many, _ = record(tiny_adapter, items, max_new_tokens=4, min_new_tokens=4)
    assert torch.equal(one.fire_count, many.fire_count)
    assert torch.equal(one.pos_sum, many.pos_sum)


def test_batch_of_one_and_of_four_agree(tiny_adapter: ModelAdapter) -> None:
    items = make_items(4)
    together, tokens_together = record(tiny_adapter, items, max_new_tokens=5)
    outputs = until_eos(tiny_adapter, tokens_together)
    assert len({tuple(row) for row in outputs}) > 1, "outputs depend on the input"
    for i, item in enumerate(items):
        alone, tokens_alone = record(tiny_adapter, [item], max_new_tokens=5)
        assert alone.tokens.item() == together.tokens[i].item()
        assert torch.equal(alone.fire_count[0], together.fire_count[i])
        torch.testing.assert_close(alone.pos_sum[0], together.pos_sum[i], rtol=1e-5, atol=1e-4)
        assert until_eos(tiny_adapter, tokens_alone) == [outputs[i]]


def test_greedy_generation_is_deterministic(tiny_adapter: ModelAdapter) -> None:
    batch = tiny_adapter.build_batch(make_items(3, seed=1))
    first = tiny_adapter.generate(batch, max_new_tokens=6)
    assert first.shape[0] == 3 and 1 <= first.shape[1] <= 6
    assert torch.equal(first, tiny_adapter.generate(batch, max_new_tokens=6))


def test_recording_refuses_a_foreign_forward(tiny_adapter: ModelAdapter) -> None:
    modules = tiny_adapter.act_fn_modules()
    batch = tiny_adapter.build_batch(make_items(2))
    mask = tiny_adapter.valid_token_mask(batch)
    wrong = torch.ones(2, mask.shape[1] + 1, dtype=torch.bool)
    with (
        pytest.raises(ValueError, match="does not match the valid mask"),
        record_activation_stats(modules, wrong),
        torch.inference_mode(),
    ):
        tiny_adapter.model(**batch)
    assert forward_hook_count(modules) == 0
    with (
        pytest.raises(RuntimeError, match="second full-length forward"),
        record_activation_stats(modules, mask),
        torch.inference_mode(),
    ):
        tiny_adapter.model(**batch)
        tiny_adapter.model(**batch)
    with (
        pytest.raises(RuntimeError, match="no prefill forward"),
        record_activation_stats(modules, mask),
    ):
        pass
    assert forward_hook_count(modules) == 0


# -------------------------------------------------------------------------------------- keep masks
def mlp_inputs_and_outputs(
    adapter: ModelAdapter, keep: torch.Tensor, offset: torch.Tensor | None = None
) -> tuple[list[nn.Module], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Each decoder MLP's input and output in one forward under the banks ``keep``/``offset``."""
    mlps = [layer.mlp for layer in adapter.decoder_layers()]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def grab(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        seen.append((args[0].detach().clone(), output.detach().clone()))

    batch = adapter.build_batch(make_items(2))
    with (
        hooks_attached([(mlp, grab) for mlp in mlps]),
        apply_keep_masks(adapter.act_fn_modules(), keep, offset=offset),
        torch.inference_mode(),
    ):
        adapter.model(**batch)
    return mlps, seen


def test_keep_mask_multiplies_the_gate_branch(tiny_adapter: ModelAdapter) -> None:
    keep = random_keep(tiny_adapter, masks=1, seed=0)
    mlps, seen = mlp_inputs_and_outputs(tiny_adapter, keep)
    assert len(seen) == len(mlps)
    with torch.inference_mode():
        for layer, (mlp, (x, y)) in enumerate(zip(mlps, seen, strict=True)):
            by_hand = mlp.down_proj(
                (mlp.act_fn(mlp.gate_proj(x)) * keep[0, layer]) * mlp.up_proj(x)
            )
            torch.testing.assert_close(y, by_hand, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(y, mlp(x), atol=1e-4), "the mask changed this layer's output"


def intervention_banks(
    adapter: ModelAdapter, kind: dict[str, Any], masks: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Factor and offset banks of ``kind`` on random masks, with random identification means."""
    from culture_neurons.ablation.conditions import banks, parse_intervention

    generator = torch.Generator().manual_seed(seed)
    shape = (masks, adapter.n_layers, adapter.n_neurons)
    selected = (torch.rand(shape, generator=generator) < 0.3).numpy()
    means = torch.randn(shape[1:], generator=generator).numpy()
    factor, offset = banks(selected, parse_intervention(kind), means)
    return torch.from_numpy(factor), None if offset is None else torch.from_numpy(offset)


KINDS = [{"kind": "zero"}, {"kind": "mean"}, {"kind": "scale", "factor": 2.0},
         {"kind": "scale", "factor": 0.25}]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(map(str, k.values())))
def test_each_intervention_kind_equals_the_mlp_by_hand(
    tiny_adapter: ModelAdapter, kind: dict[str, Any]
) -> None:
    """down_proj((act_fn(gate_proj(x)) * f + o) * up_proj(x)) with the kind's factor f and offset
    o: 0 and 0 (zero), 0 and the mean (mean), k and 0 (scale), on the selected neurons only."""
    factor, offset = intervention_banks(tiny_adapter, kind, masks=1, seed=5)
    mlps, seen = mlp_inputs_and_outputs(tiny_adapter, factor, offset)
    assert len(seen) == len(mlps)
    with torch.inference_mode():
        for layer, (mlp, (x, y)) in enumerate(zip(mlps, seen, strict=True)):
            gate = mlp.act_fn(mlp.gate_proj(x)) * factor[0, layer]
            if offset is not None:
                gate = gate + offset[0, layer]
            torch.testing.assert_close(y, mlp.down_proj(gate * mlp.up_proj(x)), rtol=1e-5,
                                       atol=1e-6)  # fmt: skip
            assert not torch.allclose(y, mlp(x), atol=1e-4), "the intervention changed the layer"


def test_one_batch_mixes_kinds_row_by_row(tiny_adapter: ModelAdapter) -> None:
    """Rows carrying zero, mean and scale banks in one batch answer as each bank alone."""
    parts = [intervention_banks(tiny_adapter, kind, masks=1, seed=i) for i, kind in
             enumerate(KINDS)]  # fmt: skip
    factor = torch.cat([f for f, _ in parts])
    offset = torch.cat([torch.zeros_like(f) if o is None else o for f, o in parts])
    modules = tiny_adapter.act_fn_modules()
    rows = torch.tensor([1, 3, 0, 2, 1])
    batch = tiny_adapter.build_batch(make_items(5))
    with apply_keep_masks(modules, factor, rows, offset):
        logits = last_logits(tiny_adapter, batch)
    alone = []
    for m, (f, o) in enumerate(parts):
        with apply_keep_masks(modules, f, offset=o):
            alone.append(last_logits(tiny_adapter, batch))
        for b in (rows == m).nonzero().flatten().tolist():
            torch.testing.assert_close(logits[b], alone[m][b], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alone[1], alone[2], atol=1e-3), "mean and scale differ in effect"


def test_row_indexed_masks_equal_each_mask_alone(tiny_adapter: ModelAdapter) -> None:
    modules = tiny_adapter.act_fn_modules()
    keep = random_keep(tiny_adapter, masks=3, seed=1, zeros=0.5)
    rows = torch.tensor([2, 0, 1, 2])
    batch = tiny_adapter.build_batch(make_items(4))
    with apply_keep_masks(modules, keep, rows):
        logits = last_logits(tiny_adapter, batch)
        tokens = until_eos(tiny_adapter, tiny_adapter.generate(batch, max_new_tokens=4))
    per_mask = []
    for m in range(3):
        with apply_keep_masks(modules, keep[m : m + 1]):
            alone = last_logits(tiny_adapter, batch)
            alone_tokens = until_eos(tiny_adapter, tiny_adapter.generate(batch, max_new_tokens=4))
        per_mask.append(alone)
        for b in (rows == m).nonzero().flatten().tolist():
            torch.testing.assert_close(logits[b], alone[b], rtol=1e-5, atol=1e-5)
            assert tokens[b] == alone_tokens[b]
    assert not torch.allclose(per_mask[0], per_mask[1], atol=1e-3), "masks differ in effect"


def test_keep_masks_hold_at_every_decode_step(tiny_adapter: ModelAdapter) -> None:
    modules = tiny_adapter.act_fn_modules()
    keep = random_keep(tiny_adapter, masks=2, seed=4)
    rows = torch.tensor([1, 0, 1])
    seen: list[list[torch.Tensor]] = [[] for _ in modules]

    def watcher(layer: int) -> ForwardHook:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            seen[layer].append(output.detach().clone())

        return hook

    batch = tiny_adapter.build_batch(make_items(3))
    # Registered after the keep hooks, the watchers see the masked output.
    with (
        apply_keep_masks(modules, keep, rows),
        hooks_attached([(m, watcher(i)) for i, m in enumerate(modules)]),
    ):
        tiny_adapter.generate(batch, max_new_tokens=4, min_new_tokens=4)
    for layer, outputs in enumerate(seen):
        assert [o.shape[1] for o in outputs] == [batch["input_ids"].shape[1], 1, 1, 1]
        dropped = keep[rows, layer] == 0  # [B, D]
        for output in outputs:
            assert output.permute(1, 0, 2)[:, dropped].eq(0).all()
            assert output.permute(1, 0, 2)[:, ~dropped].ne(0).any()


def test_hooks_leave_nothing_behind(tiny_adapter: ModelAdapter) -> None:
    modules = tiny_adapter.act_fn_modules()
    batch = tiny_adapter.build_batch(make_items(2))
    before = last_logits(tiny_adapter, batch)
    silence = torch.zeros(1, tiny_adapter.n_layers, tiny_adapter.n_neurons)
    with apply_keep_masks(modules, silence):
        assert forward_hook_count(modules) == len(modules)
        assert not torch.allclose(last_logits(tiny_adapter, batch), before, atol=1e-4)
    assert forward_hook_count(modules) == 0
    torch.testing.assert_close(last_logits(tiny_adapter, batch), before, rtol=0, atol=0)

    with pytest.raises(KeyError), apply_keep_masks(modules, silence):
        raise KeyError("boom")
    mask = tiny_adapter.valid_token_mask(batch)
    with pytest.raises(KeyError), record_activation_stats(modules, mask):
        raise KeyError("boom")
    assert forward_hook_count(modules) == 0


def test_keep_masks_hook_only_layers_they_change(tiny_adapter: ModelAdapter) -> None:
    modules = tiny_adapter.act_fn_modules()
    keep = torch.ones(2, tiny_adapter.n_layers, tiny_adapter.n_neurons)
    keep[1, 1, 5] = 0
    with apply_keep_masks(modules, keep, torch.tensor([0, 1])):
        assert [len(m._forward_hooks) for m in modules] == [0, 1, 0]
    keep[1, 1, 5], keep[0, 2, 3] = 1, 2.0  # a scale factor changes its layer too
    offset = torch.zeros_like(keep)
    offset[1, 0, 1] = 0.5  # and so does an offset alone
    with apply_keep_masks(modules, keep, torch.tensor([0, 1]), offset):
        assert [len(m._forward_hooks) for m in modules] == [1, 0, 1]


def test_keep_masks_validate_their_arguments(tiny_adapter: ModelAdapter) -> None:
    modules = tiny_adapter.act_fn_modules()
    layers, width = tiny_adapter.n_layers, tiny_adapter.n_neurons
    with pytest.raises(ValueError, match="keep must be"):
        KeepMasks(modules, torch.ones(1, layers + 1, width))
    with pytest.raises(ValueError, match="no row_mask_index"):
        KeepMasks(modules, torch.ones(2, layers, width))
    with pytest.raises(ValueError, match="out of range"):
        KeepMasks(modules, torch.ones(2, layers, width), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="offset must have the factor bank's shape"):
        KeepMasks(modules, torch.ones(1, layers, width), offset=torch.zeros(1, layers, width + 1))
    keep = random_keep(tiny_adapter, masks=2, seed=3)
    batch = tiny_adapter.build_batch(make_items(2))
    with (
        pytest.raises(ValueError, match="batch of 2 rows but row_mask_index has 3"),
        apply_keep_masks(modules, keep, torch.tensor([0, 1, 1])),
    ):
        last_logits(tiny_adapter, batch)
    assert forward_hook_count(modules) == 0


# -- the recording's compile fallback ----------------------------------------------------------


def broken_backend(graph_module: Any, example_inputs: Any) -> Any:
    """A compiler backend that fails the way a node without Triton or a C compiler does."""
    raise RuntimeError("no working C compiler")


def activations(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    output = torch.randn(3, 7, 16, generator=generator)
    valid = torch.rand(3, 7, 1, generator=generator) > 0.3
    return output, valid


def test_a_compiler_failing_at_the_first_call_falls_back_to_eager(monkeypatch, caplog) -> None:
    # torch.compile itself succeeds; the real Dynamo front end then fails at the first call,
    # where the recording hook runs it, as on a node without a working compiler.
    from culture_neurons.models import hooks

    real_compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda fn, **kw: real_compile(fn, backend=broken_backend, **kw)
    )
    torch._dynamo.reset()
    reduce = hooks.compiled_or_eager(reduce_positive)
    with caplog.at_level("WARNING", logger="culture_neurons.models.hooks"):
        for seed in range(3):
            output, valid = activations(seed)
            got = reduce(output, valid)
            for mine, eager in zip(got, reduce_positive(output, valid), strict=True):
                assert torch.equal(mine, eager)
    torch._dynamo.reset()
    assert reduce.fell_back
    warnings = [r for r in caplog.records if "runs eager" in r.getMessage()]
    assert len(warnings) == 1 and "first call" in warnings[0].getMessage()


def test_errors_after_a_successful_first_call_are_real(monkeypatch) -> None:
    from culture_neurons.models import hooks

    calls = []

    def compiled(*args: Any) -> Any:
        calls.append(args)
        if len(calls) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return reduce_positive(*args)

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled)
    reduce = hooks.compiled_or_eager(reduce_positive)
    reduce(*activations(0))
    with pytest.raises(torch.OutOfMemoryError):
        reduce(*activations(1))
    assert not reduce.fell_back


def test_fused_reduce_compiles_once_on_cuda_only(monkeypatch) -> None:
    from culture_neurons.models import hooks

    made = []
    monkeypatch.setattr(hooks, "_compiled_reduce", None)
    monkeypatch.setattr(hooks, "compiled_or_eager", lambda fn: made.append(fn) or fn)
    assert hooks.fused_reduce(torch.zeros(1, 1, 1)) is reduce_positive
    assert made == []
    # Only the device type is read: a stand-in for a CUDA activation on this CPU machine.
    cuda_output = SimpleNamespace(device=SimpleNamespace(type="cuda"))
    first = hooks.fused_reduce(cuda_output)
    assert hooks.fused_reduce(cuda_output) is first
    assert made == [reduce_positive]
