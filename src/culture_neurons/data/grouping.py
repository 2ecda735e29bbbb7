"""Country–language pairs → culture groups (the paper's Table 4), read from an editable TSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from culture_neurons.errors import InputError

REQUIRED_COLUMNS = ("country", "language", "culture")


class GroupingError(InputError):
    """The grouping file is malformed or a pair is missing from it."""


@dataclass(frozen=True)
class Grouping:
    """Maps (country, language) to a culture code; optional paper counts per pair."""

    culture_of: dict[tuple[str, str], str]
    paper_counts: dict[tuple[str, str], tuple[int, int]]

    @property
    def cultures(self) -> list[str]:
        return sorted(set(self.culture_of.values()))

    def lookup(self, country: str, language: str) -> str | None:
        return self.culture_of.get((country, language))


def load_grouping(path: str | Path) -> Grouping:
    """Read a TSV with columns country, language, culture (+ optional paper_* counts)."""
    path = Path(path)
    if not path.is_file():
        raise GroupingError(f"grouping file {path} does not exist")
    table = pd.read_csv(path, sep="\t", comment="#", dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise GroupingError(f"grouping file {path} lacks column(s) {missing}")
    culture_of: dict[tuple[str, str], str] = {}
    paper_counts: dict[tuple[str, str], tuple[int, int]] = {}
    has_counts = {"paper_identification", "paper_evaluation"} <= set(table.columns)
    for line_no, row in enumerate(table.itertuples(index=False), start=1):
        key = (row.country.strip(), row.language.strip())
        culture = row.culture.strip()
        if not all(key) or not culture:
            raise GroupingError(f"grouping file {path}: data row {line_no} has an empty field")
        if key in culture_of:
            raise GroupingError(f"grouping file {path}: pair {key} is listed twice")
        culture_of[key] = culture
        if has_counts and row.paper_identification and row.paper_evaluation:
            paper_counts[key] = (int(row.paper_identification), int(row.paper_evaluation))
    if not culture_of:
        raise GroupingError(f"grouping file {path} has no rows")
    return Grouping(culture_of=culture_of, paper_counts=paper_counts)


def own_group_code(country: str, language: str) -> str:
    """Culture code for a pair that the grouping file does not list (unknown_pair: own_group)."""
    return f"{country}-{language}"
