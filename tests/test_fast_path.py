"""The engine's fast path answers exactly as `generate()` one item at a time, one mask at a time.

The fast path captures each item's decoder inputs once, expands them over masks, sorts by length,
pads, drops a row at end of sequence and halves its batch on out-of-memory; none of that may
change an answer or the order of the output. The items' prompts all differ in token count (text
and image size), so every batch of more than one item is left-padded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from culture_neurons import cli
from culture_neurons.inference import batch_memory, decoding, engine
from culture_neurons.inference.decoding import (
    DecodeStats,
    GreedySettings,
    OutOfMemoryError,
    capture_prompts,
    greedy_decode,
)
from culture_neurons.inference.engine import answer_masked, model_items, reference_answers
from tests.fake_memory import FakeMemory
from tests.varied_inputs import end_of_sequence, frequent_reply_token

pytest_plugins = ["tests.tiny_models"]

GPU0 = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def evaluation(varied_evaluation) -> pd.DataFrame:
    return varied_evaluation


def prompt_lengths(adapter, rows: pd.DataFrame) -> list[int]:
    """Each row's prompt token count, as `capture_prompts` keeps it."""
    batch = adapter.build_batch(model_items(adapter, rows))
    return [prompt.length for prompt in capture_prompts(adapter, batch)]


def _random_keep(adapter, n_masks: int, seed: int, off: float = 0.3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (n_masks, adapter.n_layers, adapter.n_neurons)
    return (torch.rand(shape, generator=generator) > off).float()


def test_fast_path_equals_generate_per_item_and_mask(tiny_adapter, evaluation, one_torch_thread):
    # Padded batches: no two prompts have the same number of tokens.
    assert len(set(prompt_lengths(tiny_adapter, evaluation))) == len(evaluation)
    keep = _random_keep(tiny_adapter, 3, seed=1)
    fast = answer_masked(tiny_adapter, evaluation, keep, batch_size=5, max_new_tokens=10)
    for mask in range(3):
        expected = reference_answers(
            tiny_adapter, evaluation, max_new_tokens=10, keep=keep[mask : mask + 1]
        )
        assert fast[mask]["output"].tolist() == expected
        assert fast[mask]["item_id"].tolist() == evaluation["item_id"].tolist()


def test_replies_ending_at_different_lengths_equal_generate(tiny_adapter, evaluation,
                                                            one_torch_thread):  # fmt: skip
    """Rows leave the batch (and the KV cache) at different steps: a token the model often
    writes is made the end of sequence, so replies end early, late, or run to the limit."""
    keep = _random_keep(tiny_adapter, 2, seed=6, off=0.1)
    ending = frequent_reply_token(tiny_adapter, evaluation, max_new_tokens=10)
    with end_of_sequence(tiny_adapter, ending):
        fast = answer_masked(tiny_adapter, evaluation, keep, batch_size=4, max_new_tokens=10)
        for mask in range(2):
            expected = reference_answers(
                tiny_adapter, evaluation, max_new_tokens=10, keep=keep[mask : mask + 1]
            )
            assert fast[mask]["output"].tolist() == expected
    lengths = {len(tiny_adapter.tokenizer(o)["input_ids"]) for t in fast for o in t["output"]}
    assert len(lengths) > 2, "replies of several lengths"


def test_captured_prompts_of_a_padded_batch_equal_each_item_alone(tiny_adapter, evaluation,
                                                                  one_torch_thread):  # fmt: skip
    """Per row, the padding removed: the same embeddings, input ids and position ids (the
    multimodal RoPE's components for Qwen2.5-VL, one row of ids for LLaVA-NeXT and Pangea) as
    the item gets in a batch of its own."""
    items = model_items(tiny_adapter, evaluation)
    batch = tiny_adapter.build_batch(items)
    assert not batch["attention_mask"].bool().all()  # padded
    together = capture_prompts(tiny_adapter, batch)
    for item, prompt in zip(items, together, strict=True):
        (alone,) = capture_prompts(tiny_adapter, tiny_adapter.build_batch([item]))
        assert prompt.positions.shape == alone.positions.shape
        assert torch.equal(prompt.positions, alone.positions)
        assert torch.equal(prompt.input_ids, alone.input_ids)
        torch.testing.assert_close(prompt.embeds, alone.embeds, rtol=1e-5, atol=1e-5)


def test_prompts_without_position_ids_count_from_zero(load_tiny, evaluation, one_torch_thread):
    """A decoder that `generate()` calls without position ids counts from 0 over each padded
    row; the captured prompt counts from 0 over the item alone, and decodes as generate() does."""
    adapter = load_tiny("llava_next")
    stack = decoding.decoder_stack(adapter)

    def drop_positions(module, args, kwargs):
        kwargs.pop("position_ids", None)
        return args, kwargs

    batch = adapter.build_batch(model_items(adapter, evaluation))
    handle = stack.register_forward_pre_hook(drop_positions, with_kwargs=True)
    try:
        prompts = capture_prompts(adapter, batch)
    finally:
        handle.remove()
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert len(set(lengths)) == len(lengths)
    for prompt, length in zip(prompts, lengths, strict=True):
        assert prompt.positions.tolist() == [list(range(length))]
    settings = GreedySettings.from_model(adapter.model)
    tokens = greedy_decode(adapter, prompts, max_new_tokens=6, settings=settings)
    texts = engine.decode_texts(adapter, tokens)
    assert texts == reference_answers(adapter, evaluation, max_new_tokens=6)


def test_fast_path_mixes_intervention_kinds_as_each_alone(tiny_adapter, evaluation,
                                                         one_torch_thread):  # fmt: skip
    """Zero, mean and scale banks as rows of the same batches answer as `generate()` does under
    each bank alone."""
    from culture_neurons.ablation.conditions import banks, parse_intervention

    generator = torch.Generator().manual_seed(3)
    shape = (1, tiny_adapter.n_layers, tiny_adapter.n_neurons)
    selected = (torch.rand(shape, generator=generator) < 0.4).numpy()
    means = (3 * torch.randn(shape[1:], generator=generator)).numpy()
    kinds = [{"kind": "zero"}, {"kind": "mean"}, {"kind": "scale", "factor": 4.0}]
    parts = [banks(selected, parse_intervention(kind), means) for kind in kinds]
    factor = torch.from_numpy(np.concatenate([f for f, _ in parts]))
    offset = torch.from_numpy(
        np.concatenate([np.zeros_like(f) if o is None else o for f, o in parts])
    )
    fast = answer_masked(tiny_adapter, evaluation, factor, offset=offset, batch_size=5,
                         max_new_tokens=10)  # fmt: skip
    outputs = []
    for m in range(len(kinds)):
        expected = reference_answers(tiny_adapter, evaluation, max_new_tokens=10,
                                     keep=factor[m : m + 1], offset=offset[m : m + 1])  # fmt: skip
        assert fast[m]["output"].tolist() == expected
        outputs.append(expected)
    assert len({tuple(o) for o in outputs}) > 1, "the kinds change answers differently"


def test_rows_stop_at_their_own_end_of_sequence(load_tiny, evaluation, one_torch_thread):
    adapter = load_tiny("qwen2_5_vl")
    # The tiny Qwen ends some answers within a few tokens and runs others to the limit, so one
    # batch holds rows that leave early and rows that do not.
    fast = answer_masked(adapter, evaluation, None, batch_size=6, max_new_tokens=12)[0]
    expected = reference_answers(adapter, evaluation, max_new_tokens=12)
    lengths = {len(adapter.tokenizer(text)["input_ids"]) for text in expected}
    assert len(lengths) > 1
    assert fast["output"].tolist() == expected


def test_repetition_penalty_is_applied_as_generate_does(load_tiny, evaluation, one_torch_thread):
    adapter = load_tiny("pangea")
    adapter.model.generation_config.repetition_penalty = 1.8
    try:
        fast = answer_masked(adapter, evaluation, None, batch_size=4, max_new_tokens=10)[0]
        expected = reference_answers(adapter, evaluation, max_new_tokens=10)
    finally:
        adapter.model.generation_config.repetition_penalty = 1.0
    plain = reference_answers(adapter, evaluation, max_new_tokens=10)
    assert expected != plain  # the penalty changes something, so the comparison tells
    assert fast["output"].tolist() == expected


@pytest.mark.parametrize("drafts", [False, True])
@pytest.mark.parametrize("window_rows", [1, 6, 1000])
def test_length_sorting_windows_do_not_change_answers_or_order(
    load_tiny, evaluation, one_torch_thread, window_rows, drafts
):
    """Windows of 1, 2 and all 6 items, each sorted by prompt length (which reorders them: the
    items are not in length order, not even pairwise), answer as items one at a time do, in the
    order given; the drafts, decoded in length order, go to their own items."""
    adapter = load_tiny("llava_next")
    lengths = prompt_lengths(adapter, evaluation)
    assert len(set(lengths)) == len(lengths)
    assert any(a > b for a, b in zip(lengths[::2], lengths[1::2], strict=True))  # pairs reorder
    keep = torch.cat([torch.ones(1, adapter.n_layers, adapter.n_neurons),
                      _random_keep(adapter, 2, seed=2)])  # fmt: skip
    baseline = answer_masked(adapter, evaluation, keep, batch_size=1, max_new_tokens=6,
                             window_rows=1, drafts=False)  # fmt: skip
    stats = DecodeStats()
    windowed = answer_masked(
        adapter, evaluation, keep, batch_size=3, max_new_tokens=6, window_rows=window_rows,
        drafts=drafts, stats=stats,
    )  # fmt: skip
    for alone, together in zip(baseline, windowed, strict=True):
        pd.testing.assert_frame_equal(alone, together)
    if drafts:
        assert stats.drafted == len(evaluation) * len(keep)
        # A row is finished by its draft exactly when its answer is its item's unmasked one (the
        # no-op mask's): a draft handed to another item would be rejected.
        unmasked = windowed[0]["output"]
        agreeing = sum(int((table["output"] == unmasked).sum()) for table in windowed)
        assert stats.accepted == agreeing


def test_out_of_memory_halves_the_batch_and_keeps_every_answer(
    load_tiny, evaluation, one_torch_thread, monkeypatch
):
    adapter = load_tiny("qwen2_5_vl")
    keep = _random_keep(adapter, 2, seed=3)
    expected = answer_masked(adapter, evaluation, keep, batch_size=4, max_new_tokens=6)
    real_decode = engine.greedy_decode
    sizes: list[int] = []

    def decode_with_small_memory(adapter, prompts, **kwargs):
        sizes.append(len(prompts))
        if len(prompts) > 3:  # pretend a batch of more than 3 rows does not fit
            raise OutOfMemoryError("CUDA out of memory (simulated)")
        return real_decode(adapter, prompts, **kwargs)

    monkeypatch.setattr(engine, "greedy_decode", decode_with_small_memory)
    got = answer_masked(adapter, evaluation, keep, batch_size=12, max_new_tokens=6, drafts=True)
    # The unmasked drafts come first (all 6 items), are halved once, and the masked pairs keep
    # the halved size.
    assert sizes[:2] == [6, 3]
    assert max(sizes[2:]) <= 3
    sizes.clear()
    got_plain = answer_masked(adapter, evaluation, keep, batch_size=12, max_new_tokens=6,
                              drafts=False)  # fmt: skip
    assert sizes[:3] == [12, 6, 3]  # halved twice, then it fits
    assert max(sizes[3:]) <= 3
    for a, b in zip(expected, got_plain, strict=True):
        pd.testing.assert_frame_equal(a, b)
    for a, b in zip(expected, got, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_out_of_memory_at_batch_one_is_raised(load_tiny, evaluation, monkeypatch):
    adapter = load_tiny("qwen2_5_vl")

    def never_fits(adapter, prompts, **kwargs):
        raise OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine, "greedy_decode", never_fits)
    with pytest.raises(OutOfMemoryError):
        answer_masked(adapter, evaluation.head(1), None, batch_size=2, max_new_tokens=2)


def _run_on_fake_gpu(monkeypatch, memory: FakeMemory, before_decode) -> None:
    """The engine sees ``memory`` as its model's GPU monitor, and calls
    ``before_decode(prompts, max_new_tokens)`` before every batch it decodes (for real)."""
    monkeypatch.setattr(batch_memory, "model_memory", lambda model: memory)
    real_decode = engine.greedy_decode

    def decode(adapter, prompts, **kwargs):
        before_decode(prompts, kwargs["max_new_tokens"])
        return real_decode(adapter, prompts, **kwargs)

    monkeypatch.setattr(engine, "greedy_decode", decode)


def test_the_engine_grows_its_batches_to_free_memory_without_changing_answers(
    load_tiny,
    evaluation,
    one_torch_thread,
    monkeypatch,
) -> None:
    adapter = load_tiny("qwen2_5_vl")
    keep = _random_keep(adapter, 3, seed=4)
    expected = answer_masked(adapter, evaluation, keep, batch_size=2, max_new_tokens=5)

    # Room for 0.85 * 2e6 / (1000 * tokens) rows: a handful at the tiny model's prompt lengths.
    memory = FakeMemory({GPU0: 2_000_000}, {GPU0: 1000})
    batches: list[tuple[int, int]] = []

    def account(prompts, max_new_tokens):
        memory.batch = (len(prompts), max(p.length for p in prompts) + max_new_tokens)
        batches.append(memory.batch)

    _run_on_fake_gpu(monkeypatch, memory, account)
    got = answer_masked(
        adapter, evaluation, keep, batch_size=2, max_new_tokens=5, max_batch_size=64
    )
    assert memory.starts == len(batches)
    assert batches[0][0] == 2  # measured at the configured size first
    assert max(rows for rows, _ in batches[1:]) > 2  # then grown
    for rows, tokens in batches[1:]:
        assert rows <= max(1, int(0.85 * 2_000_000 // (1000 * tokens)))
    for a, b in zip(expected, got, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_an_out_of_memory_error_lowers_the_ceiling_of_a_growing_run(
    load_tiny,
    evaluation,
    one_torch_thread,
    monkeypatch,
) -> None:
    adapter = load_tiny("qwen2_5_vl")
    keep = _random_keep(adapter, 3, seed=5)
    expected = answer_masked(adapter, evaluation, keep, batch_size=2, max_new_tokens=4)
    memory = FakeMemory({GPU0: 10**12}, {GPU0: 1})  # plenty, as far as the monitor can tell
    sizes: list[int] = []

    def fit_five_rows(prompts, max_new_tokens):
        sizes.append(len(prompts))
        if len(prompts) > 5:  # what the monitor did not foresee
            raise OutOfMemoryError("CUDA out of memory (simulated)")
        memory.batch = (len(prompts), max(p.length for p in prompts))

    _run_on_fake_gpu(monkeypatch, memory, fit_five_rows)
    got = answer_masked(
        adapter, evaluation, keep, batch_size=2, max_new_tokens=4, max_batch_size=16,
        drafts=False,  # the sizing of masked pairs alone (drafts share it: see above)
    )  # fmt: skip
    assert sizes[:3] == [2, 16, 8]  # measured, grown to the ceiling, halved...
    assert sizes[3] == 4 and max(sizes[3:]) <= 4  # ...until it fits, and it stays below
    for a, b in zip(expected, got, strict=True):
        pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("command", ["record", "ablate"])
def test_cli_rejects_a_ceiling_below_the_batch_size_before_reading_anything(
    command, tmp_path, caplog
):
    missing = str(tmp_path / "missing")
    common = ["--items", missing, "--model", "{}", "--batch-size", "8", "--max-batch-size", "4"]
    extra = {
        "record": ["--data-report", missing, "--model-name", "m", "--store", missing,
                   "--baseline-dir", missing],
        "ablate": ["--masks", missing, "--out-dir", missing],
    }[command]  # fmt: skip
    assert cli.main([command, *common, *extra]) == 2
    assert "--max-batch-size 4 is below --batch-size 8" in caplog.text
    assert not any(tmp_path.iterdir())
