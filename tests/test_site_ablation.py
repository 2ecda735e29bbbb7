"""The engine and the record_site pass at sites beyond the decoder MLP (issue 35), on the tiny
checkpoints of every family.

A vision bank acts in the vision tower, which the fast path runs once per item and mask
(`engine._pair_prompts`); a head bank acts in every decoder call, rows mixing banks. Either way
the answers must equal `generate()` one item at a time under that bank alone. The record_site
pass must store what `record_site` gives each item alone, answers taken from the baseline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from culture_neurons.errors import InputError
from culture_neurons.inference.engine import answer_masked, model_items, reference_answers
from culture_neurons.models.sites import ATTENTION_HEADS, VISION_MLP, record_site, site_shape
from culture_neurons.record.site_recording import prefill, record_site_pass
from culture_neurons.record.store import open_store

pytest_plugins = ["tests.tiny_models"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_banks(shape, n_masks: int, seed: int, off: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = (n_masks, shape.n_layers, shape.n_units)
    return (torch.rand(size, generator=generator) > off).float()


@pytest.mark.parametrize(("site", "off"), [(VISION_MLP, 0.5), (ATTENTION_HEADS, 0.4)])
def test_site_banks_on_the_fast_path_equal_generate(tiny_adapter, varied_evaluation, site, off):
    rows = varied_evaluation.iloc[:5]
    shape = site_shape(tiny_adapter, site)
    keep = random_banks(shape, 2, seed=3, off=off)
    fast = answer_masked(tiny_adapter, rows, keep, batch_size=3, max_new_tokens=8, site=site)
    plain = reference_answers(tiny_adapter, rows, max_new_tokens=8)
    changed = 0
    for mask in range(2):
        expected = reference_answers(
            tiny_adapter, rows, max_new_tokens=8, keep=keep[mask : mask + 1], site=site
        )
        assert fast[mask]["output"].tolist() == expected
        changed += sum(a != b for a, b in zip(expected, plain, strict=True))
    assert changed > 0, "the banks change some answers (else the test could not fail)"


def test_a_vision_bank_with_drafts_equals_one_without(tiny_adapter, varied_evaluation):
    """Drafts (each item's unmasked answer) are decoded from the unmasked prompt, the masked
    rows from their bank's prompt: drafting changes no answer."""
    rows = varied_evaluation.iloc[:4]
    keep = random_banks(site_shape(tiny_adapter, VISION_MLP), 2, seed=5, off=0.5)
    common = {"batch_size": 4, "max_new_tokens": 8, "site": VISION_MLP}
    drafted = answer_masked(tiny_adapter, rows, keep, drafts=True, **common)
    plain = answer_masked(tiny_adapter, rows, keep, drafts=False, **common)
    for a, b in zip(drafted, plain, strict=True):
        pd.testing.assert_frame_equal(a, b)


def baseline_of(rows: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "item_id": rows["item_id"].to_numpy(),
            "output": [f"answer {i}" for i in range(len(rows))],
            "choice": rng.integers(-1, 4, size=len(rows)).astype(np.int8),
            "correct": rng.integers(0, 2, size=len(rows)).astype(np.int8),
        }
    )


@pytest.mark.parametrize("site", [VISION_MLP, ATTENTION_HEADS])
def test_record_site_pass_stores_each_items_statistics(tiny_adapter, varied_evaluation, tmp_path,
                                                       site):  # fmt: skip
    rows = varied_evaluation.iloc[:6]
    shape = site_shape(tiny_adapter, site)
    baseline = baseline_of(rows)
    common = {"batch_size": 3, "chunk_items": 3, "attrs": {"site": site}}
    partial, _ = record_site_pass(tiny_adapter, rows, baseline, shape, tmp_path / "s.zarr",
                                  stop_after_chunks=1, **common)  # fmt: skip
    assert partial is None  # stopped after one chunk: the resumed run writes the other
    store, _ = record_site_pass(tiny_adapter, rows, baseline, shape, tmp_path / "s.zarr", **common)
    assert store is not None and store.complete
    group = open_store(tmp_path / "s.zarr").group
    assert group["fire_count"].shape == (len(rows), shape.n_layers, shape.n_units)
    np.testing.assert_array_equal(group["correct"][:], baseline["correct"])
    np.testing.assert_array_equal(group["choice"][:], baseline["choice"])
    assert list(group["answer"][:]) == baseline["output"].tolist()
    items = model_items(tiny_adapter, rows)
    for i in range(len(rows)):  # each item alone, unpadded
        batch = tiny_adapter.build_batch(items[i : i + 1])
        with record_site(tiny_adapter, site, batch) as recorder:
            prefill(tiny_adapter, batch, shape)
        alone = recorder.stats
        assert int(group["tokens"][i]) == int(alone.tokens[0])
        np.testing.assert_allclose(group["pos_sum"][i], alone.pos_sum[0].numpy(), rtol=1e-4,
                                   atol=1e-4)  # fmt: skip
        # A count can move by a token whose value sits at 0 within float rounding.
        assert np.abs(group["fire_count"][i].astype(int) - alone.fire_count[0].numpy()).max() <= 1


def test_record_site_refuses_a_baseline_of_other_items(tiny_adapter, varied_evaluation, tmp_path):
    rows = varied_evaluation.iloc[:3]
    shape = site_shape(tiny_adapter, ATTENTION_HEADS)
    wrong = baseline_of(rows.iloc[::-1])
    with pytest.raises(InputError, match="rerun rule record"):
        record_site_pass(tiny_adapter, rows, wrong, shape, tmp_path / "s.zarr", batch_size=3,
                         chunk_items=3, attrs={})  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """prepare-data's output on the CVQA fixture (items.parquet with photos, report.json)."""
    from tests.cvqa_fixture import prepare_fixture

    return prepare_fixture(tmp_path_factory.mktemp("cvqa"))


def run_record_site(prepared, checkpoint, tmp_path, site: str, image: str = "use") -> int:
    from culture_neurons.cli import main
    from culture_neurons.data.split import split_rows

    rows = split_rows(pd.read_parquet(prepared / "items.parquet"), "identification")
    baseline_of(rows).to_parquet(tmp_path / "identification.parquet")
    model = json.dumps({"family": "qwen2_5_vl", "path": str(checkpoint), "image": image})
    return main([
        "record-site", "--items", str(prepared / "items.parquet"),
        "--data-report", str(prepared / "report.json"),
        "--baseline", str(tmp_path / "identification.parquet"), "--model-name", "tiny",
        "--model", model, "--site", site, "--batch-size", "4", "--chunk-items", "8",
        "--store", str(tmp_path / f"{site}.zarr"), "--report", str(tmp_path / f"{site}.json"),
    ])  # fmt: skip


@pytest.mark.parametrize("site", [VISION_MLP, ATTENTION_HEADS])
def test_record_site_stage_writes_a_store_selection_reads_and_its_cost(
    prepared, tiny_checkpoint, tmp_path, site
):
    assert run_record_site(prepared, tiny_checkpoint("qwen2_5_vl"), tmp_path, site) == 0
    report = json.loads((tmp_path / f"{site}.json").read_text())
    group = open_store(tmp_path / f"{site}.zarr").group
    assert group.attrs["site"] == site and group.attrs["model"] == "tiny"
    assert group.attrs["statistic"] == ("l2_norm" if site == ATTENTION_HEADS else "fires")
    n_items, n_layers, n_units = group["fire_count"].shape
    assert report["items"] == n_items and report["units"] == n_layers * n_units
    assert report["store_bytes_per_item"] * n_items == pytest.approx(report["store_bytes"], 1e-3)
    assert report["seconds_per_item"] > 0


def test_record_site_refuses_vision_for_a_model_that_sees_no_image(
    prepared, tiny_checkpoint, tmp_path, caplog
):
    code = run_record_site(prepared, tiny_checkpoint("qwen2_5_vl"), tmp_path, VISION_MLP, "drop")
    assert code == 2
    assert "answers without images" in caplog.text
    assert not (tmp_path / f"{VISION_MLP}.zarr").exists()
