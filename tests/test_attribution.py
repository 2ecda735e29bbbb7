"""Attribution scores (gradient x activation on act_fn) against independent references, and the
resumable attribution store."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from torch import nn

from culture_neurons.data.split import split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import prompt_items
from culture_neurons.models.hooks import hooks_attached
from culture_neurons.models.tiny import TINY_FAMILIES, make_items
from culture_neurons.record.attribution import attribution_positions, attribution_scores
from culture_neurons.record.attribution_recording import (
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
from culture_neurons.selection.attribution import top_share
from culture_neurons.selection.masks import read_masks
from culture_neurons.stages.attribute import attribute_stage
from culture_neurons.stages.select import select_stage
from tests.cvqa_fixture import prepare_fixture

pytest_plugins = ["tests.tiny_models"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_fixture(tmp_path_factory.mktemp("cvqa"))


@pytest.fixture(scope="module")
def items(prepared) -> pd.DataFrame:
    return pd.read_parquet(prepared / "items.parquet")


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


# Questions, options and images of different sizes (`make_items`), and gold replies of 1 to
# several tokens: every batch is left-padded by prompt AND by reply length, as real batches are.
VARIED_GOLD = [0, 3, 3, 2]  # "a temple", "Eid", "Accra", "noodles with a spicy sauce"


def varied_batch() -> tuple[list[dict], list[str]]:
    items = make_items(4)
    return items, [item["options"][g] for item, g in zip(items, VARIED_GOLD, strict=True)]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batched_scores_equal_the_probe_reference(family, load_tiny):
    adapter = load_tiny(family, dtype="float64")
    items, replies = varied_batch()
    batch, n_gold = adapter.build_teacher_forced_batch(items, replies)
    # The batch really is padded, by prompt and by reply: rows of different lengths whose
    # replies differ in length too (else the per-row window and normalisation go untested).
    padding = (batch["attention_mask"] == 0).sum(dim=1).tolist()
    assert len(set(padding)) == 4 and min(padding) == 0, padding
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padding: every row ends its reply
    assert len(set(n_gold.tolist())) >= 3, n_gold
    scores, p_gold = attribution_scores(adapter, items, replies)
    assert scores.shape == (4, adapter.n_layers, adapter.n_neurons)
    for b in range(4):
        ref, p_ref, _ = probe_reference(adapter, items[b], replies[b])
        assert float(p_gold[b]) == pytest.approx(p_ref, rel=1e-5), b
        # Each row scored alone, unpadded: the padding must not change a row's score.
        np.testing.assert_allclose(scores[b].numpy(), ref, rtol=1e-4, atol=1e-10, err_msg=str(b))
    assert all(p.requires_grad for p in adapter.model.parameters())  # flags restored


# ------------------------------------------------ a hand-made model whose scores are known


class _RunningSumLM(nn.Module):
    """One layer: ``a = act_fn(embedding)``; the logits at ``t`` read the running sum of ``a``
    over the non-padding positions up to ``t``. Neuron 0 is silu(-1) < 0 at every position and
    raises the logit of token 5, the only reply token: its product with d p(gold)/d a is
    negative at every position that can change a gold token, 0 at padding and at the last."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(3)
        embed = rng.normal(size=(6, 3))
        embed[:, 0] = -1.0
        readout = rng.normal(size=(3, 6))
        readout[0] = 0.0
        readout[0, 5] = 1.0
        self.register_buffer("embed", torch.tensor(embed))
        self.readout = nn.Parameter(torch.tensor(readout))
        self.act_fn = nn.SiLU()

    def activations(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.act_fn(self.embed[input_ids])

    def head(self, acts: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(acts * attention_mask[..., None], dim=1) @ self.readout

    def forward(self, input_ids, attention_mask, use_cache=False, logits_to_keep=0):
        logits = self.head(self.activations(input_ids), attention_mask.to(torch.float64))
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


class _RunningSumAdapter:
    """The adapter surface `attribution_scores` uses; items and replies are token-id lists."""

    n_layers = 1

    def __init__(self) -> None:
        self.model = _RunningSumLM()

    def act_fn_modules(self) -> list[nn.Module]:
        return [self.model.act_fn]

    def build_teacher_forced_batch(self, items, replies):
        rows = [list(p) + list(r) for p, r in zip(items, replies, strict=True)]
        width = max(map(len, rows))
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return {"input_ids": ids, "attention_mask": mask}, torch.tensor(list(map(len, replies)))


def _running_sum_reference(
    model: _RunningSumLM, ids: list[int], n: int
) -> tuple[np.ndarray, float]:
    """One row alone, no padding: p(gold) from a loop over the reply, products by autograd."""
    acts = model.activations(torch.tensor([ids])).detach().requires_grad_(True)
    logits = model.head(acts, torch.ones(1, len(ids), dtype=torch.float64))[0]
    log_p = [
        torch.log_softmax(logits[len(ids) - n - 1 + j], -1)[ids[len(ids) - n + j]] for j in range(n)
    ]
    p = torch.exp(torch.stack(log_p).mean())
    (grad,) = torch.autograd.grad(p, acts)
    products = (acts * grad)[0, :-1]  # every position before the last
    p = p.detach()
    return (p * products.detach().amax(dim=0)).numpy()[None], float(p)


def test_scores_use_each_rows_own_reply_and_never_the_padding():
    adapter = _RunningSumAdapter()
    prompts = [[1, 2], [3, 1, 2, 4, 2, 1, 3], [2, 3, 4]]
    replies = [[5, 5, 5], [5], [5, 5]]  # rows of 5, 8 and 5 tokens: left-padded by 3, 0, 3
    scores, p_gold = attribution_scores(adapter, prompts, replies)
    for b, (prompt, reply) in enumerate(zip(prompts, replies, strict=True)):
        expected, p = _running_sum_reference(adapter.model, prompt + reply, len(reply))
        assert float(p_gold[b]) == pytest.approx(p, rel=1e-6), b  # float32 on the way out
        np.testing.assert_allclose(scores[b].numpy(), expected, rtol=1e-5, err_msg=str(b))
        # The max over positions of neuron 0 stays negative: padding (and the last position),
        # whose products are exactly 0, must not enter it.
        assert scores[b, 0, 0] < 0
    assert adapter.model.readout.requires_grad


def test_attribution_positions_skip_padding_and_each_rows_last_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    expected = [[0, 0, 1, 1, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    assert attribution_positions(mask).int().tolist() == expected


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


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_the_reply_is_the_last_tokens_of_each_row(family, load_tiny):
    adapter = load_tiny(family)
    items, replies = varied_batch()
    batch, n_gold = adapter.build_teacher_forced_batch(items, replies)
    for b, reply in enumerate(replies):
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


def test_the_exclusion_task_from_the_attribute_stage_to_the_attr_masks(
    prepared, items, identification, tiny_checkpoint, tmp_path
):
    """The attribute stage scores all three tasks; attr's masks then leave out each culture's
    top exclusion neurons, found from the exclusion items' own scores in the store."""
    control = identification.head(4).assign(item_id=lambda t: "ctl-" + t["item_id"])
    exclusion = items.iloc[[0, 5, 9, 14, 20]].assign(item_id=lambda t: "exc-" + t["item_id"])
    control.to_parquet(tmp_path / "control.parquet")
    exclusion.to_parquet(tmp_path / "exclusion.parquet")
    model = {
        "family": "qwen2_5_vl",
        "path": str(tiny_checkpoint("qwen2_5_vl")),
        "dtype": "float32",
        "device_map": "cpu",
    }
    store = tmp_path / "attribution.zarr"
    report = attribute_stage(
        prepared / "items.parquet", prepared / "report.json", "tiny", model, store,
        tmp_path / "attribution.json", control_items=tmp_path / "control.parquet",
        exclusion_items=tmp_path / "exclusion.parquet", batch_size=3, chunk_items=4,
    )  # fmt: skip
    assert report["exclusion_task"] == "scored" and report["items"]["exclusion"] == 5
    assert json.loads((tmp_path / "attribution.json").read_text()) == report
    opened = open_attribution_store(store)
    tasks, cultures = np.asarray(opened.labels("task")), np.asarray(opened.labels("culture"))
    scores = opened.group["score"][:].astype(np.float64)
    names = sorted(set(cultures[tasks == "cultural"]))
    assert set(cultures[tasks == "exclusion"]) == set(names)  # every culture has some
    means = np.stack([scores[(tasks == "exclusion") & (cultures == c)].mean(axis=0) for c in names])
    params = {"method": "attr", "exclusion_ratio": 0.05, "z_threshold": -10.0}
    select = select_stage(store, "a", 0.2, tmp_path / "m.zarr", tmp_path / "m.json", params=params)
    assert select["exclusion"] == "applied"
    masks, mask_cultures, _ = read_masks(tmp_path / "m.zarr")
    assert mask_cultures == names
    excluded = top_share(means, 0.05)
    assert excluded.any(axis=(1, 2)).all()
    assert not (masks & excluded).any()
    # Without the z filter, only the exclusion set keeps a neuron of the top 20% out of a mask:
    # every culture loses at least one.
    no_exclusion = {**params, "exclusion_ratio": 0.0}
    select_stage(store, "b", 0.2, tmp_path / "n.zarr", tmp_path / "n.json", params=no_exclusion)
    unfiltered, _, _ = read_masks(tmp_path / "n.zarr")
    assert ((unfiltered & excluded).sum(axis=(1, 2)) > 0).all()
    np.testing.assert_array_equal(masks, unfiltered & ~excluded)


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


def test_exclusion_aggregates_are_each_cultures_mean_over_its_exclusion_items(tmp_path):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(12, 2, 3)).astype(np.float32)
    cultures = ["A", "B", "A", "B", "C"] + ["A"] + ["B", "A", "B", "D", "B", "A"]
    tasks = ["cultural"] * 5 + ["control"] + ["exclusion"] * 6
    agg = aggregate_attribution(_hand_store(tmp_path / "s.zarr", scores, cultures, tasks, 3))
    assert agg.cultures == ["A", "B", "C"]
    assert agg.items["exclusion"] == {"A": 2, "B": 3, "D": 1}
    # Exclusion scores: each culture's own items (not the cultural ones), not clamped; D (no
    # cultural items) has no row, C (no exclusion items) a NaN one: it has no exclusion mean.
    assert agg.exclusion.shape == (3, 2, 3)
    np.testing.assert_allclose(agg.exclusion[0], scores[[7, 11]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(agg.exclusion[1], scores[[6, 8, 10]].mean(axis=0), rtol=1e-6)
    assert np.isnan(agg.exclusion[2]).all()
    np.testing.assert_allclose(agg.cultural[1], scores[[1, 3]].mean(axis=0), rtol=1e-6)
    p_gold = np.linspace(0.1, 0.9, 12)
    assert agg.mean_p_gold["exclusion"] == pytest.approx(p_gold[6:].mean(), rel=1e-6)


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
