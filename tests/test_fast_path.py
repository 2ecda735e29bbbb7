"""The engine's fast path answers exactly as `generate()` one item at a time, one mask at a time.

The fast path captures each item's decoder inputs once, expands them over masks, sorts by length,
pads, drops a row at end of sequence and halves its batch on out-of-memory; none of that may
change an answer or the order of the output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from culture_neurons import cli
from culture_neurons.data.split import split_rows
from culture_neurons.inference import batch_memory, engine
from culture_neurons.inference.decoding import OutOfMemoryError
from culture_neurons.inference.engine import answer_masked, reference_answers
from tests.cvqa_fixture import prepare_fixture
from tests.fake_memory import FakeMemory

pytest_plugins = ["tests.tiny_models"]

GPU0 = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> pd.DataFrame:
    out = prepare_fixture(tmp_path_factory.mktemp("cvqa"))
    return split_rows(pd.read_parquet(out / "items.parquet"), "evaluation").head(6)


def _random_keep(adapter, n_masks: int, seed: int, off: float = 0.3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (n_masks, adapter.n_layers, adapter.n_neurons)
    return (torch.rand(shape, generator=generator) > off).float()


def test_fast_path_equals_generate_per_item_and_mask(tiny_adapter, evaluation, one_torch_thread):
    keep = _random_keep(tiny_adapter, 3, seed=1)
    fast = answer_masked(tiny_adapter, evaluation, keep, batch_size=5, max_new_tokens=10)
    for mask in range(3):
        expected = reference_answers(
            tiny_adapter, evaluation, max_new_tokens=10, keep=keep[mask : mask + 1]
        )
        assert fast[mask]["output"].tolist() == expected
        assert fast[mask]["item_id"].tolist() == evaluation["item_id"].tolist()


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


@pytest.mark.parametrize("window_rows", [1, 4, 1000])
def test_length_sorting_windows_do_not_change_answers_or_order(
    load_tiny, evaluation, one_torch_thread, window_rows
):
    adapter = load_tiny("llava_next")
    keep = _random_keep(adapter, 2, seed=2)
    baseline = answer_masked(adapter, evaluation, keep, batch_size=1, max_new_tokens=6)
    windowed = answer_masked(
        adapter, evaluation, keep, batch_size=3, max_new_tokens=6, window_rows=window_rows
    )
    for alone, together in zip(baseline, windowed, strict=True):
        pd.testing.assert_frame_equal(alone, together)


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
