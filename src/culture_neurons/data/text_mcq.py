"""Text multiple-choice datasets (BLEnD's MCQs, CulturalBench, a local CSV): a table plus a column
mapping, turned into the same candidate items as CVQA rows (no image).

The mapping (`dataset.columns`) names the table's columns: ``question``; ``options`` (one column
holding a list, the string of a list, or a JSON object keyed A-D; or a list of four columns);
``label`` with ``label_format`` index (0-3), letter (A-D) or text (the correct option's text);
and either ``culture``, or ``country`` alone (the country is the culture), or ``country`` plus
``language`` run through the grouping file. ``id`` and ``category`` are optional.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from culture_neurons.data.cvqa import SourceError, load_dataset_offline_aware, parse_options

LABEL_FORMATS = ("index", "letter", "text")
LETTERS = "ABCD"
#: Files a local text dataset may come in, by suffix.
TABLE_READERS = {
    ".csv": lambda path: pd.read_csv(path, dtype=str, keep_default_na=False),
    ".tsv": lambda path: pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False),
    ".parquet": pd.read_parquet,
    ".jsonl": lambda path: pd.read_json(path, lines=True, dtype=False),
    ".json": lambda path: pd.read_json(path, dtype=False),
}
MAPPING_KEYS = (
    "id",
    "question",
    "question_pattern",
    "options",
    "label",
    "label_format",
    "culture",
    "country",
    "language",
    "category",
)


@dataclass(frozen=True)
class ColumnMapping:
    """`dataset.columns`: which table column holds what (see the module docstring)."""

    question: str
    options: str | tuple[str, ...]
    label: str | None = None
    label_format: str = "index"
    culture: str | None = None
    country: str | None = None
    language: str | None = None
    id: str | None = None
    category: str | None = None
    question_pattern: str | None = None

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> ColumnMapping:
        if not mapping:
            raise SourceError("dataset.kind text_mcq needs dataset.columns (the column mapping)")
        unknown = sorted(set(mapping) - set(MAPPING_KEYS))
        if unknown:
            raise SourceError(
                f"dataset.columns: unknown key(s) {unknown}; known: {', '.join(MAPPING_KEYS)}"
            )
        for key in ("question", "options"):
            if not mapping.get(key):
                raise SourceError(f"dataset.columns.{key} is required for a text dataset")
        options = mapping["options"]
        if isinstance(options, (list, tuple)):
            if len(options) != 4 or not all(isinstance(o, str) and o for o in options):
                raise SourceError(
                    "dataset.columns.options must name one list column or exactly 4 columns, "
                    f"got {options!r}"
                )
            options = tuple(options)
        label_format = mapping.get("label_format", "index")
        if label_format not in LABEL_FORMATS:
            raise SourceError(
                f"dataset.columns.label_format must be one of {LABEL_FORMATS}, not {label_format!r}"
            )
        if not (mapping.get("culture") or mapping.get("country")):
            raise SourceError(
                "dataset.columns needs culture, or country (optionally with language and a "
                "grouping file)"
            )
        if mapping.get("culture") and (mapping.get("country") or mapping.get("language")):
            raise SourceError("dataset.columns: give culture, or country/language, not both")
        if mapping.get("language") and not mapping.get("country"):
            raise SourceError("dataset.columns.language needs dataset.columns.country")
        pattern = mapping.get("question_pattern")
        if pattern:
            try:
                if re.compile(pattern).groups < 1:
                    raise SourceError(
                        "dataset.columns.question_pattern needs a group: the question is group 1"
                    )
            except re.error as err:
                raise SourceError(f"dataset.columns.question_pattern: {err}") from err
        fields = {k: mapping.get(k) for k in MAPPING_KEYS}
        fields.update(options=options, label_format=label_format)
        return cls(**fields)

    def columns(self) -> dict[str, str]:
        """Mapping key -> table column, for every column the mapping names."""
        named = {
            key: getattr(self, key)
            for key in ("id", "question", "label", "culture", "country", "language", "category")
            if getattr(self, key)
        }
        if isinstance(self.options, tuple):
            named.update({f"options[{i}]": c for i, c in enumerate(self.options)})
        else:
            named["options"] = self.options
        return named

    def check_against(self, table_columns: list[str], source: str) -> None:
        """A mapping that names a column the table lacks is refused before any row is read."""
        missing = {k: c for k, c in self.columns().items() if c not in table_columns}
        if missing:
            listed = ", ".join(f"{k}: {c!r}" for k, c in missing.items())
            raise SourceError(
                f"dataset.columns names column(s) missing from {source}: {listed}. The table "
                f"has: {', '.join(map(str, table_columns))}"
            )


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def read_local_table(local_dir: str, files: str) -> tuple[pd.DataFrame, str]:
    """The rows of every file matching ``files`` under ``local_dir`` (csv, tsv, parquet, json,
    jsonl), in file order; files with other columns than the first are refused."""
    paths = sorted(Path(p) for p in glob.glob(str(Path(local_dir) / files)))
    if not paths:
        raise SourceError(f"no files match {files!r} under {local_dir}")
    tables = []
    for path in paths:
        reader = TABLE_READERS.get(path.suffix.lower())
        if reader is None:
            raise SourceError(
                f"{path}: unsupported table format; use one of {', '.join(TABLE_READERS)}"
            )
        try:
            tables.append(reader(path))
        except (ValueError, pd.errors.ParserError, OSError) as err:
            raise SourceError(f"{path} cannot be read as a table: {err}") from err
    for path, table in zip(paths[1:], tables[1:], strict=True):
        problem = column_difference(list(tables[0].columns), list(table.columns))
        if problem:
            # pd.concat would fill the gaps with NaN: rows silently losing a field.
            raise SourceError(f"{path} has other columns than {paths[0]}: {problem}")
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    return table, f"{len(paths)} file(s) of {local_dir}/{files}"


def column_difference(first: list[str], other: list[str]) -> str:
    """What ``other`` lacks and adds against ``first`` ("" when they hold the same columns; the
    order does not matter, as tables are concatenated by column name)."""
    missing = [c for c in first if c not in other]
    extra = [c for c in other if c not in first]
    named = (("lacks", missing), ("adds", extra))
    return "; ".join(f"{label} {', '.join(map(repr, cols))}" for label, cols in named if cols)


def read_hub_table(
    hub_id: str, revision: str | None, config_name: str | None, split: str
) -> tuple[pd.DataFrame, str]:
    """``datasets.load_dataset(hub_id, config_name, revision=..., split=...)`` as a table."""
    dataset = load_dataset_offline_aware(hub_id, config_name, revision, split)
    source = f"hf://{hub_id}@{revision or 'main'}" + (f"/{config_name}" if config_name else "")
    return dataset.to_pandas(), f"{source}:{split}"


def parse_text_options(value: Any) -> list[str]:
    """A list column: a list, the string of a list, or a JSON/Python object keyed A, B, C, D
    (BLEnD's ``choices``), taken in key order."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{"):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                value = stripped
    if isinstance(value, dict):
        return [_text(value[k]) for k in sorted(value, key=str)]
    return parse_options(value)


def resolve_label(raw: Any, options: list[str], label_format: str) -> int | None:
    """The 0-3 index of the correct option, or None when the label matches no option."""
    text = _text(raw)
    if not text:
        return None
    if label_format == "index":
        try:
            number = float(text)
        except ValueError:
            return None
        index = int(number)
        return index if number == index and 0 <= index < len(options) else None
    if label_format == "letter":
        letter = text.strip("()[]. ").upper()
        return LETTERS.index(letter) if len(letter) == 1 and letter in LETTERS else None
    exact = [i for i, option in enumerate(options) if option == text]
    if len(exact) == 1:
        return exact[0]
    folded = [i for i, option in enumerate(options) if option.casefold() == text.casefold()]
    return folded[0] if len(folded) == 1 else None


@dataclass(frozen=True)
class TextRow:
    """One table row after mapping: fields ready for validation."""

    row: int
    item_id: str
    question: str
    options: Any
    label: Any
    culture: str
    country: str
    language: str
    category: str


def iter_text_rows(
    table: pd.DataFrame, mapping: ColumnMapping, dataset_name: str
) -> Iterator[TextRow]:
    """The mapped fields of every row; IDs default to ``{dataset}-{row}``."""
    pattern = re.compile(mapping.question_pattern, re.S) if mapping.question_pattern else None
    for row, record in enumerate(table.to_dict(orient="records")):
        if isinstance(mapping.options, tuple):
            options: Any = [_text(record[c]) for c in mapping.options]
        else:
            options = record[mapping.options]
        question = _text(record[mapping.question])
        if pattern is not None:
            found = pattern.search(question)
            question = _text(found.group(1)) if found else ""
        country = _text(record[mapping.country]) if mapping.country else ""
        yield TextRow(
            row=row,
            item_id=_text(record[mapping.id]) if mapping.id else f"{dataset_name}-{row}",
            question=question,
            options=options,
            label=record[mapping.label] if mapping.label else None,
            culture=_text(record[mapping.culture]) if mapping.culture else country,
            country=country,
            language=_text(record[mapping.language]) if mapping.language else "",
            category=_text(record[mapping.category]) if mapping.category else "",
        )
