"""prepare_data: CVQA-schema rows → items.parquet (grouped, split, validated) + a data report."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from culture_neurons import __version__
from culture_neurons.data.cvqa import (
    RawRow,
    SourceError,
    count_local_rows,
    hub_reference,
    iter_hub_rows,
    iter_local_rows,
    load_hub_dataset,
    local_shards,
    parse_options,
    parse_subset,
)
from culture_neurons.data.grouping import Grouping, GroupingError, load_grouping, own_group_code
from culture_neurons.data.images import decode_image
from culture_neurons.data.labels import HIDDEN_LABELS_HELP
from culture_neurons.data.split import assign_splits
from culture_neurons.data.text_mcq import (
    ColumnMapping,
    TextRow,
    iter_text_rows,
    parse_text_options,
    read_hub_table,
    read_local_table,
    resolve_label,
)

log = logging.getLogger(__name__)

HIDDEN_LABEL = -1
N_OPTIONS = 4
LABEL_MODES = ("labelled", "hidden", "file")
DATASET_KINDS = ("cvqa", "text_mcq")
#: No image: the items of a text dataset (their prompt drops "based on the image").
NO_IMAGE = ""
# Exclusion reasons, in the order the report lists them.
REASONS = {
    "bad_subset": "Subset is not a (language, country) tuple",
    "culture_missing": "culture (or country) is empty",
    "empty_question": "question is empty",
    "options_unparseable": "options are neither a list nor the string of one",
    "options_not_4": "not exactly 4 non-empty options",
    "label_unmatched": "label matches no option (index, letter or option text)",
    "invalid_label": "label outside 0-3 in a labelled source",
    "label_missing_in_file": "item absent from the labels file",
    "image_undecodable": "image does not decode",
    "duplicate_id": "ID occurs more than once (every copy excluded)",
}
#: The reasons that can apply to each dataset kind (the report lists these).
KIND_REASONS = {
    "cvqa": [r for r in REASONS if r not in ("culture_missing", "label_unmatched")],
    "text_mcq": [r for r in REASONS if r not in ("bad_subset", "image_undecodable")],
}
ITEM_COLUMNS = [
    "item_id",
    "subset",
    "country",
    "language",
    "culture",
    "split",
    "question",
    "options",
    "label",
    "category",
    "image_type",
    "image_source",
    "image_row",
]


@dataclass
class DatasetConfig:
    """The `dataset:` section of config.yaml (see workflow/schemas/config.schema.yaml)."""

    name: str
    kind: str = "cvqa"
    source: str = "local"
    local_dir: str | None = None
    files: str = "data/test-*.parquet"
    train_files: str | None = None
    hub_id: str | None = None
    revision: str | None = None
    hub_config: str | None = None
    hub_split: str = "test"
    language: str = "english"
    grouping: str | None = "resources/cvqa_culture_groups.tsv"
    unknown_pair: str = "error"
    split_seed: int = 0
    labels_file: str | None = None
    columns: dict[str, Any] | None = None

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> DatasetConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in mapping.items() if k in known})


@dataclass
class Exclusions:
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, item_id: str, detail: str = "", *, example: bool = True) -> None:
        self.counts[reason] += 1
        if example and len(self.examples[reason]) < 5:
            self.examples[reason].append(f"{item_id}: {detail}" if detail else item_id)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _read_labels_file(path: str) -> dict[str, int]:
    file = Path(path)
    if not file.is_file():
        raise SourceError(f"labels_file {file} does not exist")
    try:
        if file.suffix == ".json":
            mapping = json.loads(file.read_text())
            if not isinstance(mapping, dict):
                raise SourceError(f"labels_file {file} must hold one JSON object: item ID -> label")
            return {str(k): int(v) for k, v in mapping.items()}
        # Every column as text: IDs such as "000123" must not become numbers.
        table = pd.read_csv(file, sep="\t" if file.suffix == ".tsv" else ",", dtype=str)
        columns = {c.lower(): c for c in table.columns}
        id_col = columns.get("item_id") or columns.get("id")
        label_col = columns.get("label")
        if id_col is None or label_col is None:
            raise SourceError(f"labels_file {file} needs columns item_id (or ID) and label")
        return dict(zip(table[id_col].str.strip(), table[label_col].astype(int), strict=True))
    except SourceError:
        raise
    except (ValueError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        # Bad JSON, an empty file, a non-integer or empty label: one clear line, not a traceback.
        raise SourceError(f"labels_file {file}: {err}") from err


def _rows(config: DatasetConfig, files: str) -> tuple[Iterator[RawRow], int, str]:
    """An iterator over the source rows, its length (for progress) and a source description."""
    if _checked_source(config) == "local":
        shards = local_shards(config.local_dir, files)
        return (
            iter_local_rows(shards),
            count_local_rows(shards),
            f"{len(shards)} shard(s) of {config.local_dir}/{files}",
        )
    dataset = load_hub_dataset(config.hub_id, config.revision)
    reference = hub_reference(config.hub_id, config.revision)
    return iter_hub_rows(dataset, reference), len(dataset), reference


def _checked_source(config: DatasetConfig) -> str:
    """``dataset.source`` ('local' or 'hub'), once the key that source needs is set."""
    if config.source == "local":
        if not config.local_dir:
            raise SourceError("dataset.source is 'local' but dataset.local_dir is not set")
    elif config.source == "hub":
        if not config.hub_id:
            raise SourceError("dataset.source is 'hub' but dataset.hub_id is not set")
    else:
        raise SourceError(f"dataset.source must be 'local' or 'hub', not {config.source!r}")
    return config.source


def _validate_rows(
    rows, total: int, config: DatasetConfig, grouping: Grouping, desc: str
) -> tuple[list[dict[str, Any]], Exclusions, Counter]:
    """Check every row; return candidate items, exclusions and unknown pairs."""
    question_col, options_col = (
        ("Translated Question", "Translated Options")
        if config.language == "english"
        else ("Question", "Options")
    )
    exclusions = Exclusions()
    unknown: Counter = Counter()
    items: list[dict[str, Any]] = []
    for raw in tqdm(rows, total=total, desc=desc, unit="row", mininterval=2.0):
        fields = raw.fields
        item_id = _text(fields.get("ID")) or f"{raw.image_source}#{raw.image_row}"
        try:
            country, language = parse_subset(_text(fields.get("Subset")))
        except ValueError as err:
            exclusions.add("bad_subset", item_id, str(err))
            continue
        culture = grouping.lookup(country, language)
        if culture is None:
            unknown[(country, language)] += 1
            culture = own_group_code(country, language)
        question = _text(fields.get(question_col))
        if not question:
            exclusions.add("empty_question", item_id)
            continue
        try:
            options = parse_options(fields.get(options_col))
        except ValueError as err:
            exclusions.add("options_unparseable", item_id, str(err))
            continue
        options = [o.strip() for o in options]
        if len(options) != N_OPTIONS or not all(options):
            exclusions.add("options_not_4", item_id, f"{len(options)} option(s)")
            continue
        try:
            decode_image(raw.image, draft=True)
        except Exception as err:  # PIL raises many types for corrupt data
            exclusions.add("image_undecodable", item_id, type(err).__name__)
            continue
        raw_label = fields.get("Label")
        items.append(
            {
                "item_id": item_id,
                "subset": f"{country}-{language}",
                "country": country,
                "language": language,
                "culture": culture,
                "question": question,
                "options": options,
                "label": HIDDEN_LABEL if raw_label is None else int(raw_label),
                "category": _text(fields.get("Category")),
                "image_type": _text(fields.get("Image Type")),
                "image_source": raw.image_source,
                "image_row": raw.image_row,
            }
        )
    return items, exclusions, unknown


def _text_table(config: DatasetConfig) -> tuple[pd.DataFrame, str]:
    if _checked_source(config) == "local":
        return read_local_table(config.local_dir, config.files)
    return read_hub_table(config.hub_id, config.revision, config.hub_config, config.hub_split)


def _text_culture(
    row: TextRow, mapping: ColumnMapping, grouping: Grouping | None, unknown: Counter
) -> str:
    if not (mapping.language and grouping):
        return row.culture
    culture = grouping.lookup(row.country, row.language)
    if culture is None:
        unknown[(row.country, row.language)] += 1
        culture = own_group_code(row.country, row.language)
    return culture


def _validate_text_rows(
    rows: Iterator[TextRow],
    total: int,
    mapping: ColumnMapping,
    grouping: Grouping | None,
    desc: str,
) -> tuple[list[dict[str, Any]], Exclusions, Counter]:
    """The text-dataset counterpart of `_validate_rows`: the same items, without an image."""
    exclusions = Exclusions()
    unknown: Counter = Counter()
    items: list[dict[str, Any]] = []
    for row in tqdm(rows, total=total, desc=desc, unit="row", mininterval=2.0):
        if not row.culture or (mapping.language and not row.language):
            exclusions.add("culture_missing", row.item_id)
            continue
        culture = _text_culture(row, mapping, grouping, unknown)
        if not row.question:
            exclusions.add("empty_question", row.item_id)
            continue
        try:
            options = [o.strip() for o in parse_text_options(row.options)]
        except ValueError as err:
            exclusions.add("options_unparseable", row.item_id, str(err))
            continue
        if len(options) != N_OPTIONS or not all(options):
            exclusions.add("options_not_4", row.item_id, f"{sum(map(bool, options))} option(s)")
            continue
        label = HIDDEN_LABEL
        if mapping.label:
            resolved = resolve_label(row.label, options, mapping.label_format)
            if resolved is None:
                exclusions.add("label_unmatched", row.item_id, f"label {row.label!r}")
                continue
            label = resolved
        country = row.country or row.culture
        language = row.language
        items.append(
            {
                "item_id": row.item_id,
                "subset": f"{country}-{language}" if language else country,
                "country": country,
                "language": language,
                "culture": culture,
                "question": row.question,
                "options": options,
                "label": label,
                "category": row.category,
                "image_type": "",
                "image_source": NO_IMAGE,
                "image_row": row.row,
            }
        )
    return items, exclusions, unknown


def _drop_duplicates(items: list[dict], exclusions: Exclusions) -> list[dict]:
    # Every copy goes: which copy is right cannot be known, and keeping "the first" would make
    # the result depend on row order.
    counts = Counter(item["item_id"] for item in items)
    kept, listed = [], set()
    for item in items:
        item_id = item["item_id"]
        if counts[item_id] > 1:
            # Every copy is counted; the ID is listed once among the examples.
            exclusions.add(
                "duplicate_id", item_id, f"{counts[item_id]} copies", example=item_id not in listed
            )
            listed.add(item_id)
        else:
            kept.append(item)
    return kept


def _apply_labels(
    items: list[dict], exclusions: Exclusions, labels_file: str | None
) -> tuple[list[dict], str]:
    """Decide the label mode and drop rows whose label cannot be scored."""
    if labels_file:
        labels = _read_labels_file(labels_file)
        kept = []
        for item in items:
            if item["item_id"] not in labels:
                exclusions.add("label_missing_in_file", item["item_id"])
                continue
            item["label"] = int(labels[item["item_id"]])
            kept.append(item)
        mode = "file"
    elif items and all(item["label"] == HIDDEN_LABEL for item in items):
        return items, "hidden"
    else:
        kept, mode = items, "labelled"
    valid = []
    for item in kept:
        if 0 <= item["label"] < N_OPTIONS:
            valid.append(item)
        else:
            exclusions.add("invalid_label", item["item_id"], f"label {item['label']}")
    return valid, mode


def fingerprint(table: pd.DataFrame) -> str:
    """Content hash of an items table (stable across parquet writer versions)."""
    canonical = table[ITEM_COLUMNS].to_json(orient="records", force_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _collect(
    config: DatasetConfig, files: str, grouping: Grouping | None, desc: str
) -> tuple[list[dict], Exclusions, int, str, str]:
    if config.kind == "text_mcq":
        mapping = ColumnMapping.from_mapping(config.columns)
        table, source = _text_table(config)
        mapping.check_against(list(table.columns), source)
        total = len(table)
        log.info("reading %s rows from %s (%s)", total, source, desc)
        items, exclusions, unknown = _validate_text_rows(
            iter_text_rows(table, mapping, config.name), total, mapping, grouping, desc
        )
    else:
        rows, total, source = _rows(config, files)
        log.info("reading %s rows from %s (%s)", total, source, desc)
        items, exclusions, unknown = _validate_rows(rows, total, config, grouping, desc)
    if unknown and config.unknown_pair == "error":
        listed = ", ".join(f"{c}-{lang} ({n} rows)" for (c, lang), n in sorted(unknown.items()))
        raise GroupingError(
            f"country-language pair(s) missing from {config.grouping}: {listed}. Add them to the "
            "grouping file, or set dataset.unknown_pair: own_group to keep each as its own culture."
        )
    for (country, language), n in sorted(unknown.items()):
        log.warning("pair %s-%s (%d rows) is not in the grouping: own group", country, language, n)
    items = _drop_duplicates(items, exclusions)
    items, label_mode = _apply_labels(items, exclusions, config.labels_file)
    return items, exclusions, total, source, label_mode


def _table(items: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(items, columns=[c for c in ITEM_COLUMNS if c != "split"])
    table["label"] = table["label"].astype("int64")
    table["image_row"] = table["image_row"].astype("int64")
    return table


def _grouping_of(config: DatasetConfig) -> Grouping | None:
    """The grouping file's pairs; a text dataset uses one only to group (country, language)."""
    if config.kind == "cvqa":
        if not config.grouping:
            raise SourceError("dataset.grouping is required for CVQA-schema data")
        return load_grouping(config.grouping)
    mapping = ColumnMapping.from_mapping(config.columns)
    if mapping.language:
        if not config.grouping:
            raise SourceError(
                "dataset.columns maps country and language: set dataset.grouping to the TSV "
                "that groups those pairs into cultures"
            )
        return load_grouping(config.grouping)
    if config.grouping:
        log.info("dataset.grouping %s is not used: cultures come from a column", config.grouping)
    return None


def prepare_dataset(config: DatasetConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write items.parquet, train_items.parquet, report.json and report.md into ``out_dir``."""
    if config.language not in ("english", "native"):
        raise SourceError(
            f"dataset.language must be 'english' or 'native', not {config.language!r}"
        )
    if config.kind not in DATASET_KINDS:
        raise SourceError(f"dataset.kind must be one of {DATASET_KINDS}, not {config.kind!r}")
    if config.kind == "text_mcq" and config.train_files:
        raise SourceError("dataset.train_files is for the demo's CVQA-schema source only")
    out = Path(out_dir)
    grouping = _grouping_of(config)
    items, exclusions, total, source, label_mode = _collect(config, config.files, grouping, "test")
    if not items:
        raise SourceError(f"no usable items in {source}: {dict(exclusions.counts)}")
    table = _table(items)
    table.insert(
        ITEM_COLUMNS.index("split"),
        "split",
        assign_splits(table["item_id"], table["subset"], config.split_seed),
    )
    table = table.sort_values(["split", "culture", "subset", "item_id"], ignore_index=True)

    train = _table([])
    train_report = None
    if config.train_files:
        train_items, train_excl, train_total, _, _ = _collect(
            config, config.train_files, grouping, "train"
        )
        train = _table(train_items)
        overlap = set(train["item_id"]) & set(table["item_id"])
        if overlap:
            raise SourceError(f"{len(overlap)} train item ID(s) also appear in the test portion")
        train_report = {
            "rows_read": train_total,
            "items": len(train),
            "excluded": dict(train_excl.counts),
        }
    train.insert(ITEM_COLUMNS.index("split"), "split", "train")

    report = build_report(config, table, exclusions, total, source, label_mode, grouping)
    report["train"] = train_report
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / "items.parquet", index=False)
    train.to_parquet(out / "train_items.parquet", index=False)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(render_report_md(report))
    if label_mode == "hidden":
        log.warning("labels are hidden in %s (every Label is -1). %s", source, HIDDEN_LABELS_HELP)
    for reason, n in exclusions.counts.items():
        log.warning("excluded %d row(s): %s", n, REASONS[reason])
    log.info("wrote %d items (%s) to %s", len(table), report["fingerprint"], out)
    return report


def build_report(
    config: DatasetConfig,
    table: pd.DataFrame,
    exclusions: Exclusions,
    rows_read: int,
    source: str,
    label_mode: str,
    grouping: Grouping | None,
) -> dict[str, Any]:
    per_culture = table.groupby(["culture", "split"]).size().unstack(fill_value=0).sort_index()
    per_pair = table.groupby(["subset", "split"]).size().unstack(fill_value=0).sort_index()
    first_of_pair = table.drop_duplicates("subset").set_index("subset")
    paper_counts = grouping.paper_counts if grouping else {}
    pair_rows = []
    for subset, counts in per_pair.iterrows():
        pair = first_of_pair.loc[subset]
        paper = paper_counts.get((pair["country"], pair["language"]))
        pair_rows.append(
            {
                "subset": subset,
                "culture": pair["culture"],
                "identification": int(counts.get("identification", 0)),
                "evaluation": int(counts.get("evaluation", 0)),
                "paper_identification": paper[0] if paper else None,
                "paper_evaluation": paper[1] if paper else None,
            }
        )
    return {
        "dataset": config.name,
        "kind": config.kind,
        "source": source,
        "config": asdict(config),
        "package_version": __version__,
        "fingerprint": fingerprint(table),
        "label_mode": label_mode,
        "rows_read": rows_read,
        "items": len(table),
        "excluded_total": sum(exclusions.counts.values()),
        "excluded": {r: exclusions.counts.get(r, 0) for r in KIND_REASONS[config.kind]},
        "excluded_examples": {r: list(v) for r, v in exclusions.examples.items()},
        "cultures": sorted(table["culture"].unique().tolist()),
        "items_per_culture": {
            culture: {split: int(n) for split, n in row.items()}
            for culture, row in per_culture.iterrows()
        },
        "items_per_pair": pair_rows,
    }


KIND_LINES = {
    "cvqa": "cvqa (CVQA schema: image, question, four options)",
    "text_mcq": 'text_mcq (text only, no images: the prompt has no "based on the image")',
}


def render_report_md(report: dict[str, Any]) -> str:
    lines = [
        f"# Data report: {report['dataset']}",
        "",
        f"- source: `{report['source']}`",
        f"- kind: {KIND_LINES.get(report.get('kind', 'cvqa'))}",
        f"- rows read: {report['rows_read']}; items kept: {report['items']}; "
        f"rows excluded: {report['excluded_total']}",
        f"- fingerprint: `{report['fingerprint']}`",
        f"- labels: **{report['label_mode']}**",
    ]
    if report["label_mode"] == "hidden":
        lines.append(
            "  - Every `Label` is -1 (answers withheld for the leaderboard). " + HIDDEN_LABELS_HELP
        )
    lines += ["", "## Excluded rows", "", "| reason | rows | examples |", "|---|---:|---|"]
    for reason, n in report["excluded"].items():
        examples = "; ".join(report["excluded_examples"].get(reason, []))
        lines.append(f"| {REASONS[reason]} | {n} | {examples} |")
    lines += [
        "",
        "## Items per culture and split",
        "",
        "| culture | identification | evaluation |",
        "|---|---:|---:|",
    ]
    for culture, counts in report["items_per_culture"].items():
        lines.append(
            f"| {culture} | {counts.get('identification', 0)} | {counts.get('evaluation', 0)} |"
        )
    lines += [
        "",
        "## Items per country–language pair (paper's Table 4 counts where known)",
        "",
        "| pair | culture | identification | evaluation | paper (I) | paper (E) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report["items_per_pair"]:
        paper_i = "" if row["paper_identification"] is None else row["paper_identification"]
        paper_e = "" if row["paper_evaluation"] is None else row["paper_evaluation"]
        lines.append(
            f"| {row['subset']} | {row['culture']} | {row['identification']} | "
            f"{row['evaluation']} | {paper_i} | {paper_e} |"
        )
    if report.get("train"):
        train = report["train"]
        lines += [
            "",
            "## Train portion (demo model training only)",
            "",
            f"rows read: {train['rows_read']}; items: {train['items']}; excluded: "
            f"{sum(train['excluded'].values())} {train['excluded'] or ''}",
        ]
    return "\n".join(lines) + "\n"


def planned_cultures(dataset: dict[str, Any]) -> list[str]:
    """The cultures a dataset will have, before prepare_data has run (the workflow plans its
    jobs per culture): the grouping file's for CVQA; for a text table, the cultures of its rows
    (a local table is read; a hub table is not, and needs prepare_data first)."""
    config = DatasetConfig.from_mapping(dataset)
    grouping = _grouping_of(config)
    if config.kind == "cvqa":
        return grouping.cultures
    if config.source != "local":
        raise SourceError(
            "the cultures of a hub text dataset are known once it is prepared: run "
            "`snakemake --cores 1 prepare_data` first, then the workflow"
        )
    mapping = ColumnMapping.from_mapping(config.columns)
    table, source = _text_table(config)
    mapping.check_against(list(table.columns), source)
    unknown: Counter = Counter()
    found = {
        _text_culture(row, mapping, grouping, unknown)
        for row in iter_text_rows(table, mapping, config.name)
        if row.culture and (row.language or not mapping.language)
    }
    return sorted(found)
