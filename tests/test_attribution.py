"""Attribution scores (gradient x activation on act_fn) against independent references, and the
resumable attribution store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from culture_neurons.data.split import split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import prompt_items
from culture_neurons.models.hooks import hooks_attached
from culture_neurons.models.tiny import TINY_FAMILIES
from culture_neurons.record.attribution import attribution_scores
from culture_neurons.record.attribution_stage import (
    attribution_rows,
    gold_replies,
    record_attribution,
)
from culture_neurons.record.attribution_store import (
    aggregate_attribution,
    create_or_resume,
    open_attribution_store,
)
from culture_neurons.record.store import CorruptStoreError, StoreMismatchError
from tests.cvqa_fixture import prepare_fixture

pytest_plugins = ["tests.tiny_models"]


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> pd.DataFrame:
    out = prepare_fixture(tmp_path_factory.mktemp("cvqa"))
    return pd.read_parquet(out / "items.parquet")


@pytest.fixture(scope="module")
def identification(items) -> pd.DataFrame:
    return split_rows(items, "identification")


def probe_reference(adapter, item: dict, reply: str) -> tuple[np.ndarray, float, np.ndarray]:
    """One item alone (no padding), written independently of the implementation: an additive
    zero probe on every act_fn output gives d p / d output; p(gold) from an explicit loop over
    the reply's tokens. Returns the scores [L, D], p(gold) and the products [L, T-1, D]."""
    batch, n_gold = adapter.build_teacher_forced_batch([item], [reply])
    n = int(n_gold[0])
    probes, outputs = [], []

    def hook(module, args, output):
        probe = torch.zeros_like(output, requires_grad=True)
        probes.append(probe)
        outputs.append(output.detach())
        return output + probe

    pairs = [(module, hook) for module in adapter.act_fn_modules()]
    with torch.enable_grad(), hooks_attached(pairs):
        logits = adapter.model(**batch, use_cache=False).logits[0]
        ids = batch["input_ids"][0]
        length = ids.shape[0]
        log_p = [
            torch.log_softmax(logits[length - n - 1 + j].double(), -1)[ids[length - n + j]]
            for j in range(n)
        ]
        p = torch.exp(torch.stack(log_p).mean())
        grads = torch.autograd.grad(p, probes)
    products = torch.stack([(a * g)[0, :-1].double() for a, g in zip(outputs, grads, strict=True)])
    p = float(p.detach())
    return (p * products.amax(dim=1)).numpy(), p, products.numpy()


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batched_scores_equal_the_probe_reference(family, load_tiny, identification):
    adapter = load_tiny(family, dtype="float64")
    rows = identification.head(3)
    items, replies = prompt_items(rows), gold_replies(rows)
    scores, p_gold = attribution_scores(adapter, items, replies)
    assert scores.shape == (3, adapter.n_layers, adapter.n_neurons)
    for b in range(3):
        ref, p_ref, _ = probe_reference(adapter, items[b], replies[b])
        assert float(p_gold[b]) == pytest.approx(p_ref, rel=1e-5)
        # The batch is left-padded to its longest row: padding must not change a row's score.
        np.testing.assert_allclose(scores[b].numpy(), ref, rtol=1e-4, atol=1e-10)
    assert all(p.requires_grad for p in adapter.model.parameters())  # flags restored


def test_gradients_match_finite_differences(load_tiny, identification):
    adapter = load_tiny("qwen2_5_vl", dtype="float64")
    row = identification.head(1)
    item, reply = prompt_items(row)[0], gold_replies(row)[0]
    _, p0, products = probe_reference(adapter, item, reply)
    batch, n_gold = adapter.build_teacher_forced_batch([item], [reply])
    n = int(n_gold[0])
    ids = batch["input_ids"][0]

    def p_with(layer: int, neuron: int, eps: float) -> float:
        # Scale one neuron's output by (1 + eps) at every position before the last: d p / d eps
        # at 0 is the sum over those positions of output x gradient.
        def hook(module, args, output):
            factor = torch.ones_like(output)
            factor[0, :-1, neuron] += eps
            return output * factor

        act_fn = adapter.act_fn_modules()[layer]
        with torch.no_grad(), hooks_attached([(act_fn, hook)]):
            logits = adapter.model(**batch, use_cache=False).logits[0]
        length = ids.shape[0]
        log_p = [
            torch.log_softmax(logits[length - n - 1 + j], -1)[ids[length - n + j]] for j in range(n)
        ]
        return float(torch.exp(torch.stack(log_p).mean()))

    assert p_with(0, 0, 0.0) == pytest.approx(p0, rel=1e-9)
    summed = products.sum(axis=1)  # [L, D]
    layer, neuron = np.unravel_index(np.abs(summed).argmax(), summed.shape)
    # Not smaller: parts of the tiny model (rotary tables) stay float32 in a float64 run.
    eps = 1e-3
    numeric = (p_with(layer, neuron, eps) - p_with(layer, neuron, -eps)) / (2 * eps)
    assert numeric == pytest.approx(summed[layer, neuron], rel=1e-4)
    assert abs(numeric) > 0


def test_the_reply_is_the_last_tokens_of_each_row(load_tiny, identification):
    adapter = load_tiny("qwen2_5_vl")
    rows = identification.head(4)
    batch, n_gold = adapter.build_teacher_forced_batch(prompt_items(rows), gold_replies(rows))
    for b, reply in enumerate(gold_replies(rows)):
        tail = batch["input_ids"][b, -int(n_gold[b]) :]
        assert adapter.tokenizer.decode(tail).strip() == reply.strip()


def test_rows_refuse_hidden_labels_and_shared_ids(items):
    hidden = items.assign(label=-1)
    with pytest.raises(InputError, match="hidden labels"):
        attribution_rows(hidden)
    with pytest.raises(InputError, match="appears in two"):
        attribution_rows(items, control=items)
    rows = attribution_rows(items, control=items.assign(item_id="c-" + items["item_id"]))
    assert rows["task"].value_counts().to_dict() == {
        "cultural": (items["split"] == "identification").sum(),
        "control": (items["split"] == "identification").sum(),
    }


# ---------------------------------------------------------------------------- the store


def _store_rows(identification: pd.DataFrame) -> pd.DataFrame:
    control = identification.head(3).assign(item_id=lambda t: "ctl-" + t["item_id"])
    return attribution_rows(identification.head(6).assign(split="identification"), control)


def test_killed_and_resumed_attribution_equals_uninterrupted(load_tiny, identification, tmp_path):
    adapter = load_tiny("qwen2_5_vl")
    rows = _store_rows(identification)  # 9 rows: chunks of 4, 4, 1
    kwargs = {"batch_size": 2, "chunk_items": 4, "attrs": {"model": "tiny"}}
    whole = record_attribution(adapter, rows, tmp_path / "whole.zarr", **kwargs)
    path = tmp_path / "resumed.zarr"
    assert record_attribution(adapter, rows, path, stop_after_chunks=1, **kwargs) is None
    partial = zarr.open_group(str(tmp_path / "resumed.partial.zarr"), mode="r")
    assert partial["chunk_done"][:].tolist() == [True, False, False]
    resumed = record_attribution(adapter, rows, path, **kwargs)
    for name in ("score", "p_gold", "task", "culture", "item_id", "chunk_digest"):
        np.testing.assert_array_equal(whole.group[name][:], resumed.group[name][:], err_msg=name)
    with pytest.raises(StoreMismatchError, match="delete it"):
        create_or_resume(
            tmp_path / "whole.zarr", item_ids=rows["item_id"].tolist(),
            cultures=rows["culture"].tolist(), tasks=rows["task"].tolist(),
            n_layers=adapter.n_layers, n_neurons=adapter.n_neurons, chunk_items=4,
            attrs={"model": "other"},
        )  # fmt: skip


def _hand_store(path, scores, cultures, tasks, chunk_items=2):
    n, layers, neurons = scores.shape
    store = create_or_resume(
        path, item_ids=[f"i{k}" for k in range(n)], cultures=cultures, tasks=tasks,
        n_layers=layers, n_neurons=neurons, chunk_items=chunk_items, attrs={"model": "hand"},
    )  # fmt: skip
    for chunk in range(store.n_chunks):
        rows = store.chunk_slice(chunk)
        store.write_chunk(chunk, scores[rows], np.linspace(0.1, 0.9, n)[rows])
    final = path.with_name("final.zarr")
    path.rename(final)
    return open_attribution_store(final)


def test_aggregates_are_culture_means_and_clamped_control_means(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 2, 3)).astype(np.float32)
    cultures = ["A", "A", "B", "B", "B", "A", "B"]
    tasks = ["cultural"] * 5 + ["control"] * 2
    agg = aggregate_attribution(_hand_store(tmp_path / "s.zarr", scores, cultures, tasks))
    assert agg.cultures == ["A", "B"]
    np.testing.assert_allclose(agg.cultural[0], scores[[0, 1]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(agg.cultural[1], scores[[2, 3, 4]].mean(axis=0), rtol=1e-6)
    # Control items of any culture count alike; each item's scores are clamped at 0 first.
    np.testing.assert_allclose(agg.control, np.maximum(scores[[5, 6]], 0).mean(axis=0), rtol=1e-6)
    assert agg.exclusion is None
    assert agg.items["control"] == {"A": 1, "B": 1}


def test_a_corrupted_chunk_is_refused_on_read_and_recomputed_on_resume(tmp_path):
    scores = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    store = _hand_store(tmp_path / "s.zarr", scores, ["A", "B"] * 2 + ["A"], ["cultural"] * 5)
    group = zarr.open_group(str(store.path), mode="r+")
    group["score"][2] = 0.0  # chunk 1 (items 2-3) changed behind the store's back
    with pytest.raises(CorruptStoreError, match=r"chunk 1 \(items 2-3\).*checksum"):
        aggregate_attribution(open_attribution_store(store.path))
    # As a partial store, the damaged chunk is unflagged for the recording to write again.
    partial = store.path.with_name("again.partial.zarr")
    store.path.rename(partial)
    resumed = create_or_resume(
        partial, item_ids=[f"i{k}" for k in range(5)], cultures=["A", "B"] * 2 + ["A"],
        tasks=["cultural"] * 5, n_layers=2, n_neurons=3, chunk_items=2, attrs={"model": "hand"},
    )  # fmt: skip
    assert resumed.pending_chunks() == [1]


def test_an_incomplete_store_is_not_read(tmp_path):
    store = create_or_resume(
        tmp_path / "p.zarr", item_ids=["a", "b"], cultures=["A", "B"], tasks=["cultural"] * 2,
        n_layers=1, n_neurons=2, chunk_items=1, attrs={},
    )  # fmt: skip
    store.write_chunk(0, np.ones((1, 1, 2)), np.ones(1))
    with pytest.raises(InputError, match=r"incomplete: chunk\(s\) \[1\]"):
        open_attribution_store(store.path)
