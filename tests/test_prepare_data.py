"""prepare_data on a CVQA-schema fixture: grouping, split, labels, bad rows, report."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from PIL import Image

from culture_neurons.cli import main
from culture_neurons.data.cvqa import (
    load_hub_dataset,
    parse_hub_reference,
    parse_options,
    parse_subset,
)
from culture_neurons.data.grouping import GroupingError, load_grouping
from culture_neurons.data.prepare import DatasetConfig, prepare_dataset
from culture_neurons.data.split import assign_splits
from tests.cvqa_fixture import (
    BAD_ROWS,
    DUPLICATE_ID,
    GOOD_PER_PAIR,
    png_bytes,
    write_fixture,
    write_grouping,
)


@pytest.fixture
def source(tmp_path):
    return write_fixture(tmp_path / "cvqa")


@pytest.fixture
def grouping(tmp_path):
    return write_grouping(tmp_path / "groups.tsv")


def config_for(folder, grouping, **overrides) -> DatasetConfig:
    values = dict(name="fixture", source="local", local_dir=str(folder), grouping=str(grouping))
    values.update(overrides)
    return DatasetConfig(**values)


def test_parse_subset_uses_literal_eval_and_returns_country_first():
    assert parse_subset("('Japanese', 'Japan')") == ("Japan", "Japanese")
    assert parse_subset("('Egyptian Arabic', 'Egypt')") == ("Egypt", "Egyptian Arabic")
    with pytest.raises(ValueError, match="not a Python tuple literal"):
        parse_subset("__import__('os').system('true')")
    with pytest.raises(ValueError, match="pair"):
        parse_subset("('Japanese',)")


def test_parse_options_accepts_list_and_string_encodings():
    assert parse_options(["a", "b"]) == ["a", "b"]
    assert parse_options("['a', \"b's\", 'c', 'd']") == ["a", "b's", "c", "d"]
    with pytest.raises(ValueError):
        parse_options("a, b, c, d")
    with pytest.raises(ValueError):
        parse_options(None)


def test_paper_grouping_has_39_pairs_in_25_cultures():
    grouping = load_grouping("resources/cvqa_culture_groups.tsv")
    assert len(grouping.culture_of) == 39
    assert len(grouping.cultures) == 25
    india = {k for k, v in grouping.culture_of.items() if v == "IND"}
    assert {c for c, _ in india} == {"India"} and len(india) == 6
    indonesia = {k for k, v in grouping.culture_of.items() if v == "IDN"}
    assert {c for c, _ in indonesia} == {"Indonesia"} and len(indonesia) == 4
    spanish = {k for k, v in grouping.culture_of.items() if v == "ESP"}
    assert {lang for _, lang in spanish} == {"Spanish"} and len(spanish) == 7
    # Urdu is spoken in India and Pakistan: only the Indian pair joins IND.
    assert grouping.lookup("Pakistan", "Urdu") == "PAK"
    assert grouping.lookup("Egypt", "Egyptian Arabic") == "EGY"
    assert sum(e for _, e in grouping.paper_counts.values()) == 5196


def test_prepare_groups_splits_and_reports(source, grouping, tmp_path):
    out = tmp_path / "out"
    report = prepare_dataset(config_for(source, grouping), out)
    items = pd.read_parquet(out / "items.parquet")

    assert report["label_mode"] == "labelled"
    assert sorted(items["culture"].unique()) == ["FRA", "IND", "JPN"]
    assert set(items.loc[items["country"] == "India", "culture"]) == {"IND"}
    assert report["rows_read"] == sum(GOOD_PER_PAIR.values()) + 6 + len(BAD_ROWS) + 2
    # One bad row of each kind, both copies of the duplicate ID, nothing else.
    expected = {reason: 1 for reason in BAD_ROWS} | {"duplicate_id": 2}
    assert {r: n for r, n in report["excluded"].items() if n} == expected
    assert report["excluded_total"] == len(BAD_ROWS) + 2
    assert DUPLICATE_ID not in set(items["item_id"])
    assert not set(items["item_id"]) & {r["ID"] for r in BAD_ROWS.values()}
    assert len(items) == report["items"] == 31
    # Every item has four options, English text (the "Translated" columns) and a real label.
    assert items["options"].map(len).eq(4).all()
    assert items["question"].str.startswith("What is shown").all()
    assert items["label"].between(0, 3).all()

    # 50/50 per pair: identification gets floor(n/2), evaluation the rest.
    for subset, group in items.groupby("subset"):
        n = len(group)
        assert (group["split"] == "identification").sum() == n // 2, subset
        assert (group["split"] == "evaluation").sum() == n - n // 2, subset

    per_culture = report["items_per_culture"]
    assert per_culture["IND"] == {"identification": 6, "evaluation": 6}
    assert per_culture["JPN"] == {"identification": 5, "evaluation": 6}
    japan = next(r for r in report["items_per_pair"] if r["subset"] == "Japan-Japanese")
    assert (japan["paper_identification"], japan["paper_evaluation"]) == (5, 6)
    assert json.loads((out / "report.json").read_text()) == report
    markdown = (out / "report.md").read_text()
    assert "label outside 0-3" in markdown and "| JPN | 5 | 6 |" in markdown


def test_image_reference_points_at_the_right_row(source, grouping, tmp_path):
    from culture_neurons.data.images import load_image

    prepare_dataset(config_for(source, grouping), tmp_path / "out")
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    for _, item in items.sample(5, random_state=0).iterrows():
        k = int(item["item_id"].rsplit("_", 1)[1])
        expected = (k * 20 % 256, 80, 160)
        image = load_image(item["image_source"], item["image_row"])
        # The fixture's PNG of that colour, decoded here: lossless, 16x12, one colour throughout.
        written = Image.open(io.BytesIO(png_bytes(expected))).convert("RGB")
        assert written.size == (16, 12) and written.getcolors() == [(16 * 12, expected)]
        assert image.size == written.size and image.tobytes() == written.tobytes()


def test_native_language_uses_original_columns(source, grouping, tmp_path):
    prepare_dataset(config_for(source, grouping, language="native"), tmp_path / "out")
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["question"].str.startswith("native question").all()
    assert items["options"].map(lambda o: o[0].startswith("native")).all()


def test_split_is_stable_under_reordering_and_new_rows():
    ids = pd.Series([f"item{i:03d}" for i in range(41)])
    pairs = pd.Series(["A"] * 20 + ["B"] * 21)
    split = assign_splits(ids, pairs, seed=7)
    shuffled = ids.sample(frac=1.0, random_state=3)
    resplit = assign_splits(
        shuffled.reset_index(drop=True), pairs[shuffled.index].reset_index(drop=True), seed=7
    )
    assert dict(zip(shuffled, resplit, strict=True)) == dict(zip(ids, split, strict=True))
    # A new item in pair A moves at most one existing item across the boundary.
    grown = assign_splits(
        pd.concat([ids, pd.Series(["zz_new"])], ignore_index=True),
        pd.concat([pairs, pd.Series(["A"])], ignore_index=True),
        seed=7,
    )
    moved = sum(a != b for a, b in zip(split, grown[:41], strict=True))
    assert moved <= 1
    # The seed matters, and halves are balanced per pair.
    assert not split.equals(assign_splits(ids, pairs, seed=8))
    assert (split[pairs == "A"] == "identification").sum() == 10
    assert (split[pairs == "B"] == "identification").sum() == 10


def test_hidden_labels_switch_to_label_free_mode(tmp_path, grouping, caplog):
    source = write_fixture(tmp_path / "hidden", hidden_labels=True)
    report = prepare_dataset(config_for(source, grouping), tmp_path / "out")
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert report["label_mode"] == "hidden"
    assert (items["label"] == -1).all()
    assert report["excluded"]["invalid_label"] == 0
    # The report and the log say what is lost and how to supply labels (file and format).
    for text in ((tmp_path / "out" / "report.md").read_text(), caplog.text):
        assert "flip rates only" in text
        assert "set dataset.labels_file" in text and "item_id (CVQA's ID) and label (0-3" in text
    assert "labels are hidden" in caplog.text


def test_labels_file_supplies_labels(tmp_path, grouping):
    source = write_fixture(tmp_path / "hidden", hidden_labels=True, with_bad_rows=False)
    ids = pd.concat(
        [pd.read_parquet(p) for p in sorted((source / "data").glob("*.parquet"))], ignore_index=True
    )["ID"]
    keep = ids.iloc[:-1]  # the last item has no label in the file
    labels = pd.DataFrame({"item_id": keep, "label": [i % 4 for i in range(len(keep))]})
    labels.loc[0, "label"] = 9
    labels.to_csv(tmp_path / "labels.csv", index=False)
    report = prepare_dataset(
        config_for(source, grouping, labels_file=str(tmp_path / "labels.csv")), tmp_path / "out"
    )
    items = pd.read_parquet(tmp_path / "out" / "items.parquet").set_index("item_id")
    assert report["label_mode"] == "file"
    assert report["excluded"]["label_missing_in_file"] == 1
    assert report["excluded"]["invalid_label"] == 1
    assert items.loc[keep.iloc[1], "label"] == 1


def test_unknown_pair_is_an_error_or_its_own_group(source, tmp_path):
    partial = write_grouping(
        tmp_path / "partial.tsv",
        "country\tlanguage\tculture\nJapan\tJapanese\tJPN\nIndia\tHindi\tIND\nIndia\tTamil\tIND\n",
    )
    with pytest.raises(GroupingError, match="France-Breton"):
        prepare_dataset(config_for(source, partial), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    report = prepare_dataset(config_for(source, partial, unknown_pair="own_group"), tmp_path / "o2")
    assert "France-Breton" in report["cultures"]


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys, caplog):
    code = main(
        [
            "prepare-data", "--name", "x", "--source", "local",
            "--local-dir", str(tmp_path / "nowhere"), "--grouping",
            "resources/cvqa_culture_groups.tsv", "--out-dir", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert code == 2
    assert "no parquet shards match" in caplog.text


def test_hub_code_path_reads_a_local_dataset_folder(grouping, tmp_path):
    # load_dataset accepts a local folder, so the hub path is exercised without the network.
    # (datasets cannot concatenate shards whose Options types differ, so one encoding here.)
    folder = write_fixture(tmp_path / "hubcopy", string_options_shard=False)
    report = prepare_dataset(
        config_for(folder, grouping, source="hub", hub_id=str(folder), revision=None),
        tmp_path / "out",
    )
    assert report["items"] == 31
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["image_source"].str.startswith("hf://").all()
    assert items["image_source"].nunique() == 1
    assert parse_hub_reference(items["image_source"].iloc[0]) == (str(folder), "main", "test")


def test_hub_image_references_load_the_right_pixels(grouping, tmp_path, monkeypatch):
    # configs/paper.yaml reads CVQA from the hub: its items point at "hf://id@revision:split" + a
    # row, and load_image reopens that dataset (datasets.load_dataset accepts a local folder).
    from culture_neurons.data import images

    folder = write_fixture(tmp_path / "hubcopy", string_options_shard=False)
    prepare_dataset(
        config_for(folder, grouping, source="hub", hub_id=str(folder), revision=None),
        tmp_path / "out",
    )
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    opened = []

    def spy(hub_id, revision, split="test"):
        opened.append((hub_id, revision, split))
        return load_hub_dataset(hub_id, revision, split)

    monkeypatch.setattr(images, "load_hub_dataset", spy)
    monkeypatch.setattr(images, "_shard_reader", None)  # the parquet branch must not be taken
    images._hub_dataset.cache_clear()
    try:
        for item in items.itertuples(index=False):
            k = int(item.item_id.rsplit("_", 1)[1])
            expected = (k * 20 % 256, 80, 160)
            image = images.load_image(item.image_source, item.image_row)
            written = Image.open(io.BytesIO(png_bytes(expected))).convert("RGB")
            assert image.size == (16, 12) and image.tobytes() == written.tobytes(), item.item_id
    finally:
        images._hub_dataset.cache_clear()  # drop the dataset of this tmp folder
    # One dataset opened for all 31 items, and the one the reference names.
    assert opened == [(str(folder), "main", "test")]
