"""The neuron atlas: content checked against the store, not only that files exist."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from culture_neurons.atlas.choose import Choice, chosen_neurons, top_of_ranking
from culture_neurons.atlas.profile import culture_profile, top_items
from culture_neurons.atlas.scan import scan_store
from culture_neurons.benchmark.synthetic import write_synthetic_store
from culture_neurons.errors import InputError
from culture_neurons.record.store import open_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    # Uneven chunks (7 items) and varied token counts: a chunk boundary inside a culture.
    path = tmp_path_factory.mktemp("atlas") / "activations.zarr"
    write_synthetic_store(
        path, n_cultures=3, items_per_culture=11, n_layers=3, n_neurons=40, chunk_items=7,
        own_share=0.1, signal=0.5, tokens=30, seed=3,
    )  # fmt: skip
    return path


def test_top_of_ranking_takes_each_cultures_best_ranks():
    ranks = np.full((2, 2, 5), -1, np.int32)
    ranks[0, 1, 3], ranks[0, 0, 2], ranks[0, 0, 4] = 0, 1, 2
    ranks[1, 0, 0] = 0  # one candidate only
    chosen = top_of_ranking("cas", ranks, ["A", "B"], 2)
    assert chosen == [
        Choice("cas", "A", 0, 1, 3), Choice("cas", "A", 1, 0, 2), Choice("cas", "B", 0, 0, 0)
    ]  # fmt: skip
    assert chosen_neurons(chosen) == [(0, 0), (0, 2), (1, 3)]
    with pytest.raises(InputError, match="does not match"):
        top_of_ranking("cas", ranks, ["A"], 2)


def test_scan_reads_the_stores_values_of_the_chosen_neurons(store_path):
    neurons = [(0, 5), (2, 39), (1, 0)]
    activity = scan_store(open_store(store_path), neurons, progress=False)
    ds = xr.open_zarr(store_path, consolidated=False)
    for column, (layer, neuron) in enumerate(neurons):
        cell = dict(layer=layer, neuron=neuron)
        np.testing.assert_array_equal(activity.pos_sum[:, column], ds.pos_sum.sel(**cell).values)
        np.testing.assert_array_equal(
            activity.fire_count[:, column], ds.fire_count.sel(**cell).values
        )
    assert list(activity.item_id) == list(ds.item_id.values)
    with pytest.raises(InputError, match="outside the store"):
        scan_store(open_store(store_path), [(3, 0)], progress=False)


def test_top_items_are_the_items_with_the_largest_activation(store_path):
    ds = xr.open_zarr(store_path, consolidated=False)
    neurons = [(l, n) for l in range(3) for n in range(0, 40, 7)]  # noqa: E741
    activity = scan_store(open_store(store_path), neurons, progress=False)
    top, bottom = top_items(activity.activation, 5), top_items(activity.activation, 5, lowest=True)
    tokens = ds.tokens.values.astype(np.float64)
    for column, (layer, neuron) in enumerate(neurons):
        per_token = ds.pos_sum.sel(layer=layer, neuron=neuron).values / tokens
        listed = per_token[top[:, column]]
        # Best first, and nothing outside the list is larger than its smallest.
        assert np.all(np.diff(listed) <= 0)
        rest = np.delete(per_token, top[:, column])
        assert listed.min() >= rest.max()
        lowest = per_token[bottom[:, column]]
        assert np.all(np.diff(lowest) >= 0)
        assert lowest.max() <= np.delete(per_token, bottom[:, column]).min()


def test_profile_equals_the_stores_per_culture_statistics(store_path):
    ds = xr.open_zarr(store_path, consolidated=False)
    neurons = [(0, 1), (1, 17), (2, 33)]
    activity = scan_store(open_store(store_path), neurons, progress=False)
    profile = culture_profile(activity, n_boot=300, seed=1)
    tokens = ds.tokens.astype(np.float64).groupby("culture").sum()
    assert profile.cultures == sorted(tokens.culture.values.tolist())
    for column, (layer, neuron) in enumerate(neurons):
        cell = ds.sel(layer=layer, neuron=neuron)
        pos = cell.pos_sum.astype(np.float64).groupby("culture").sum() / tokens
        fire = cell.fire_count.astype(np.float64).groupby("culture").sum() / tokens
        np.testing.assert_allclose(profile.activation[:, column], pos.sel(culture=profile.cultures))
        np.testing.assert_allclose(profile.firing[:, column], fire.sel(culture=profile.cultures))
    # The interval holds the estimate, and has width exactly where the culture's items differ.
    assert np.all(profile.activation_lo <= profile.activation + 1e-12)
    assert np.all(profile.activation_hi >= profile.activation - 1e-12)
    rates = activity.firing_rate
    varies = np.array([rates[activity.culture == c].std(axis=0) > 0 for c in profile.cultures])
    assert varies.any() and not varies.all()
    np.testing.assert_array_equal(profile.firing_hi - profile.firing_lo > 0, varies)
    assert profile.items.tolist() == [11, 11, 11]


# -- the stage: site and export checked against the store ----------------------------------------
def _image_shard(path, n: int):
    """A parquet shard of n photos of varied sizes and colours (an HF Image struct column)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    images = []
    for k in range(n):
        buffer = io.BytesIO()
        size = (300 + 17 * k, 200 + 5 * (k % 7))  # landscape, wider each time
        Image.new("RGB", size, (20 * k % 255, 90, 200)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    table = pa.table({"image": pa.array(images, pa.struct([("bytes", pa.binary()),
                                                            ("path", pa.string())]))})  # fmt: skip
    pq.write_table(table, path, row_group_size=8)


@pytest.fixture(scope="module")
def atlas_run(store_path, tmp_path_factory):
    import pandas as pd

    from culture_neurons.selection.masks import write_masks
    from culture_neurons.stages.atlas import atlas_stage

    root = tmp_path_factory.mktemp("atlas_run")
    ds = xr.open_zarr(store_path, consolidated=False)
    ids = [str(i) for i in ds.item_id.values]
    _image_shard(root / "shard.parquet", len(ids))
    # Every third item is a text item (no image); questions carry HTML that must be escaped.
    pd.DataFrame({
        "item_id": ids,
        "question": [f"What is <b>{i}</b> & why?" for i in ids],
        "options": [[f"opt{k}a", f"opt{k}b", "c", "d"] for k in range(len(ids))],
        "image_source": [None if k % 3 == 0 else str(root / "shard.parquet")
                         for k in range(len(ids))],
        "image_row": list(range(len(ids))),
        "label": [k % 4 for k in range(len(ids))],
    }).to_parquet(root / "items.parquet")  # fmt: skip
    # Two selectors ranking by the per-culture mean activation, one reversed: they overlap.
    tokens = ds.tokens.astype(np.float64).groupby("culture").sum()
    score = (ds.pos_sum.astype(np.float64).groupby("culture").sum() / tokens).values
    cultures = [str(c) for c in tokens.culture.values]
    for name, order in (("up", -score), ("down", score)):
        flat = order.reshape(len(cultures), -1)
        ranks = np.argsort(np.argsort(flat, axis=1, kind="stable"), axis=1).reshape(score.shape)
        write_masks(root / f"{name}.zarr", ranks < 5, cultures, {"selector": name}, ranks=ranks)
    self_points = [-17.1875, -4.6875, -1.5625, -7.8]  # Δ in points, as matrices writes it
    summary = pd.DataFrame({"source": cultures + ["average"], "metric": "delta",
                            "self": self_points, "cross": -0.67})  # fmt: skip
    summary.to_parquet(root / "up.summary.parquet")
    masks = {"up": root / "up.zarr", "down": root / "down.zarr"}
    summaries = {"up": root / "up.summary.parquet"}
    n = atlas_stage("toy", store_path, root / "items.parquet", masks, 4, 3, root / "atlas",
                    root / "atlas.jsonl", root / "layers.png", summaries, n_boot=50)  # fmt: skip
    return root, n


def test_export_lists_each_neurons_top_items_and_profile_from_the_store(store_path, atlas_run):
    import json

    root, n = atlas_run
    records = [json.loads(line) for line in (root / "atlas.jsonl").read_text().splitlines()]
    assert len(records) == n and n > 4  # 2 selectors x 3 cultures x 4 neurons, some shared
    ds = xr.open_zarr(store_path, consolidated=False)
    tokens = ds.tokens.values.astype(np.float64)
    ids = np.asarray([str(i) for i in ds.item_id.values])
    for record in records:
        per_token = ds.pos_sum.sel(layer=record["layer"], neuron=record["index"]).values / tokens
        order = np.argsort(-per_token, kind="stable")
        assert [a["item_id"] for a in record["activations"]] == ids[order[:3]].tolist()
        assert [a["values"][0] for a in record["activations"]] == pytest.approx(
            per_token[order[:3]].tolist()
        )
        lowest = np.argsort(per_token, kind="stable")[:3]
        assert [a["item_id"] for a in record["lowest_activations"]] == ids[lowest].tolist()
        assert record["maxActApprox"] == pytest.approx(per_token.max())
        for row in record["profile"]:
            mine = ds.culture.values == row["culture"]
            assert row["mean_activation"] == pytest.approx(
                per_token[mine] @ tokens[mine] / tokens[mine].sum()
            )
        position = {i: k for k, i in enumerate(ids)}
        assert [a["label"] for a in record["activations"]] == [
            position[a["item_id"]] % 4 for a in record["activations"]
        ]
        assert {c["selector"] for c in record["chosen_by"]} <= {"up", "down"}
        assert all(c["rank"] < 4 for c in record["chosen_by"])


def test_site_pages_show_the_store_and_link_only_to_files_that_exist(store_path, atlas_run):
    import json
    import re

    from PIL import Image

    root, _ = atlas_run
    site = root / "atlas"
    index = (site / "index.html").read_text()
    records = [json.loads(line) for line in (root / "atlas.jsonl").read_text().splitlines()]
    for record in records:
        page = (site / "neurons" / f"L{record['layer']}-N{record['index']}.html").read_text()
        # The top items appear in the page in the store's order, their questions escaped.
        positions = [page.index(a["item_id"] + "<") for a in record["activations"]]
        assert positions == sorted(positions)
        assert "&lt;b&gt;" in page and "<b>item" not in page
        # One correct option marked per listed item, plus the mark in the two tables' headers.
        listed = len(record["activations"]) + len(record["lowest_activations"])
        assert page.count("✓") == 2 + listed
        assert f"neurons/L{record['layer']}-N{record['index']}.html" in index
    # Each culture's self effect of selector up, in points as the summary holds them.
    wanted = (">-17.2<", ">-4.7<", ">-1.6<")
    assert [v for v in re.findall(r">-?[\d.]+<", index) if v in wanted] == list(wanted)
    pages = list(site.rglob("*.html"))
    assert list((site / "pairs").glob("*.html"))  # up and down share neurons
    for page in pages:
        for link in re.findall(r'(?:href|src)="([^"#]+)"', page.read_text()):
            assert (page.parent / link).resolve().exists(), f"{page.name} links to {link}"
    assert Image.open(root / "layers.png").size[0] > Image.open(site / "layers_up.png").size[0]
    thumbs = list((site / "thumbs").glob("*.jpg"))
    listed = {a["item_id"] for r in records for a in r["activations"] + r["lowest_activations"]}
    ds = xr.open_zarr(store_path, consolidated=False)
    text_items = {str(i) for k, i in enumerate(ds.item_id.values) if k % 3 == 0}
    assert {t.stem for t in thumbs} == listed - text_items  # once per listed image item
    for thumb in thumbs:
        assert max(Image.open(thumb).size) <= 128


def test_stage_refuses_a_store_from_another_dataset(store_path, atlas_run, tmp_path):
    import pandas as pd

    from culture_neurons.stages.atlas import atlas_stage

    root, _ = atlas_run
    items = pd.read_parquet(root / "items.parquet").iloc[1:]
    items.to_parquet(tmp_path / "items.parquet")
    with pytest.raises(InputError, match="not in"):
        atlas_stage("toy", store_path, tmp_path / "items.parquet", {"up": root / "up.zarr"}, 2,
                    2, tmp_path / "atlas", tmp_path / "atlas.jsonl", tmp_path / "layers.png",
                    n_boot=10)  # fmt: skip


def test_thumbnails_are_written_once_and_a_missing_image_names_its_item(tmp_path):
    import os

    import pandas as pd

    from culture_neurons.atlas.thumbnails import write_thumbnails

    _image_shard(tmp_path / "shard.parquet", 3)
    table = pd.DataFrame({
        "image_source": [str(tmp_path / "shard.parquet"), None, str(tmp_path / "shard.parquet")],
        "image_row": [0, 1, 2],
    }, index=["a/1", "b", "c"])  # fmt: skip
    written = write_thumbnails(table, ["a/1", "b", "c", "c"], tmp_path / "thumbs")
    assert written == {"a/1": "a_1.jpg", "c": "c.jpg"}  # the text item has none
    stamp = (tmp_path / "thumbs" / "c.jpg").stat().st_mtime_ns
    os.utime(tmp_path / "thumbs" / "c.jpg", ns=(stamp - 10**9, stamp - 10**9))
    write_thumbnails(table, ["c"], tmp_path / "thumbs")
    assert (tmp_path / "thumbs" / "c.jpg").stat().st_mtime_ns == stamp - 10**9  # not rewritten
    table.loc["c", "image_source"] = str(tmp_path / "gone.parquet")
    with pytest.raises(InputError, match="item c: image .*gone.parquet"):
        write_thumbnails(table, ["c"], tmp_path / "other")
    with pytest.raises(InputError, match="not in items.parquet"):
        write_thumbnails(table, ["zzz"], tmp_path / "other")
