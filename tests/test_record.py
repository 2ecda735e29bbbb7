"""record on a tiny Qwen2.5-VL: resumable store, recording leaves answers alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from culture_neurons.data.split import split_rows
from culture_neurons.inference.engine import answer_all, answer_batch, prompt_items
from culture_neurons.models.hooks import hooks_attached
from culture_neurons.record.chunked_store import partial_path
from culture_neurons.record.recording import (
    baseline_table_from_store,
    record_identification,
    store_attrs,
)
from culture_neurons.record.store import StoreMismatchError
from tests.cvqa_fixture import prepare_fixture

pytest_plugins = ["tests.tiny_models"]


@pytest.fixture(scope="module")
def identification(tmp_path_factory) -> pd.DataFrame:
    out = prepare_fixture(tmp_path_factory.mktemp("cvqa"))
    return split_rows(pd.read_parquet(out / "items.parquet"), "identification")


def run(adapter, rows, path, **kwargs):
    return record_identification(
        adapter, rows, path, batch_size=2, chunk_batches=2, max_new_tokens=4,
        attrs=store_attrs(adapter, "fp", "tiny"), **kwargs,
    )  # fmt: skip


def arrays(path):
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in group.array_keys()}, dict(group.attrs)


def test_killed_and_resumed_run_equals_uninterrupted(
    load_tiny, identification, tmp_path, one_torch_thread
):
    adapter = load_tiny("qwen2_5_vl")
    rows = identification.head(11)  # 3 chunks of 4, the last one short
    whole, _ = run(adapter, rows, tmp_path / "whole.zarr")
    assert whole is not None and whole.complete

    stopped, _ = run(adapter, rows, tmp_path / "resumed.zarr", stop_after_chunks=1)
    assert stopped is None
    assert partial_path(tmp_path / "resumed.zarr").exists()
    assert not (tmp_path / "resumed.zarr").exists()
    resumed, _ = run(adapter, rows, tmp_path / "resumed.zarr")
    assert not partial_path(tmp_path / "resumed.zarr").exists()

    (a, attrs_a), (b, attrs_b) = arrays(tmp_path / "whole.zarr"), arrays(tmp_path / "resumed.zarr")
    assert attrs_a == attrs_b
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert a["fire_count"].shape == (11, adapter.n_layers, adapter.n_neurons)
    assert (a["tokens"] > 0).all()
    assert (a["fire_count"] <= a["tokens"][:, None, None]).all()
    # The mean intervention's statistic is recorded for every chunk, resumed or not.
    assert a["act_sum"].shape == (3, adapter.n_layers, adapter.n_neurons)
    assert not np.isnan(a["act_sum"]).any() and (a["act_sum"] != 0).any()
    assert attrs_a["statistics"] == ["fire_count", "pos_sum", "act_sum"]


def test_recording_does_not_change_answers(tiny_adapter, varied_evaluation, tmp_path,
                                           one_torch_thread):  # fmt: skip
    """The recorded run's answers equal the plain baseline's, on left-padded batches (the
    items' prompts all differ in token count)."""
    rows = varied_evaluation
    store, timings = run(tiny_adapter, rows, tmp_path / "s.zarr")
    recorded = baseline_table_from_store(store, rows)
    plain = answer_all(tiny_adapter, rows, batch_size=2, max_new_tokens=4, desc="plain")
    pd.testing.assert_frame_equal(recorded, plain)
    assert set(recorded["correct"]) <= {0, 1}
    assert timings["model_s"] > 0
    assert len(set(store.group["tokens"][:].tolist())) == len(rows)  # padded batches


def test_retry_with_half_the_batch_resumes_the_partial_store(
    load_tiny, identification, tmp_path, one_torch_thread
):
    # The workflow halves the batch on a retry and fixes the chunk size (get_chunk_items), so a
    # job that failed after some chunks resumes instead of being refused or starting over.
    adapter = load_tiny("qwen2_5_vl")
    rows = identification.head(11)
    path = tmp_path / "retried.zarr"
    stopped, _ = run(adapter, rows, path, stop_after_chunks=1, chunk_items=4)
    assert stopped is None
    with pytest.raises(StoreMismatchError, match="chunk_items"):
        record_identification(
            adapter, rows, path, batch_size=1, chunk_batches=2, max_new_tokens=4,
            attrs=store_attrs(adapter, "fp", "tiny"),
        )  # fmt: skip
    retried, _ = record_identification(
        adapter, rows, path, batch_size=1, chunk_batches=2, chunk_items=4, max_new_tokens=4,
        attrs=store_attrs(adapter, "fp", "tiny"),
    )  # fmt: skip
    assert retried is not None and retried.complete
    whole, _ = run(adapter, rows, tmp_path / "whole.zarr")
    (a, _), (b, _) = arrays(tmp_path / "whole.zarr"), arrays(path)
    assert a["tokens"].tolist() == b["tokens"].tolist()
    np.testing.assert_array_equal(b["fire_count"], a["fire_count"])
    np.testing.assert_allclose(b["pos_sum"], a["pos_sum"], rtol=1e-4, atol=1e-4)


# Spelled out here rather than taken from the adapter: the reference's valid tokens are the
# prompt's attended positions minus the chat markers (image tokens count, token scope "all").
MARKERS = {
    "qwen2_5_vl": ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                   "<|endoftext|>"],
    "llava_next": ["<s>", "</s>", "<unk>", "<pad>", "[INST]", "[/INST]"],
    "pangea": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
}  # fmt: skip


def full_capture_stats(adapter, rows):
    """Reference statistics: a plain forward of the same batch with every decoder act_fn output
    kept whole ([B, T, D] per layer), reduced by hand over the prompt's valid tokens."""
    batch = adapter.build_batch(prompt_items(rows))
    modules = adapter.act_fn_modules()
    outputs = [None] * len(modules)

    def keep(layer):
        def hook(module, args, output):
            assert outputs[layer] is None, "one forward: the prompt"
            outputs[layer] = output.detach().clone()

        return hook

    extra = {}
    if adapter.family != "qwen2_5_vl":  # Qwen2.5-VL derives its multimodal RoPE ids itself
        # Each row counts from 0 at its first token, as generate() numbers a left-padded row
        # (the decoder alone would count over the padding too).
        extra["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with hooks_attached([(m, keep(i)) for i, m in enumerate(modules)]), torch.inference_mode():
        adapter.model(**batch, **extra)
    markers = torch.tensor(adapter.tokenizer.convert_tokens_to_ids(MARKERS[adapter.family]))
    valid = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], markers)
    acts = torch.stack(outputs, dim=1).double()  # [B, L, T, D]
    firing = (acts > 0) & valid[:, None, :, None]
    fire_count = firing.sum(dim=2).int().numpy()
    pos_sum = torch.where(firing, acts, 0.0).sum(dim=2).numpy()
    act_sum = torch.where(valid[:, None, :, None], acts, 0.0).sum(dim=(0, 2)).numpy()
    return fire_count, pos_sum, valid.sum(dim=1).numpy(), batch, act_sum


def test_production_recording_equals_a_full_capture_reference(
    tiny_adapter, varied_evaluation, one_torch_thread
):
    # answer_batch(record=True) is what record_identification stores: hooks that reduce the fast
    # path's prefill on the fly. The reference keeps every activation of a plain forward instead.
    # Every prompt has its own token count (text and image size), so the batch is left-padded.
    adapter, rows = tiny_adapter, varied_evaluation
    answers = answer_batch(adapter, rows, max_new_tokens=4, record=True)
    fire_count, pos_sum, tokens, batch, act_sum = full_capture_stats(adapter, rows)

    shape = (len(rows), adapter.n_layers, adapter.n_neurons)
    assert answers.fire_count.shape == answers.pos_sum.shape == shape
    assert answers.tokens.tolist() == tokens.tolist()
    np.testing.assert_array_equal(answers.fire_count, fire_count)
    np.testing.assert_allclose(answers.pos_sum, pos_sum, rtol=1e-5, atol=1e-5)
    assert answers.act_sum.shape == shape[1:]
    np.testing.assert_allclose(answers.act_sum, act_sum, rtol=1e-5, atol=1e-4)
    # Not vacuous: the batch is padded, and neurons fire on some valid tokens but not on all.
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert len(set(lengths)) == len(lengths)
    assert (fire_count > 0).any() and (fire_count < tokens[:, None, None]).any()
