"""A CVQA-schema parquet fixture: real schema, both Options encodings, one bad row of each kind."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

# Real CVQA pairs (language, country), a few items each, two cultures grouped (IND).
PAIRS = [("Japanese", "Japan"), ("Hindi", "India"), ("Tamil", "India"), ("Breton", "France")]
GOOD_PER_PAIR = {"Japan": 11, "India": 6, "France": 8}

SCHEMA = pa.schema(
    [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("ID", pa.string()),
        ("Subset", pa.string()),
        ("Question", pa.string()),
        ("Translated Question", pa.string()),
        ("Options", pa.list_(pa.string())),
        ("Translated Options", pa.list_(pa.string())),
        ("Label", pa.int64()),
        ("Category", pa.string()),
        ("Image Type", pa.string()),
        ("Image Source", pa.string()),
        ("License", pa.string()),
    ]
)


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def row(item_id: str, language: str, country: str, k: int, **overrides) -> dict:
    record = {
        "image": {"bytes": png_bytes((k * 20 % 256, 80, 160)), "path": None},
        "ID": item_id,
        "Subset": str((language, country)),
        "Question": f"native question {k}",
        "Translated Question": f"What is shown in picture {k}?",
        "Options": [f"native {k} {j}" for j in range(4)],
        "Translated Options": [f"answer {k} {j}" for j in range(4)],
        "Label": k % 4,
        "Category": "Objects / materials / clothing",
        "Image Type": "Self",
        "Image Source": "fixture",
        "License": "CC BY-SA",
    }
    record.update(overrides)
    return record


def good_rows(hidden_labels: bool = False) -> list[dict]:
    rows = []
    for language, country in PAIRS:
        for k in range(GOOD_PER_PAIR[country]):
            item_id = f"{country[:2]}{language[:2]}_{k:03d}"
            extra = {"Label": -1} if hidden_labels else {}
            rows.append(row(item_id, language, country, k, **extra))
    return rows


BAD_ROWS = {
    "invalid_label": row("bad_label", "Japanese", "Japan", 90, Label=7),
    "options_not_4": row(
        "bad_options", "Japanese", "Japan", 91, **{"Translated Options": ["a", "b", "c"]}
    ),
    "empty_question": row("bad_question", "Japanese", "Japan", 92, **{"Translated Question": "  "}),
    "image_undecodable": row(
        "bad_image", "Japanese", "Japan", 93, image={"bytes": b"\x89PNG broken", "path": None}
    ),
    "bad_subset": row("bad_subset", "Japanese", "Japan", 94, Subset="Japan / Japanese"),
}
DUPLICATE_ID = "dup_0001"


def write_fixture(
    folder: Path,
    *,
    hidden_labels: bool = False,
    with_bad_rows: bool = True,
    string_options_shard: bool = True,
) -> Path:
    """Two shards: the first stores Options as lists, the second (unless ``string_options_shard``
    is False) as one string, like older revisions."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    rows = good_rows(hidden_labels)
    if with_bad_rows:
        bad = [dict(r) for r in BAD_ROWS.values()]
        if hidden_labels:
            bad = [r for r in bad if r["ID"] != "bad_label"]
            for r in bad:
                r["Label"] = -1
        rows += bad
        rows += [
            row(DUPLICATE_ID, "Breton", "France", 95, **({"Label": -1} if hidden_labels else {})),
            row(DUPLICATE_ID, "Breton", "France", 96, **({"Label": -1} if hidden_labels else {})),
        ]
    half = len(rows) // 2
    pq.write_table(
        pa.Table.from_pylist(rows[:half], schema=SCHEMA), data / "test-00000-of-00002.parquet"
    )
    string_schema = SCHEMA.set(
        SCHEMA.get_field_index("Options"), pa.field("Options", pa.string())
    ).set(SCHEMA.get_field_index("Translated Options"), pa.field("Translated Options", pa.string()))
    second = rows[half:]
    if string_options_shard:
        second = [
            {**r, "Options": str(r["Options"]), "Translated Options": str(r["Translated Options"])}
            for r in second
        ]
    else:
        string_schema = SCHEMA
    pq.write_table(
        pa.Table.from_pylist(second, schema=string_schema), data / "test-00001-of-00002.parquet"
    )
    return folder


GROUPING_TSV = """country\tlanguage\tculture\tpaper_identification\tpaper_evaluation
Japan\tJapanese\tJPN\t5\t6
India\tHindi\tIND\t\t
India\tTamil\tIND\t\t
France\tBreton\tFRA\t4\t4
"""


def write_grouping(path: Path, text: str = GROUPING_TSV) -> Path:
    path.write_text(text)
    return path


def prepare_fixture(root: Path) -> Path:
    """prepare-data on the clean CVQA fixture (no bad rows, no train portion) under ``root``;
    returns its output folder (items.parquet, report.json, ...)."""
    from culture_neurons.data.prepare import DatasetConfig, prepare_dataset

    source = write_fixture(root / "src", with_bad_rows=False)
    config = DatasetConfig(
        name="fixture", source="local", local_dir=str(source),
        grouping=str(write_grouping(root / "groups.tsv")),
    )  # fmt: skip
    prepare_dataset(config, root / "out")
    return root / "out"
