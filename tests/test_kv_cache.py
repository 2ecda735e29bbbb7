"""The decode loop's KV cache keeps room for the steps: each full-attention layer writes a step's
position in place (where transformers' DynamicLayer copies the whole cache per token) and holds
exactly what a DynamicLayer would; sliding-window layers keep transformers' own update."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, Qwen2Config
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from culture_neurons.inference import kv_cache
from culture_neurons.inference.decoding import GreedySettings, capture_prompts, greedy_decode
from culture_neurons.inference.engine import prompt_items

pytest_plugins = ["tests.tiny_models"]

MAX_NEW = 8
SIZES = {"num_hidden_layers": 2, "hidden_size": 16, "intermediate_size": 32,
         "num_attention_heads": 2, "num_key_value_heads": 1}  # fmt: skip


def test_a_reserved_cache_layer_holds_what_a_dynamic_one_does():
    """The prefill, appends within and beyond its room, and rows leaving."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 2, 4, 5, generator=generator)
    plain = DynamicLayer()
    plain.update(start, -start)
    reserved = kv_cache.ReservedLayer(room=2)
    for a, b in zip(reserved.update(start, -start), (start, -start), strict=True):
        assert torch.equal(a, b)
    for step, new in enumerate([1, 1, 3, 1]):  # the third append outgrows the room
        states = torch.randn(len(plain.keys), 2, new, 5, generator=generator)
        expected = plain.update(states, 2 * states)
        got = reserved.update(states, 2 * states)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
        if step == 1:
            rows = torch.tensor([0, 2])
            plain.batch_select_indices(rows)
            reserved.batch_select_indices(rows)
        assert reserved.get_seq_length() == plain.get_seq_length()
    assert torch.equal(reserved.keys, plain.keys) and torch.equal(reserved.values, plain.values)


def test_full_attention_layers_are_reserved_and_sliding_window_ones_kept():
    full = kv_cache.reserved_cache(Qwen2Config(**SIZES), room=4)
    assert [type(layer) for layer in full.layers] == [kv_cache.ReservedLayer] * 2
    sliding = kv_cache.reserved_cache(MistralConfig(**SIZES, sliding_window=4), room=4)
    assert [type(layer) for layer in sliding.layers] == [DynamicSlidingWindowLayer] * 2


def test_decoding_never_copies_the_whole_cache(load_tiny, varied_evaluation, monkeypatch,
                                               one_torch_thread):  # fmt: skip
    """Every layer of the tiny Qwen decodes through the reserved update, none through
    DynamicLayer's concatenation, and the tokens are those of transformers' `generate()` on the
    same left-padded batch, whose replies end at different steps (rows leave the cache)."""
    adapter = load_tiny("qwen2_5_vl")
    batch = adapter.build_batch(prompt_items(varied_evaluation))
    assert not batch["attention_mask"].bool().all()  # padded
    prompts = capture_prompts(adapter, batch)
    # The tiny Qwen ends some replies within a few tokens and runs others to the limit.
    settings = GreedySettings.from_model(adapter.model)
    copies = []
    real = DynamicLayer.update

    def counted(self, *args, **kwargs):
        copies.append(type(self).__name__)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DynamicLayer, "update", counted)
    tokens = greedy_decode(adapter, prompts, max_new_tokens=MAX_NEW, settings=settings)
    assert copies == []
    monkeypatch.undo()
    expected = adapter.generate(batch, max_new_tokens=MAX_NEW).tolist()
    (eos,) = settings.eos_token_ids
    for row, reference in zip(tokens, expected, strict=True):
        # generate() fills a finished row with padding up to the longest reply.
        end = reference.index(eos) + 1 if eos in reference else len(reference)
        assert row == reference[:end]
    assert len({len(row) for row in tokens}) > 1, "rows leave the batch at different steps"


@pytest.mark.parametrize("room", [0, 1])
def test_a_step_past_the_room_grows_the_buffers(room):
    layer = kv_cache.ReservedLayer(room=room)
    keys = torch.ones(1, 1, 2, 3)
    layer.update(keys, keys)
    for _ in range(3):
        layer.update(keys[:, :, :1], keys[:, :, :1])
    assert layer.get_seq_length() == 5 and torch.equal(layer.keys, torch.ones(1, 1, 5, 3))
