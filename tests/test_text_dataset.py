"""Text multiple-choice datasets (dataset.kind text_mcq): column mappings, per-reason exclusions,
grouping, split and report, as for CVQA; the shipped real-culture dataset; the offline hub."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from culture_neurons.cli import main
from culture_neurons.data.cvqa import SourceError
from culture_neurons.data.prepare import DatasetConfig, prepare_dataset
from culture_neurons.data.split import EVALUATION, IDENTIFICATION
from culture_neurons.data.text_mcq import ColumnMapping, parse_text_options, resolve_label

ROOT = Path(__file__).resolve().parents[1]
FOUR_COLUMNS = {
    "id": "qid",
    "question": "q",
    "options": ["a", "b", "c", "d"],
    "label": "answer",
    "label_format": "letter",
    "culture": "culture",
    "category": "topic",
}


def four_column_table(n_per_culture: int = 6) -> pd.DataFrame:
    rows = []
    for culture in ("Japan", "Peru"):
        for i in range(n_per_culture):
            rows.append(
                {
                    "qid": f"{culture[:2]}{i}",
                    "q": f"In {culture}, which thing is number {i}?",
                    "a": f"thing {i}",
                    "b": f"other {i}",
                    "c": f"third {i}",
                    "d": f"fourth {i}",
                    "answer": "ABCD"[i % 4],
                    "culture": culture,
                    "topic": "food",
                }
            )
    return pd.DataFrame(rows)


def config(folder: Path, columns: dict, files: str = "*.csv", **extra) -> DatasetConfig:
    settings = {"grouping": None, **extra}
    return DatasetConfig(
        name="text-fixture",
        kind="text_mcq",
        source="local",
        local_dir=str(folder),
        files=files,
        columns=columns,
        **settings,
    )


def test_four_option_columns_with_letter_labels(tmp_path):
    table = four_column_table()
    table.to_csv(tmp_path / "mcq.csv", index=False)
    report = prepare_dataset(config(tmp_path, FOUR_COLUMNS), tmp_path / "out")
    items = pd.read_parquet(tmp_path / "out" / "items.parquet").set_index("item_id")
    assert report["kind"] == "text_mcq" and report["items"] == 12 and report["excluded_total"] == 0
    assert report["label_mode"] == "labelled"
    first = items.loc["Ja1"]
    assert list(first["options"]) == ["thing 1", "other 1", "third 1", "fourth 1"]
    assert first["label"] == 1 and first["culture"] == "Japan" and first["category"] == "food"
    assert first["image_source"] == ""  # a text item: no image to load
    # Split 50/50 per culture, as for CVQA.
    per_culture = report["items_per_culture"]
    assert per_culture == {
        c: {IDENTIFICATION: 3, EVALUATION: 3} for c in ("Japan", "Peru")
    }  # fmt: skip
    assert "text_mcq (text only" in (tmp_path / "out" / "report.md").read_text()


def test_list_column_with_index_and_text_labels(tmp_path):
    table = pd.DataFrame(
        {
            "question": ["Q one?", "Q two?", "Q three?", "Q four?"],
            "choices": [["w", "x", "y", "z"], ["p", "q", "r", "s"]] * 2,
            "gold": [2, 0, 3, 1],
            "gold_text": ["y", "p", "Z", "q"],  # text labels match case-insensitively
            "country": ["Chile", "Chile", "Ghana", "Ghana"],
        }
    )
    table.to_parquet(tmp_path / "t.parquet")
    base = {"question": "question", "options": "choices", "country": "country"}
    for label, fmt in (("gold", "index"), ("gold_text", "text")):
        out = tmp_path / f"out-{fmt}"
        prepare_dataset(
            config(tmp_path, {**base, "label": label, "label_format": fmt}, "*.parquet"), out
        )
        items = pd.read_parquet(out / "items.parquet").sort_values("question")
        assert dict(zip(items["question"], items["label"], strict=True)) == {
            "Q one?": 2, "Q two?": 0, "Q three?": 3, "Q four?": 1,
        }  # fmt: skip
        assert set(items["culture"]) == {"Chile", "Ghana"}  # the country is the culture
        assert items["item_id"].tolist() != [] and items["item_id"].str.startswith("text-").all()


def test_bad_rows_are_excluded_and_counted_per_reason(tmp_path):
    table = four_column_table()
    table.loc[0, "answer"] = "E"  # a letter outside A-D
    table.loc[1, "answer"] = ""  # no label at all
    table.loc[2, "culture"] = ""  # no culture
    table.loc[3, "d"] = ""  # three options
    table.loc[4, "q"] = "  "  # empty question
    table.loc[7, "qid"] = table.loc[8, "qid"]  # one ID twice: both copies go
    table.to_csv(tmp_path / "mcq.csv", index=False)
    report = prepare_dataset(config(tmp_path, FOUR_COLUMNS), tmp_path / "out")
    excluded = report["excluded"]
    assert excluded["label_unmatched"] == 2
    assert excluded["culture_missing"] == 1
    assert excluded["options_not_4"] == 1
    assert excluded["empty_question"] == 1
    assert excluded["duplicate_id"] == 2
    assert report["items"] == 12 - 7 and report["excluded_total"] == 7
    assert "bad_subset" not in excluded and "image_undecodable" not in excluded  # CVQA-only
    assert report["excluded_examples"]["options_not_4"] == ["Ja3: 3 option(s)"]
    # The duplicated ID is listed once, with its count.
    assert report["excluded_examples"]["duplicate_id"] == [f"{table.loc[8, 'qid']}: 2 copies"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| label matches no option (index, letter or option text) | 2 |" in md


def test_a_mapping_naming_a_missing_column_is_one_clear_error(tmp_path):
    four_column_table().to_csv(tmp_path / "mcq.csv", index=False)
    mapping = {**FOUR_COLUMNS, "options": ["a", "b", "c", "option_d"], "category": "kind"}
    with pytest.raises(SourceError) as err:
        prepare_dataset(config(tmp_path, mapping), tmp_path / "out")
    message = str(err.value)
    assert "options[3]: 'option_d'" in message and "category: 'kind'" in message
    assert "The table has: qid, q, a, b, c, d, answer, culture, topic" in message
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    ("mapping", "needle"),
    [
        ({"options": "o", "culture": "c"}, "columns.question is required"),
        ({"question": "q", "options": ["a", "b", "c"], "culture": "c"}, "exactly 4 columns"),
        ({"question": "q", "options": "o"}, "needs culture, or country"),
        ({"question": "q", "options": "o", "culture": "c", "label_format": "roman"}, "roman"),
        ({"question": "q", "options": "o", "culture": "c", "answer": "x"}, "unknown key"),
        ({"question": "q", "options": "o", "culture": "c", "question_pattern": "x"}, "group"),
        ({"question": "q", "options": "o", "language": "l", "culture": "c"}, "not both"),
    ],
)
def test_mapping_errors_name_the_key(mapping, needle):
    with pytest.raises(SourceError, match=needle):
        ColumnMapping.from_mapping(mapping)


def test_country_and_language_go_through_the_grouping(tmp_path):
    table = pd.DataFrame(
        {
            "question": [f"Q{i}?" for i in range(6)],
            "choices": ['["a", "b", "c", "d"]'] * 6,  # the string of a list
            "label": ["0"] * 6,
            "country": ["Spain", "Spain", "Mexico", "Mexico", "Mexico", "Chile"],
            "lang": ["Spanish", "Catalan", "Spanish", "Spanish", "", "Spanish"],
        }
    )
    table.to_csv(tmp_path / "t.csv", index=False)
    grouping = tmp_path / "groups.tsv"
    grouping.write_text(
        "country\tlanguage\tculture\nSpain\tSpanish\tES\nSpain\tCatalan\tES\nMexico\tSpanish\tMX\n"
    )
    mapping = {
        "question": "question", "options": "choices", "label": "label", "country": "country",
        "language": "lang",
    }  # fmt: skip
    with pytest.raises(SourceError, match="dataset.grouping"):
        prepare_dataset(config(tmp_path, mapping), tmp_path / "out")
    from culture_neurons.data.grouping import GroupingError

    with pytest.raises(GroupingError, match="Chile-Spanish"):
        prepare_dataset(config(tmp_path, mapping, grouping=str(grouping)), tmp_path / "out")
    report = prepare_dataset(
        config(tmp_path, mapping, grouping=str(grouping), unknown_pair="own_group"),
        tmp_path / "out",
    )
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert sorted(items["culture"]) == ["Chile-Spanish", "ES", "ES", "MX", "MX"]
    assert report["excluded"]["culture_missing"] == 1  # the row without a language
    assert sorted(items["subset"].unique()) == [
        "Chile-Spanish", "Mexico-Spanish", "Spain-Catalan", "Spain-Spanish",
    ]  # fmt: skip


def test_blend_style_choices_and_question_pattern():
    # BLEnD's MCQs: `choices` is a JSON object keyed A-D, `answer_idx` a letter, and `prompt`
    # holds the question followed by BLEnD's own instruction.
    assert parse_text_options('{"B": "tea", "A": "milk", "D": "juice", "C": "water"}') == [
        "milk", "tea", "water", "juice",
    ]  # fmt: skip
    assert resolve_label("C", ["w", "x", "y", "z"], "letter") == 2
    assert resolve_label("(b)", ["w", "x", "y", "z"], "letter") == 1
    assert resolve_label("4", ["w", "x", "y", "z"], "index") is None
    assert resolve_label("1.0", ["w", "x", "y", "z"], "index") == 1
    assert resolve_label("x", ["x", "X", "y", "z"], "text") == 0
    assert resolve_label("X ", ["x", "x", "y", "z"], "text") is None  # ambiguous
    table = pd.DataFrame(
        {
            "prompt": ["What do people drink at breakfast in Spain? Without any explanation..."],
            "choices": ['{"A": "coffee", "B": "tea", "C": "water", "D": "milk"}'],
            "answer_idx": ["A"],
            "country": ["Spain"],
        }
    )
    from culture_neurons.data.text_mcq import iter_text_rows

    mapping = ColumnMapping.from_mapping(
        {
            "question": "prompt",
            "question_pattern": r"^(.*?\?)",
            "options": "choices",
            "label": "answer_idx",
            "label_format": "letter",
            "country": "country",
        }  # fmt: skip
    )
    (row,) = iter_text_rows(table, mapping, "blend")
    assert row.question == "What do people drink at breakfast in Spain?"


def test_hub_text_table_through_a_local_datasets_folder(tmp_path):
    # load_dataset accepts a local folder, so the hub branch runs without the network.
    folder = tmp_path / "hubcopy"
    folder.mkdir()
    four_column_table().to_csv(folder / "test.csv", index=False)
    settings = {
        "name": "hub-text", "kind": "text_mcq", "source": "hub", "hub_id": str(folder),
        "revision": None, "grouping": None, "columns": FOUR_COLUMNS,
    }  # fmt: skip
    report = prepare_dataset(DatasetConfig(**settings, hub_split="test"), tmp_path / "out")
    assert report["items"] == 12 and report["source"].endswith(":test")
    with pytest.raises(SourceError, match='Unknown split "train"'):
        prepare_dataset(DatasetConfig(**settings, hub_split="train"), tmp_path / "out2")


def test_an_unreachable_hub_dataset_is_one_line(tmp_path, caplog):
    code = main(
        ["prepare-data", "--name", "cb", "--kind", "text_mcq", "--source", "hub",
         "--hub-id", "kellycyy/CulturalBench", "--hub-config", "CulturalBench-Easy",
         "--revision", "2d5acf9fde133b9607c26a3de8d34390a169d29a",
         "--columns", json.dumps({"question": "prompt_question", "options": "x", "country": "c"}),
         "--out-dir", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "kellycyy/CulturalBench" in errors[0].getMessage()
    assert "offline" in errors[0].getMessage()


def assert_options_distinct(items: pd.DataFrame) -> None:
    """Four options per item, none containing another: the answer is matched by its text."""
    for options in items["options"]:
        folded = [o.casefold() for o in options]
        assert len(set(folded)) == 4
        assert not any(a in b for a in folded for b in folded if a != b)


def test_the_shipped_real_culture_dataset_prepares_cleanly(tmp_path):
    # resources/culture_mcq: 6 cultures x 60 questions, written and checked for this project.
    import yaml

    dataset = yaml.safe_load((ROOT / "configs" / "smollm2.yaml").read_text())["dataset"]
    dataset["local_dir"] = str(ROOT / dataset["local_dir"])
    report = prepare_dataset(DatasetConfig.from_mapping(dataset), tmp_path / "out")
    assert report["excluded_total"] == 0 and report["items"] == 360
    assert len(report["cultures"]) == 6
    for counts in report["items_per_culture"].values():
        assert counts == {IDENTIFICATION: 30, EVALUATION: 30}
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["label"].between(0, 3).all()
    assert set(items["category"]) == {"food", "festivals", "customs", "places", "sport"}
    assert_options_distinct(items)


def test_the_shipped_control_task_prepares_cleanly_with_the_datasets_columns(tmp_path):
    # resources/culture_mcq/control.csv: the attribution selectors' culture-free control task,
    # read through the cultural dataset's settings as rule prepare_task reads it.
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "smollm2.yaml").read_text())
    dataset = {**config["dataset"], "files": config["attribution"]["control_files"]}
    dataset["local_dir"] = str(ROOT / dataset["local_dir"])
    report = prepare_dataset(DatasetConfig.from_mapping(dataset), tmp_path / "out")
    assert report["excluded_total"] == 0 and report["items"] == 60
    assert report["items_per_culture"] == {"Control": {IDENTIFICATION: 30, EVALUATION: 30}}
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["label"].value_counts().to_dict() == {0: 15, 1: 15, 2: 15, 3: 15}
    assert_options_distinct(items)


def test_cultures_are_planned_from_the_table_before_preparation(tmp_path):
    from culture_neurons.data.prepare import planned_cultures

    table = four_column_table()
    table.loc[0, "culture"] = ""  # excluded, plans nothing
    table.loc[1, "culture"] = "Chad"
    table.to_csv(tmp_path / "mcq.csv", index=False)
    section = {
        "name": "t", "kind": "text_mcq", "source": "local", "local_dir": str(tmp_path),
        "files": "*.csv", "grouping": None, "columns": FOUR_COLUMNS,
    }  # fmt: skip
    assert planned_cultures(section) == ["Chad", "Japan", "Peru"]
    with pytest.raises(SourceError, match="run `snakemake --cores 1 prepare_data` first"):
        planned_cultures({**section, "source": "hub", "hub_id": "x/y"})
    cvqa = {"name": "c", "source": "local", "local_dir": ".", "grouping": str(
        ROOT / "resources" / "cvqa_culture_groups.tsv"
    )}  # fmt: skip
    assert len(planned_cultures(cvqa)) == 25  # the paper's Table 4


# ------------------------------------------------------ labels, files and patterns as data has them
@pytest.mark.parametrize(
    ("raw", "label_format", "expected"),
    [
        ("1", "index", 1),
        ("2.0", "index", 2),  # a float column written out: still option 2
        (3, "index", 3),
        ("1.5", "index", None),  # not an option, not option 1
        ("0.9", "index", None),
        ("-0.5", "index", None),
        ("B", "letter", 1),
        (" d. ", "letter", 3),
        ("AB", "letter", None),  # two letters: not A
        ("BA", "letter", None),
        ("Answer: B", "letter", None),
    ],
)
def test_labels_that_name_no_single_option_are_not_rounded_or_truncated(
    raw, label_format, expected
):
    assert resolve_label(raw, ["w", "x", "y", "z"], label_format) == expected


def test_fractional_and_multi_letter_labels_are_excluded_end_to_end(tmp_path):
    table = four_column_table()
    table.loc[0, "answer"] = "AB"
    table.to_csv(tmp_path / "letters.csv", index=False)
    report = prepare_dataset(config(tmp_path, FOUR_COLUMNS), tmp_path / "out")
    assert report["excluded"]["label_unmatched"] == 1
    assert report["excluded_examples"]["label_unmatched"] == ["Ja0: label 'AB'"]

    index = tmp_path / "index"
    index.mkdir()
    table = four_column_table().assign(answer=["0", "1.5", "2.0", "3", "0.5", "1"] * 2)
    table.to_csv(index / "t.csv", index=False)
    report = prepare_dataset(
        config(index, {**FOUR_COLUMNS, "label_format": "index"}), tmp_path / "out-index"
    )
    assert report["excluded"]["label_unmatched"] == 4  # 1.5 and 0.5, in each culture
    items = pd.read_parquet(tmp_path / "out-index" / "items.parquet").set_index("item_id")
    assert items["label"].to_dict() == {
        "Ja0": 0, "Ja2": 2, "Ja3": 3, "Ja5": 1, "Pe0": 0, "Pe2": 2, "Pe3": 3, "Pe5": 1,
    }  # fmt: skip


def test_files_with_other_columns_are_refused_not_concatenated(tmp_path):
    table = four_column_table()
    table.iloc[:6].to_csv(tmp_path / "a.csv", index=False)
    # The second file names its category column differently: concatenated, every one of its
    # rows would lose its category (and a missing label column its label).
    table.iloc[6:].rename(columns={"topic": "theme"}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(SourceError) as err:
        prepare_dataset(config(tmp_path, FOUR_COLUMNS), tmp_path / "out")
    message = str(err.value)
    assert "b.csv has other columns than" in message and "a.csv" in message
    assert "lacks 'topic'" in message and "adds 'theme'" in message
    assert not (tmp_path / "out").exists()

    # The same columns in another order are the same table: rows are matched by column name.
    table.iloc[6:][list(reversed(table.columns))].to_csv(tmp_path / "b.csv", index=False)
    report = prepare_dataset(config(tmp_path, FOUR_COLUMNS), tmp_path / "out")
    assert report["items"] == 12 and report["excluded_total"] == 0
    items = pd.read_parquet(tmp_path / "out" / "items.parquet").set_index("item_id")
    assert list(items.loc["Pe1", "options"]) == ["thing 1", "other 1", "third 1", "fourth 1"]
    assert items.loc["Pe1", "label"] == 1 and items.loc["Pe1", "category"] == "food"


def test_a_question_pattern_matches_across_lines():
    from culture_neurons.data.text_mcq import iter_text_rows

    # A prompt whose question spans two lines before the dataset's own instruction.
    table = pd.DataFrame(
        {
            "prompt": [
                "In Spain,\nwhat do people drink at breakfast?\nAnswer with one letter.",
                "What is eaten at Nowruz?\nWithout any explanation...",
            ],
            "choices": ['{"A": "coffee", "B": "tea", "C": "water", "D": "milk"}'] * 2,
            "answer_idx": ["A", "B"],
            "country": ["Spain", "Iran"],
        }
    )
    columns = {
        "question": "prompt", "question_pattern": r"^(.*?\?)", "options": "choices",
        "label": "answer_idx", "label_format": "letter", "country": "country",
    }  # fmt: skip
    mapping = ColumnMapping.from_mapping(columns)
    questions = [row.question for row in iter_text_rows(table, mapping, "blend")]
    first, second = "In Spain,\nwhat do people drink at breakfast?", "What is eaten at Nowruz?"
    assert questions == [first, second]
