"""Tests of the synthetic demo dataset generator (culture_neurons.demo.generate)."""

import os

# Must be set before `datasets` is imported anywhere: these tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import ast
import copy
import csv
import io
import itertools
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from culture_neurons.demo.generate import (
    Style,
    generate_demo_dataset,
    load_spec,
    native_question,
    render_image,
)
from tests.cvqa_fixture import SCHEMA as CVQA_FIXTURE_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "resources" / "demo" / "cultures.yaml"
GROUPS = ROOT / "resources" / "demo" / "culture_groups.tsv"
TEST_FILE = "data/test-00000-of-00001.parquet"
TRAIN_FILE = "data/train-00000-of-00001.parquet"
CONTROL_FILE = "data/control-00000-of-00001.parquet"
SMALL = {
    "test_items_per_pair": 8,
    "train_items_per_pair": 8,
    "image_size": 112,
    "control_test_items_per_pair": 4,
    "control_train_items_per_pair": 6,
}
CONTROL_CATEGORY = "Control: shapes"

# The CVQA fixture's schema, written independently of the generator: a change to the generator's
# schema fails a test.
EXPECTED_SCHEMA = [(field.name, field.type) for field in CVQA_FIXTURE_SCHEMA]


@pytest.fixture(scope="module")
def raw_spec() -> dict:
    return yaml.safe_load(SPEC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_a")
    generate_demo_dataset(SPEC, out, seed=1234, **SMALL)
    return out


@pytest.fixture(scope="module")
def files(demo_dir) -> dict[str, list[dict]]:
    return {
        name: pq.read_table(demo_dir / f).to_pylist()
        for name, f in (("test", TEST_FILE), ("train", TRAIN_FILE), ("control", CONTROL_FILE))
    }


@pytest.fixture(scope="module")
def rows(files) -> dict[str, list[dict]]:
    """The cultural rows of the test and train portions."""
    return {
        portion: [r for r in files[portion] if r["Category"] != CONTROL_CATEGORY]
        for portion in ("test", "train")
    }


@pytest.fixture(scope="module")
def control_rows(files) -> dict[str, list[dict]]:
    """The control task's rows: its own file (split like the test portion) and the train
    portion's control rows."""
    return {
        "test": files["control"],
        "train": [r for r in files["train"] if r["Category"] == CONTROL_CATEGORY],
    }


@pytest.fixture(scope="module")
def pair_culture() -> dict[tuple[str, str], str]:
    """(language, country) -> culture code, from culture_groups.tsv."""
    with GROUPS.open(encoding="utf-8", newline="") as fh:
        return {
            (r["language"], r["country"]): r["culture"] for r in csv.DictReader(fh, delimiter="\t")
        }


def _culture_of(row: dict, pair_culture: dict) -> str:
    return pair_culture[ast.literal_eval(row["Subset"])]


def _decode(row: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))


# ------------------------------------------------------------------ an independent shape reader


def _shape_mask(pixels: np.ndarray, window: int = 32) -> np.ndarray:
    """Dark foreground pixels, cropped to a square around their bounding box and resized.

    The square crop (not a stretch to the box) keeps aspect ratio, so a bar stays a bar.
    Backgrounds and motif colours are all much lighter than the near-black foreground.
    """
    mask = pixels.max(axis=2) < 90
    ys, xs = np.nonzero(mask)
    assert len(ys) > 50, "no foreground shape found"
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 + 1
    padded = np.pad(mask, pixels.shape[0])
    off = pixels.shape[0]
    crop = padded[
        int(round(cy - half)) + off : int(round(cy + half)) + off,
        int(round(cx - half)) + off : int(round(cx + half)) + off,
    ]
    img = Image.fromarray(crop.astype(np.uint8) * 255).resize((window, window), Image.BILINEAR)
    return np.asarray(img) > 127


@pytest.fixture(scope="module")
def shape_templates(raw_spec) -> list[tuple[str, np.ndarray]]:
    # Several renderings per shape on a plain background, so rotations and sizes are covered.
    plain = Style(background=(230, 230, 230), motif="none", motif_color=(230, 230, 230))
    rng = np.random.default_rng(0)
    return [
        (obj, _shape_mask(np.asarray(render_image(obj, plain, size=112, rng=rng))))
        for obj in raw_spec["objects"]
        for _ in range(16)
    ]


def _read_shape(pixels: np.ndarray, templates: list[tuple[str, np.ndarray]]) -> str:
    """Nearest template by intersection over union of the normalised masks."""
    mask = _shape_mask(pixels)
    scores = [(mask & t).sum() / max(1, (mask | t).sum()) for _, t in templates]
    return templates[int(np.argmax(scores))][0]


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_bytes(demo_dir, tmp_path):
    generate_demo_dataset(SPEC, tmp_path, seed=1234, **SMALL)
    for name in (TEST_FILE, TRAIN_FILE, CONTROL_FILE, "generation.json", "README.md"):
        assert (tmp_path / name).read_bytes() == (demo_dir / name).read_bytes(), name


def test_other_seed_gives_other_items(rows, tmp_path):
    generate_demo_dataset(SPEC, tmp_path, seed=99, **SMALL)
    other = pq.read_table(tmp_path / TEST_FILE).to_pylist()
    assert [r["ID"] for r in other] == [r["ID"] for r in rows["test"]]
    same_image = sum(
        a["image"]["bytes"] == b["image"]["bytes"] for a, b in zip(other, rows["test"], strict=True)
    )
    assert same_image == 0
    answers = [(r["Options"], r["Label"]) for r in rows["test"]]
    assert [(r["Options"], r["Label"]) for r in other] != answers


def test_adding_a_culture_leaves_the_others_unchanged(raw_spec, rows, tmp_path):
    smaller = copy.deepcopy(raw_spec)
    dropped = smaller["cultures"].pop(0)
    spec = tmp_path / "cultures.yaml"
    spec.write_text(yaml.safe_dump(smaller), encoding="utf-8")
    generate_demo_dataset(spec, tmp_path / "out", seed=1234, **SMALL)
    kept = pq.read_table(tmp_path / "out" / TEST_FILE).to_pylist()
    full = [r for r in rows["test"] if dropped["country"] not in r["Subset"]]
    assert kept == full


# ------------------------------------------------------------------ schema and reading


@pytest.mark.parametrize("name", [TEST_FILE, TRAIN_FILE])
def test_parquet_schema_is_cvqa(demo_dir, name):
    schema = pq.read_schema(demo_dir / name)
    assert [(f.name, f.type) for f in schema] == EXPECTED_SCHEMA
    hf = json.loads(schema.metadata[b"huggingface"])
    assert hf["info"]["features"]["image"] == {"_type": "Image"}


def test_datasets_reads_and_decodes_images(demo_dir, tmp_path):
    import datasets
    from PIL import Image as PILImage

    ds = datasets.load_dataset(
        "parquet",
        data_files={"test": str(demo_dir / TEST_FILE), "train": str(demo_dir / TRAIN_FILE)},
        cache_dir=str(tmp_path / "hf_cache"),
    )
    assert ds["test"].column_names == [name for name, _ in EXPECTED_SCHEMA]
    assert isinstance(ds["test"].features["image"], datasets.Image)
    item = ds["train"][0]
    assert isinstance(item["image"], PILImage.Image)
    assert item["image"].size == (112, 112) and item["image"].mode == "RGB"
    assert isinstance(item["Options"], list) and len(item["Options"]) == 4
    assert isinstance(item["Label"], int)


def test_constant_columns_say_synthetic(rows):
    for row in itertools.chain(*rows.values()):
        assert row["Image Type"] == "Synthetic"
        assert row["Image Source"] == "culture-neurons demo generator"
        assert row["License"] == "CC0-1.0"
        assert row["Category"] == "Objects / materials / clothing"


def test_control_rows_say_synthetic_and_control(control_rows):
    for row in itertools.chain(*control_rows.values()):
        assert row["Image Type"] == "Synthetic" and row["License"] == "CC0-1.0"
        assert row["Category"] == CONTROL_CATEGORY


def test_summary_and_readme(demo_dir, files, rows, pair_culture):
    summary = json.loads((demo_dir / "generation.json").read_text(encoding="utf-8"))
    assert summary["synthetic"] is True and summary["seed"] == 1234
    assert summary["counts"] == {name: len(r) for name, r in files.items()}
    per_pair = Counter(r["Subset"] for r in rows["test"])
    assert {p["subset"]: p["test"] for p in summary["pairs"]} == dict(per_pair)
    assert len(summary["pairs"]) == len(pair_culture) == 9
    assert "synthetic" in (demo_dir / "README.md").read_text(encoding="utf-8").lower()


# ------------------------------------------------------------------ items


def test_control_items_ask_for_the_drawn_shape_in_shared_words(
    control_rows, raw_spec, pair_culture, shape_templates, demo_dir
):
    shapes = set(raw_spec["objects"])
    counts = {"test": SMALL["control_test_items_per_pair"], "train": 0}
    for portion, portion_rows in control_rows.items():
        assert portion_rows, portion
        for row in portion_rows:
            assert row["ID"].startswith(f"demo-control-{portion}-")
            assert len(set(row["Options"])) == 4 and set(row["Options"]) <= shapes
            # Read back from the pixels: the label names the shape drawn.
            assert row["Options"][row["Label"]] == _read_shape(_decode(row), shape_templates)
            assert "shape" in row["Translated Question"].lower()
        per_culture = Counter(_culture_of(r, pair_culture) for r in portion_rows)
        assert len(per_culture) == len(raw_spec["cultures"])
        if counts[portion]:
            assert set(per_culture.values()) == {counts[portion]}
    summary = json.loads((demo_dir / "generation.json").read_text(encoding="utf-8"))
    assert summary["counts"]["control"] == len(control_rows["test"])
    assert sum(p["control_train"] for p in summary["pairs"]) == len(control_rows["train"])


def test_control_rows_leave_the_cultural_rows_unchanged(rows, tmp_path):
    # Their own random streams: other control counts give the same cultural items.
    generate_demo_dataset(SPEC, tmp_path, seed=1234, **{**SMALL, "control_test_items_per_pair": 2})
    again = [r for r in pq.read_table(tmp_path / TRAIN_FILE).to_pylist()]
    assert [r for r in again if r["Category"] != CONTROL_CATEGORY] == rows["train"]
    assert pq.read_table(tmp_path / TEST_FILE).to_pylist() == rows["test"]


def test_control_ids_are_disjoint_from_cultural_ids(files):
    ids = [r["ID"] for name in files for r in files[name]]
    assert len(set(ids)) == len(ids)


def test_ids_unique_and_train_test_disjoint(rows):
    test_ids = [r["ID"] for r in rows["test"]]
    train_ids = [r["ID"] for r in rows["train"]]
    assert len(set(test_ids)) == len(test_ids)
    assert len(set(train_ids)) == len(train_ids)
    assert not set(test_ids) & set(train_ids)


def test_subsets_are_cvqa_tuples_of_known_pairs(rows, pair_culture):
    for portion in rows.values():
        subsets = {r["Subset"] for r in portion}
        parsed = {ast.literal_eval(s) for s in subsets}
        assert parsed == set(pair_culture), "every pair present, no unknown pair"


def test_options_distinct_and_from_the_items_culture(rows, raw_spec, pair_culture):
    inventory = {c["code"]: set(c["names"].values()) for c in raw_spec["cultures"]}
    for row in itertools.chain(*rows.values()):
        assert len(row["Options"]) == 4 and len(set(row["Options"])) == 4
        assert row["Translated Options"] == row["Options"]
        assert 0 <= row["Label"] <= 3
        assert set(row["Options"]) <= inventory[_culture_of(row, pair_culture)]


def test_label_points_at_the_name_of_the_drawn_shape(rows, raw_spec, pair_culture, shape_templates):
    # Reads the shape back from the pixels, independently of how the generator chose it.
    names = {c["code"]: c["names"] for c in raw_spec["cultures"]}
    for row in itertools.chain(*rows.values()):
        shape = _read_shape(_decode(row), shape_templates)
        expected = names[_culture_of(row, pair_culture)][shape]
        assert row["Options"][row["Label"]] == expected, row["ID"]


def test_objects_and_answer_positions_balanced(rows, pair_culture):
    for portion in rows.values():
        by_culture = defaultdict(list)
        for row in portion:
            by_culture[_culture_of(row, pair_culture)].append(row)
        for culture, items in by_culture.items():
            assert len(items) == 8, culture  # equal totals, also for the two-language culture
            answers = Counter(r["Options"][r["Label"]] for r in items)
            assert sorted(answers.values()) == [1] * 8, culture  # each of 8 objects once
            assert sorted(Counter(r["Label"] for r in items).values()) == [2, 2, 2, 2], culture


def test_balance_at_default_like_sizes(tmp_path):
    summary = generate_demo_dataset(
        SPEC, tmp_path, seed=7, test_items_per_pair=32, train_items_per_pair=16, image_size=56
    )
    # The control rows at their default counts: 32 test and 80 train per culture.
    for portion, n in (("test", 32), ("train", 16), ("control-test", 32), ("control-train", 80)):
        for code, counts in summary["object_counts"][portion].items():
            assert set(counts.values()) == {n // 8}, (portion, code)
        assert set(summary["label_counts"][portion]) == {n * 8 // 4}
    irr = [p for p in summary["pairs"] if p["culture"] == "IRR"]
    assert [p["test"] for p in irr] == [16, 16] and [p["train"] for p in irr] == [8, 8]
    img = pq.read_table(tmp_path / TEST_FILE).to_pylist()[0]
    assert Image.open(io.BytesIO(img["image"]["bytes"])).size == (56, 56)


def test_images_are_not_repeated(rows):
    for portion in rows.values():
        images = [r["image"]["bytes"] for r in portion]
        assert len(set(images)) == len(images)


def test_questions(rows, raw_spec):
    templates = set(raw_spec["question_templates"])
    irr_native = defaultdict(set)
    for row in itertools.chain(*rows.values()):
        assert row["Translated Question"] in templates
        assert row["Question"] != row["Translated Question"]
        if "Irrovia" in row["Subset"]:
            irr_native[row["Subset"]].add((row["Translated Question"], row["Question"]))
    # The two languages of one country ask the same question in different words.
    a, b = irr_native.values()
    assert not {q for _, q in a} & {q for _, q in b}
    assert native_question("What is this?", "ve") == "Tahwve sive sihtve?"


# ------------------------------------------------------------------ culture structure


def test_names_are_culture_specific(raw_spec):
    cultures = raw_spec["cultures"]
    for obj in raw_spec["objects"]:
        words = [c["names"][obj] for c in cultures]
        assert len(set(words)) == len(cultures), f"{obj} shares a name between cultures"
    all_words = [w for c in cultures for w in c["names"].values()]
    assert len(set(all_words)) == len(all_words), "a word belongs to more than one culture/object"


def test_each_answer_word_belongs_to_one_culture_in_the_data(rows, pair_culture):
    owners = defaultdict(set)
    for row in itertools.chain(*rows.values()):
        for word in row["Options"]:
            owners[word].add(_culture_of(row, pair_culture))
    assert all(len(c) == 1 for c in owners.values())
    assert len(owners) == 64


def test_styles_differ_between_cultures(rows, pair_culture):
    # The median pixel of an image is its background colour (the shape covers < half of it).
    medians = defaultdict(list)
    for row in rows["train"]:
        medians[_culture_of(row, pair_culture)].append(np.median(_decode(row).reshape(-1, 3), 0))
    mean = {c: np.mean(v, axis=0) for c, v in medians.items()}
    assert len(mean) == 8
    for a, b in itertools.combinations(mean, 2):
        assert np.abs(mean[a] - mean[b]).max() > 25, (a, b)


def test_culture_groups_tsv_agrees_with_spec(raw_spec):
    with GROUPS.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        assert reader.fieldnames == ["country", "language", "culture"]
        tsv = [(r["country"], r["language"], r["culture"]) for r in reader]
    from_spec = [
        (c["country"], lang["language"], c["code"])
        for c in raw_spec["cultures"]
        for lang in c["languages"]
    ]
    assert sorted(tsv) == sorted(from_spec)
    assert len(tsv) == 9 and len({code for *_, code in tsv}) == 8
    two = [c for c in raw_spec["cultures"] if len(c["languages"]) == 2]
    assert len(two) == 1


def test_load_spec_accepts_the_shipped_spec():
    spec = load_spec(SPEC)
    assert len(spec.cultures) == 8 and len(spec.objects) == 8
    assert len({c.style.motif for c in spec.cultures}) == 8


# ------------------------------------------------------------------ bad specs


def _mutate(raw: dict, how: str) -> dict:
    spec = copy.deepcopy(raw)
    cultures = spec["cultures"]
    if how == "duplicate name across cultures":
        cultures[1]["names"]["circle"] = cultures[0]["names"]["circle"]
    elif how == "duplicate name within culture":
        cultures[0]["names"]["square"] = cultures[0]["names"]["circle"]
    elif how == "fewer than 4 objects":
        spec["objects"] = spec["objects"][:3]
        for c in cultures:
            c["names"] = {o: c["names"][o] for o in spec["objects"]}
    elif how == "missing style":
        del cultures[2]["style"]
    elif how == "unknown motif":
        cultures[0]["style"]["motif"] = "paisley"
    elif how == "missing name":
        del cultures[3]["names"]["star"]
    elif how == "similar backgrounds":
        cultures[1]["style"]["background"] = [c + 5 for c in cultures[0]["style"]["background"]]
    elif how == "duplicate code":
        cultures[1]["code"] = cultures[0]["code"]
    elif how == "bad colour":
        cultures[0]["style"]["background"] = [300, 0, 0]
    elif how == "unknown shape":
        spec["objects"][0] = "hexagon"
    elif how == "no templates":
        spec["question_templates"] = []
    return spec


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("duplicate name across cultures", "duplicate name"),
        ("duplicate name within culture", "duplicate name"),
        ("fewer than 4 objects", "at least 4 objects"),
        ("missing style", "missing 'style'"),
        ("unknown motif", "unknown motif"),
        ("missing name", "missing \\['star'\\]"),
        ("similar backgrounds", "too similar"),
        ("duplicate code", "duplicate culture code"),
        ("bad colour", "RGB triple"),
        ("unknown shape", "unknown object shapes"),
        ("no templates", "question_templates"),
    ],
)
def test_bad_spec_raises(raw_spec, tmp_path, how, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(_mutate(raw_spec, how)), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        generate_demo_dataset(spec, tmp_path / "out", **SMALL)
    assert not (tmp_path / "out" / TEST_FILE).exists()


def test_bad_sizes_raise(tmp_path):
    with pytest.raises(ValueError, match="leaves a pair empty"):
        generate_demo_dataset(SPEC, tmp_path, test_items_per_pair=1, train_items_per_pair=8)
    with pytest.raises(ValueError, match="image_size"):
        generate_demo_dataset(SPEC, tmp_path, image_size=8)
