"""Error branches of the stages: each refuses bad input with a message that names the problem
(an `InputError`; exit code 2 and one log line from the CLI), or flags what it skipped (issue 20).
"""

from __future__ import annotations

import json
import logging
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from culture_neurons import cli
from culture_neurons.data.cvqa import SourceError
from culture_neurons.data.prepare import DatasetConfig, prepare_dataset
from culture_neurons.data.split import split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import answer_batch, answer_masked
from culture_neurons.models import load_adapter
from culture_neurons.models.tiny import TEXT_SIZES
from culture_neurons.record.aggregate import aggregate
from culture_neurons.record.store import create_or_resume, open_store
from culture_neurons.selection.masks import ALL_CULTURES, read_masks, write_masks
from culture_neurons.stages import train_demo as demo_train
from culture_neurons.stages.select import select_stage
from tests.cvqa_fixture import (
    SCHEMA,
    good_rows,
    prepare_fixture,
    row,
    write_fixture,
    write_grouping,
)

pytest_plugins = ["tests.tiny_models"]

N_LAYERS, N_NEURONS = 2, 8


# -- shared inputs ----------------------------------------------------------------------------


def culture_data(culture: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Statistics of a culture's ``n`` items, the same in every store that holds the culture."""
    rng = np.random.default_rng([ord(ch) for ch in culture])
    fire = rng.integers(0, 10, size=(n, N_LAYERS, N_NEURONS))
    pos = rng.random((n, N_LAYERS, N_NEURONS)).astype(np.float32)
    return fire, pos, rng.integers(10, 20, size=n)


def write_store(path, correct_per_culture: dict[str, list[int]]):
    """An activation store with ``correct`` set per item (1, 0, or -1: label hidden)."""
    cultures = [c for c, labels in correct_per_culture.items() for _ in labels]
    correct = np.array([v for labels in correct_per_culture.values() for v in labels])
    parts = [culture_data(c, len(labels)) for c, labels in correct_per_culture.items()]
    fire, pos, tokens = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    store = create_or_resume(
        path, item_ids=[f"item{i:03d}" for i in range(len(cultures))], cultures=cultures,
        n_layers=N_LAYERS, n_neurons=N_NEURONS, chunk_items=4,
        attrs={"model": "tiny", "dataset_fingerprint": "abc"},
    )  # fmt: skip
    for chunk in range(store.n_chunks):
        rows = store.chunk_slice(chunk)
        store.write_chunk(chunk, fire[rows], pos[rows], tokens[rows], correct[rows])
    return open_store(path), fire, tokens


@pytest.fixture
def grouping(tmp_path):
    return write_grouping(tmp_path / "groups.tsv")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """prepare-data's output for the CVQA fixture; no train portion, so train_items is empty."""
    return prepare_fixture(tmp_path_factory.mktemp("prepared"))


def tiny_entry(path) -> dict:
    """The `models:` entry of a tiny Qwen2.5-VL checkpoint folder."""
    return {"family": "qwen2_5_vl", "path": str(path), "dtype": "float32", "device_map": "cpu"}


# -- select: cultures without correctly answered items -----------------------------------------


def test_select_gives_an_unscorable_culture_an_empty_mask_and_names_it(tmp_path, caplog):
    labels = {"A": [1, 1, 0, 1, 1], "B": [1, 0, 1, 1], "C": [0, 0, 0, 0]}
    write_store(tmp_path / "abc.zarr", labels)
    report = tmp_path / "abc.json"
    caplog.set_level(logging.WARNING)
    summary = select_stage(
        tmp_path / "abc.zarr", "mad", 0.25, tmp_path / "abc_masks.zarr", report,
        params={"alpha": 50}, only_correct=True,
    )  # fmt: skip
    assert "no correctly answered items for C: empty masks" in caplog.text
    assert summary["unscorable_cultures"] == ["C"]
    assert summary["correct_filter"] is True
    assert summary["items_used"] == {"A": 4, "B": 3, "C": 0}
    assert summary["items_total"] == {"A": 5, "B": 4, "C": 4}
    assert json.loads(report.read_text()) == summary
    selected, cultures, attrs = read_masks(tmp_path / "abc_masks.zarr")
    assert cultures == ["A", "B", "C"] and attrs["unscorable_cultures"] == ["C"]
    assert not selected[2].any() and summary["selected_per_culture"]["C"] == 0
    assert selected[0].any() and selected[1].any()
    # C takes no part in the scoring (MAD compares each culture with the mean of the others):
    # A and B get the masks of a store that lacks C.
    write_store(tmp_path / "ab.zarr", {"A": labels["A"], "B": labels["B"]})
    select_stage(
        tmp_path / "ab.zarr", "mad", 0.25, tmp_path / "ab_masks.zarr", tmp_path / "ab.json",
        params={"alpha": 50},
    )  # fmt: skip
    alone, alone_cultures, alone_attrs = read_masks(tmp_path / "ab_masks.zarr")
    assert alone_cultures == ["A", "B"] and alone_attrs["unscorable_cultures"] == []
    np.testing.assert_array_equal(selected[:2], alone)


@pytest.mark.parametrize(
    ("labels", "n_scorable"),
    [
        ({"A": [1, 0], "B": [0, 0], "C": [0, 0, 0]}, 1),
        ({"A": [0, 0], "B": [0, 0, 0]}, 0),
    ],
)
def test_select_refuses_fewer_than_two_scorable_cultures(tmp_path, labels, n_scorable):
    write_store(tmp_path / "s.zarr", labels)
    message = (
        f"only {n_scorable} culture(s) have correctly answered items; "
        "a culture-specific selector needs at least two to compare"
    )
    with pytest.raises(InputError, match=re.escape(message)):
        select_stage(tmp_path / "s.zarr", "lap", 0.25, tmp_path / "m.zarr", tmp_path / "r.json")
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "r.json").exists()


def test_select_cli_exits_2_naming_the_missing_scorable_cultures(tmp_path, caplog):
    write_store(tmp_path / "s.zarr", {"A": [1, 1], "B": [0, 0]})
    out, report = tmp_path / "m.zarr", tmp_path / "r.json"
    argv = ["select", "--store", str(tmp_path / "s.zarr"), "--selector", "mad-a90",
            "--params", '{"method": "mad", "alpha": 90}', "--ratio", "0.25",
            "--out", str(out), "--report", str(report)]  # fmt: skip
    assert cli.main(argv) == 2
    assert "only 1 culture(s) have correctly answered items" in caplog.text
    assert not out.exists() and not report.exists()


def test_culture_independent_selector_needs_only_one_scorable_culture(tmp_path):
    write_store(tmp_path / "s.zarr", {"A": [1, 1], "B": [0, 0], "C": [0]})
    summary = select_stage(
        tmp_path / "s.zarr", "rnd-s0", 0.25, tmp_path / "m.zarr", tmp_path / "r.json",
        params={"method": "rnd", "seed": 0},
    )  # fmt: skip
    assert summary["unscorable_cultures"] == ["B", "C"]
    selected, cultures, _ = read_masks(tmp_path / "m.zarr")
    assert cultures == [ALL_CULTURES]
    assert summary["selected_per_culture"] == {ALL_CULTURES: 4}  # round(0.25 * 2 * 8)
    assert int(selected.sum()) == 4


# -- aggregation with every label hidden -------------------------------------------------------


def test_all_hidden_labels_aggregate_every_item_with_a_warning(tmp_path, caplog):
    labels = {"A": [-1] * 5, "B": [-1] * 3}
    store, fire, tokens = write_store(tmp_path / "s.zarr", labels)
    caplog.set_level(logging.WARNING)
    agg = aggregate(store, only_correct=True)
    assert "labels are hidden: aggregating every item (no correctness filter)" in caplog.text
    assert agg.correct_filter is False
    assert agg.cultures == ["A", "B"]
    np.testing.assert_array_equal(agg.items_used, [5, 3])
    np.testing.assert_array_equal(agg.items_total, [5, 3])
    np.testing.assert_array_equal(agg.tokens, [tokens[:5].sum(), tokens[5:].sum()])
    np.testing.assert_array_equal(agg.fire_count[0], fire[:5].sum(axis=0))
    np.testing.assert_array_equal(agg.fire_count[1], fire[5:].sum(axis=0))
    # Without the filter asked for there is nothing to warn about; the sums are the same.
    caplog.clear()
    everything = aggregate(store, only_correct=False)
    assert "labels are hidden" not in caplog.text
    np.testing.assert_array_equal(everything.fire_count, agg.fire_count)
    assert everything.correct_filter is False
    # Selection on hidden labels scores every culture and says the filter was off.
    summary = select_stage(
        tmp_path / "s.zarr", "lap", 0.25, tmp_path / "m.zarr", tmp_path / "r.json",
        params={"alpha": 50},
    )  # fmt: skip
    assert summary["correct_filter"] is False and summary["unscorable_cultures"] == []
    assert summary["items_used"] == {"A": 5, "B": 3}


# -- ablate: a mask of another model ---------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(2, 8), (TEXT_SIZES["num_hidden_layers"], TEXT_SIZES["intermediate_size"] + 1)],
    ids=["other_model", "one_neuron_more"],
)
def test_ablate_refuses_a_mask_of_another_shape(prepared, tiny_checkpoint, tmp_path, caplog, shape):
    masks = tmp_path / "masks.zarr"
    selected = np.zeros((2, *shape), dtype=bool)
    write_masks(masks, selected, ["FRA", "JPN"], {"selector": "lap", "ratio": 0.1})
    out = tmp_path / "ablations"
    argv = ["ablate", "--items", str(prepared / "items.parquet"),
            "--model", json.dumps(tiny_entry(tiny_checkpoint("qwen2_5_vl"))),
            "--masks", str(masks), "--batch-size", "2", "--max-new-tokens", "2",
            "--out-dir", str(out)]  # fmt: skip
    assert cli.main(argv) == 2
    layers, neurons = TEXT_SIZES["num_hidden_layers"], TEXT_SIZES["intermediate_size"]
    assert (
        f"mask shape {shape} does not fit the model's {layers} x {neurons} decoder-MLP neurons"
        in caplog.text
    )
    assert not out.exists()


def test_ablate_refuses_a_mask_store_without_its_ratio(tmp_path):
    from culture_neurons.ablation.work import sweep_masks

    masks = tmp_path / "masks.zarr"
    write_masks(masks, np.zeros((2, 2, 8), dtype=bool), ["FRA", "JPN"], {"selector": "lap"})
    with pytest.raises(InputError, match="no 'ratio' attribute.*rerun its select job"):
        sweep_masks(masks, ["FRA"], [0.1])


# -- train-demo: no train portion --------------------------------------------------------------


def test_train_demo_refuses_an_empty_train_portion(prepared, tmp_path, caplog, monkeypatch):
    def must_not_train(*args, **kwargs):
        # An empty train portion would never fill a batch: training would loop forever.
        raise AssertionError("train-demo started training on an empty train portion")

    monkeypatch.setattr(demo_train, "train_demo_model", must_not_train)
    train_items = prepared / "train_items.parquet"
    assert pd.read_parquet(train_items).empty  # prepare-data without dataset.train_files
    model, report = tmp_path / "model", tmp_path / "report.json"
    argv = ["train-demo", "--items", str(prepared / "items.parquet"), "--train-items",
            str(train_items), "--out", str(model), "--report", str(report)]  # fmt: skip
    assert cli.main(argv) == 2
    assert f"{train_items} has no items: the demo model needs a train portion" in caplog.text
    assert not model.exists() and not report.exists()
    with pytest.raises(InputError, match="the demo model needs a train portion"):
        demo_train.train_demo_stage(prepared / "items.parquet", train_items, model, report)


# -- the fast path and generation settings it cannot apply ------------------------------------


@pytest.mark.parametrize(("name", "value"), [("no_repeat_ngram_size", 3), ("min_length", 5)])
def test_fast_path_refuses_a_generation_config_it_cannot_apply(
    prepared, tiny_checkpoint, tmp_path, one_torch_thread, name, value
):
    # A hub checkpoint whose generation_config.json sets the option.
    hub = shutil.copytree(tiny_checkpoint("qwen2_5_vl"), tmp_path / "hub")
    config_file = hub / "generation_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    config_file.write_text(json.dumps({**config, name: value}))
    adapter = load_adapter(tiny_entry(hub))
    assert getattr(adapter.model.generation_config, name) == value
    rows = split_rows(pd.read_parquet(prepared / "items.parquet"), "evaluation").head(2)
    message = re.escape(
        f"generation config sets {{'{name}': {value}}}, which the fast greedy path does not apply"
    )
    with pytest.raises(ValueError, match=message):  # ablation and the evaluation baseline
        answer_masked(adapter, rows, None, batch_size=2, max_new_tokens=2)
    with pytest.raises(ValueError, match=message):  # the recording pass
        answer_batch(adapter, rows, max_new_tokens=2, record=True)


# -- prepare-data: source settings and the labels file -----------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("local", "dataset.source is 'local' but dataset.local_dir is not set"),
        ("hub", "dataset.source is 'hub' but dataset.hub_id is not set"),
        ("ftp", "dataset.source must be 'local' or 'hub', not 'ftp'"),
    ],
)
def test_prepare_data_names_the_missing_source_setting(grouping, tmp_path, source, message):
    config = DatasetConfig(name="x", source=source, grouping=str(grouping))
    with pytest.raises(SourceError, match=re.escape(message)) as caught:
        prepare_dataset(config, tmp_path / "out")
    assert isinstance(caught.value, InputError)
    assert not (tmp_path / "out").exists()


def test_prepare_data_cli_exits_2_without_local_dir(grouping, tmp_path, caplog):
    argv = ["prepare-data", "--name", "x", "--source", "local", "--grouping", str(grouping),
            "--out-dir", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "dataset.source is 'local' but dataset.local_dir is not set" in caplog.text
    assert not (tmp_path / "out").exists()


@pytest.fixture
def hidden_source(tmp_path):
    """A CVQA copy whose labels are withheld (every Label -1) and its item IDs in row order."""
    source = write_fixture(tmp_path / "hidden", hidden_labels=True, with_bad_rows=False)
    ids = [r["ID"] for r in good_rows()]
    return source, ids


@pytest.mark.parametrize("suffix", [".json", ".tsv"])
def test_labels_file_as_json_or_tsv_supplies_the_labels(hidden_source, grouping, tmp_path, suffix):
    source, ids = hidden_source
    labels = {item_id: (3 * i + 1) % 4 for i, item_id in enumerate(ids[1:])}  # ids[0]: none
    path = tmp_path / f"labels{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(labels))
    else:  # the CVQA column names, and a column the reader ignores
        lines = [f"{item_id}\t{label}\tx" for item_id, label in labels.items()]
        path.write_text("ID\tLabel\tnote\n" + "\n".join(lines) + "\n")
    config = DatasetConfig(
        name="x", local_dir=str(source), grouping=str(grouping), labels_file=str(path)
    )
    report = prepare_dataset(config, tmp_path / "out")
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert report["label_mode"] == "file"
    assert report["excluded"]["label_missing_in_file"] == 1
    assert report["excluded_examples"]["label_missing_in_file"] == [ids[0]]
    assert report["items"] == len(ids) - 1
    assert dict(zip(items["item_id"], items["label"], strict=True)) == labels


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("item_id\tanswer\nJaJa_000\t1\n", "needs columns item_id (or ID) and label"),
        ("question\tlabel\nJaJa_000\t1\n", "needs columns item_id (or ID) and label"),
        (None, "does not exist"),
    ],
    ids=["no_label_column", "no_id_column", "no_file"],
)
def test_labels_file_without_its_columns_is_refused(
    hidden_source, grouping, tmp_path, text, problem
):
    source, _ = hidden_source
    path = tmp_path / "labels.tsv"
    if text is not None:
        path.write_text(text)
    config = DatasetConfig(
        name="x", local_dir=str(source), grouping=str(grouping), labels_file=str(path)
    )
    with pytest.raises(SourceError, match=re.escape(f"labels_file {path} {problem}")):
        prepare_dataset(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- prepare-data: options that do not parse ---------------------------------------------------

UNPARSEABLE = {
    # In the shard that stores options as lists: a missing value.
    "opt_null": (None, "options of type NoneType are not a list"),
    # In the shard that stores them as one string (older revisions):
    "opt_prose": ("red, green, blue, grey", "options string 'red, green, blue, grey' is not a "
                  "list literal"),
    "opt_number": ("42", "options of type int are not a list"),
    "opt_text": ("'one option'", "options of type str are not a list"),
}  # fmt: skip


def write_options_fixture(folder):
    """Good rows in two shards (options as lists, options as strings) plus the UNPARSEABLE rows
    and one row whose options parse but are three."""
    data = folder / "data"
    data.mkdir(parents=True)
    rows = good_rows()
    half = len(rows) // 2
    bad = {
        item_id: row(item_id, "Japanese", "Japan", 80 + k, **{"Translated Options": value})
        for k, (item_id, (value, _)) in enumerate(UNPARSEABLE.items())
    }
    as_lists = [*rows[:half], bad.pop("opt_null")]
    pq.write_table(pa.Table.from_pylist(as_lists, schema=SCHEMA), data / "test-0.parquet")
    three = row("opt_three", "Japanese", "Japan", 90, **{"Translated Options": ["a", "b", "c"]})
    as_strings = [
        {**r, "Options": str(r["Options"]), "Translated Options": str(r["Translated Options"])}
        for r in [*rows[half:], three]
    ] + [{**r, "Options": str(r["Options"])} for r in bad.values()]
    string_schema = SCHEMA
    for column in ("Options", "Translated Options"):
        string_schema = string_schema.set(
            SCHEMA.get_field_index(column), pa.field(column, pa.string())
        )
    pq.write_table(pa.Table.from_pylist(as_strings, schema=string_schema), data / "test-1.parquet")
    return folder, len(rows)


def test_unparseable_options_are_excluded_with_their_reason(grouping, tmp_path):
    source, n_good = write_options_fixture(tmp_path / "cvqa")
    config = DatasetConfig(name="x", local_dir=str(source), grouping=str(grouping))
    report = prepare_dataset(config, tmp_path / "out")
    assert {r: n for r, n in report["excluded"].items() if n} == {
        "options_unparseable": len(UNPARSEABLE),
        "options_not_4": 1,
    }
    assert report["excluded_examples"]["options_unparseable"] == [
        f"{item_id}: {detail}" for item_id, (_, detail) in UNPARSEABLE.items()
    ]
    assert report["excluded_examples"]["options_not_4"] == ["opt_three: 3 option(s)"]
    assert report["rows_read"] == n_good + len(UNPARSEABLE) + 1
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert len(items) == report["items"] == n_good
    assert not set(items["item_id"]) & {*UNPARSEABLE, "opt_three"}
    assert items["options"].map(len).eq(4).all()
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"| options are neither a list nor the string of one | {len(UNPARSEABLE)} |" in markdown


# -- bugs these tests found, now fixed -----------------------------------------------------------


def test_a_train_portion_smaller_than_a_batch_is_refused_before_training(prepared, tmp_path):
    from culture_neurons.demo.model import train_demo_model

    items = pd.read_parquet(prepared / "items.parquet")
    with pytest.raises(InputError, match=r"has 3 items, fewer than demo_training.batch_size \(8\)"):
        train_demo_model(items.head(3), items, tmp_path / "m", {"batch_size": 8, "steps": 1})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[{"item_id": "JaJa_000", "label": 1}]', "must hold one JSON object"),
        ('{"JaJa_000": "two"}', "invalid literal for int()"),
        ('{"JaJa_000": 1', "Expecting"),
        ("", "Expecting value"),
    ],
    ids=["json_list", "json_non_integer", "json_broken", "json_empty"],
)
def test_malformed_json_labels_file_is_one_clear_error(
    hidden_source, grouping, tmp_path, text, problem
):
    source, _ = hidden_source
    path = tmp_path / "labels.json"
    path.write_text(text)
    config = DatasetConfig(
        name="x", local_dir=str(source), grouping=str(grouping), labels_file=str(path)
    )
    with pytest.raises(SourceError, match=re.escape(f"labels_file {path}")) as error:
        prepare_dataset(config, tmp_path / "out")
    assert problem in str(error.value)


@pytest.mark.parametrize(
    "text", ["ID\tlabel\nJaJa_000\t\n", "", "ID\tlabel\nJaJa_000\tx\n"], ids=["empty", "no", "x"]
)
def test_malformed_tsv_labels_file_is_one_clear_error(hidden_source, grouping, tmp_path, text):
    source, _ = hidden_source
    path = tmp_path / "labels.tsv"
    path.write_text(text)
    config = DatasetConfig(
        name="x", local_dir=str(source), grouping=str(grouping), labels_file=str(path)
    )
    with pytest.raises(SourceError, match=re.escape(f"labels_file {path}")):
        prepare_dataset(config, tmp_path / "out")


def test_labels_file_ids_stay_text_whatever_the_column_order(hidden_source, grouping, tmp_path):
    from culture_neurons.data.prepare import _read_labels_file

    path = tmp_path / "labels.tsv"
    path.write_text("label\tID\n2\t000123\n1\t007\n")
    assert _read_labels_file(str(path)) == {"000123": 2, "007": 1}


def test_literals_that_break_literal_eval_are_bad_rows_not_crashes():
    from culture_neurons.data.cvqa import parse_options, parse_subset

    with pytest.raises(ValueError, match="not a list literal"):
        parse_options("{[]: 1}")
    with pytest.raises(ValueError, match="not a Python tuple literal"):
        parse_subset("{[]: 1}")
    # A missing option is empty, so the row fails the four-option check instead of reading "None".
    assert parse_options(["a", "b", "c", None]) == ["a", "b", "c", ""]
