"""Several batches prefilled one by one and decoded together keep the tokens of decoding each
row alone (float32), for every family, with per-row keep masks and with drafts; a cache that is
not one plain tensor per layer (sliding windows) decodes each slice on its own instead."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import DynamicCache, MistralConfig

from culture_neurons.data.split import split_rows
from culture_neurons.inference import decoding
from culture_neurons.inference.decoding import (
    DecodeStats,
    GreedySettings,
    capture_prompts,
    greedy_decode,
)
from culture_neurons.inference.engine import answer_masked, prompt_items, reference_answers
from culture_neurons.models import apply_keep_masks
from tests.cvqa_fixture import prepare_fixture

pytest_plugins = ["tests.tiny_models"]
MAX_NEW = 8


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> pd.DataFrame:
    out = prepare_fixture(tmp_path_factory.mktemp("cvqa"))
    return split_rows(pd.read_parquet(out / "items.parquet"), "evaluation").head(6)


def keep_banks(adapter, n: int, seed: int, off: float = 0.3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (n, adapter.n_layers, adapter.n_neurons)
    return (torch.rand(shape, generator=generator) > off).float()


def varied(evaluation: pd.DataFrame) -> pd.DataFrame:
    """The items with questions of different lengths, so slices pad to different widths."""
    questions = [q + " Please answer." * i for i, q in enumerate(evaluation["question"])]
    return evaluation.assign(question=questions)


def spy_on_merges(monkeypatch) -> list[int]:
    """The row count of every merged decode batch."""
    merged: list[int] = []
    real = decoding._merge

    def merge(parts, **kwargs):
        merged.append(sum(len(part.active) for part in parts))
        return real(parts, **kwargs)

    monkeypatch.setattr(decoding, "_merge", merge)
    return merged


def masked_decode(adapter, prompts, keep, index, **kwargs) -> list[list[int]]:
    with apply_keep_masks(adapter.act_fn_modules(), keep, index) as masks:
        return greedy_decode(adapter, prompts, max_new_tokens=MAX_NEW,
                             settings=GreedySettings.from_model(adapter.model),
                             select_rows=masks.select_rows, **kwargs)  # fmt: skip


def test_slices_decoded_together_keep_each_rows_tokens(tiny_adapter, evaluation,
                                                       one_torch_thread, monkeypatch):  # fmt: skip
    prompts = capture_prompts(
        tiny_adapter, tiny_adapter.build_batch(prompt_items(varied(evaluation)))
    )
    assert len({p.length for p in prompts}) > 1, "slices of different widths are the point"
    keep = keep_banks(tiny_adapter, 3, seed=4)
    rows = [prompts[i % len(prompts)] for i in range(9)]
    index = torch.tensor([i % 3 for i in range(9)])
    alone = [masked_decode(tiny_adapter, [p], keep, index[i : i + 1])[0]
             for i, p in enumerate(rows)]  # fmt: skip
    merged = spy_on_merges(monkeypatch)
    stats = DecodeStats()
    together = masked_decode(tiny_adapter, rows, keep, index, prefill_rows=2, stats=stats)
    assert together == alone
    assert merged == [9]  # five prefills, one decode batch
    assert stats.forwards == 5 + max(len(t) for t in alone) - 1
    # Drafts (here each row's own answer cut short) are checked slice by slice, decoded together.
    drafts = [t[:3] for t in alone]
    assert masked_decode(tiny_adapter, rows, keep, index, prefill_rows=4, drafts=drafts) == alone
    # Rows their drafts finish are not merged: with every row's whole answer, nothing is left.
    merged.clear()
    stats = DecodeStats()
    assert masked_decode(tiny_adapter, rows, keep, index, prefill_rows=4, drafts=alone,
                         stats=stats) == alone  # fmt: skip
    assert merged == [] and stats.forwards == 3


def test_a_merged_step_computes_what_one_batch_does(load_tiny, evaluation, one_torch_thread):
    """The tiny models' argmax hardly depends on early context, so compare the hidden states
    of the first decode step: merged slices against the same rows prefilled as one batch."""
    adapter = load_tiny("qwen2_5_vl")
    prompts = capture_prompts(adapter, adapter.build_batch(prompt_items(varied(evaluation))))
    settings = GreedySettings(eos_token_ids=())
    steps: list[torch.Tensor] = []

    def keep_step(module, args, kwargs, output):
        if kwargs["inputs_embeds"].shape[1] == 1:
            steps.append(output.last_hidden_state[:, -1].clone())

    stack = decoding.decoder_stack(adapter)
    handle = stack.register_forward_hook(keep_step, with_kwargs=True)
    try:
        one = greedy_decode(adapter, prompts, max_new_tokens=2, settings=settings)
        merged = greedy_decode(adapter, prompts, max_new_tokens=2, settings=settings,
                               prefill_rows=2)  # fmt: skip
    finally:
        handle.remove()
    assert merged == one and len(steps) == 2
    torch.testing.assert_close(steps[1], steps[0], rtol=1e-4, atol=1e-5)


def test_the_engine_decodes_batches_together_without_changing_answers(
    load_tiny, evaluation, one_torch_thread, monkeypatch
):
    adapter = load_tiny("qwen2_5_vl")
    evaluation = varied(evaluation)
    keep = keep_banks(adapter, 2, seed=5)
    merged = spy_on_merges(monkeypatch)
    grouped = answer_masked(adapter, evaluation, keep, batch_size=2, max_new_tokens=MAX_NEW,
                            decode_batches=3, drafts=False)  # fmt: skip
    assert merged == [6, 6]  # 12 pairs: two groups of three batches of 2
    merged.clear()
    single = answer_masked(adapter, evaluation, keep, batch_size=2, max_new_tokens=MAX_NEW,
                           decode_batches=1, drafts=False)  # fmt: skip
    assert merged == []
    for a, b in zip(grouped, single, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert grouped[1]["output"].tolist() == reference_answers(
        adapter, evaluation, max_new_tokens=MAX_NEW, keep=keep[1:2]
    )
    with pytest.raises(ValueError, match="decode_batches must be at least 1"):
        answer_masked(adapter, evaluation, keep, batch_size=2, max_new_tokens=2,
                      decode_batches=0)  # fmt: skip


def test_an_unmergeable_cache_decodes_each_slice_alone(load_tiny, evaluation, one_torch_thread,
                                                       monkeypatch):  # fmt: skip
    adapter = load_tiny("llava_next")
    prompts = capture_prompts(adapter, adapter.build_batch(prompt_items(varied(evaluation))))
    settings = GreedySettings.from_model(adapter.model)
    truth = greedy_decode(adapter, prompts, max_new_tokens=MAX_NEW, settings=settings)
    monkeypatch.setattr(decoding, "_mergeable", lambda parts: False)
    merged = spy_on_merges(monkeypatch)
    stats = DecodeStats()
    sliced = greedy_decode(adapter, prompts, max_new_tokens=MAX_NEW, settings=settings,
                           prefill_rows=4, stats=stats)  # fmt: skip
    assert sliced == truth and merged == []
    assert stats.forwards > 2 + max(len(t) for t in truth) - 1  # two decode loops, not one


def test_sliding_window_layers_are_not_merged():
    config = MistralConfig(
        num_hidden_layers=2, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_key_value_heads=1, sliding_window=4,
    )  # fmt: skip
    keys = torch.zeros(1, 1, 3, 8)
    sliding = DynamicCache(config=config)
    plain = DynamicCache()
    for layer in range(2):
        sliding.update(keys, keys, layer)
        plain.update(keys, keys, layer)

    def part(cache):
        return decoding._Rows(cache, torch.arange(1), torch.zeros(1, dtype=torch.long),
                              torch.ones(1, dtype=torch.bool), torch.ones(1, 3, dtype=torch.long),
                              torch.zeros(1, 1, dtype=torch.long))  # fmt: skip

    assert decoding._mergeable([part(plain), part(plain)])
    assert not decoding._mergeable([part(plain), part(sliding)])


def test_prefill_rows_must_be_positive(load_tiny, evaluation):
    adapter = load_tiny("qwen2_5_vl")
    prompts = capture_prompts(adapter, adapter.build_batch(prompt_items(evaluation.head(1))))
    with pytest.raises(ValueError, match="prefill_rows must be at least 1"):
        greedy_decode(adapter, prompts, max_new_tokens=2, settings=GreedySettings(()),
                      prefill_rows=0)  # fmt: skip


def test_a_reserved_cache_layer_holds_what_a_dynamic_one_does():
    """The prefill, appends within and beyond its room, and rows leaving, as `DynamicLayer`
    would have it."""
    from transformers.cache_utils import DynamicLayer

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 2, 4, 5, generator=generator)
    plain = DynamicLayer()
    plain.update(start, -start)
    reserved = decoding._ReservedLayer(room=2)
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
