"""The paper's Table 2: self-deactivation, cross-deactivation average and self-cross gap.

Rows are model x metric (Acc. Δ, Flip Rate) x setting (Self-Deactivation, Cross-Deactivation Avg.,
Self-Cross Gap); columns are selectors in the paper's order RND, LAP, LAPE, MAD, CAS, then any
others in order of appearance. Seeded instances of one selector (``rnd-s0``, ``rnd-s1``, ...) are
averaged into one column whose header gives the number of seeds, e.g. ``RND (3 seeds)``.

Formatting follows the paper: two decimals; accuracy changes and gaps carry an explicit sign
(+0.96, -4.64), flip rates (non-negative by construction) do not, except their gaps; "-" where a
value does not exist (RND has no cross/gap; label-free runs have no accuracy). A gap whose 95%
bootstrap interval (see :func:`culture_neurons.analysis.metrics.self_cross_summary`) excludes 0 is
marked ``*``; averaged seed columns get no mark, as their intervals cannot be combined. The paper's
bold "best in each setting" is not reproduced: "best" is not defined for the cross rows.

The CSV repeats the model and metric on every row (one observation per row, for machines); the
Markdown and LaTeX versions blank repeats, as the paper prints it. Both are written by hand, so
neither ``tabulate`` nor ``jinja2`` is needed.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from culture_neurons.analysis.metrics import AVERAGE
from culture_neurons.data.labels import HIDDEN_LABELS_HELP
from culture_neurons.errors import InputError

__all__ = [
    "METRICS",
    "SELECTOR_ORDER",
    "SETTINGS",
    "format_table2",
    "markdown_table2",
    "selector_column",
    "table2",
    "table2_values",
    "write_table2",
]

SELECTOR_ORDER = ["RND", "RND-LM", "LAP", "LAPE", "MAD", "CAS", "ATTR", "ATTR-GEN"]
_DISPLAY = {
    "rnd": "RND",
    "rnd_matched": "RND-LM",
    "lap": "LAP",
    "lape": "LAPE",
    "mad": "MAD",
    "cas": "CAS",
    "conact": "CAS",
    "attr": "ATTR",
    "attr_general": "ATTR-GEN",
}
# Summary metric -> Table 2 metric label.
METRICS = {"delta": "Acc. Δ", "flip_rate": "Flip Rate"}
# Table 2 setting label -> summary column.
SETTINGS = {
    "Self-Deactivation": "self",
    "Cross-Deactivation Avg.": "cross",
    "Self-Cross Gap": "gap",
}
INDEX_NAMES = ["VLM", "Metric", "Eval. Setting"]
#: The row under each metric that counts source cultures with a significant own gap.
SIGNIFICANT_SOURCES = "Sources with sig. Gap (q < 0.05)"
MISSING = "-"
SIGNIFICANT = "*"
_SEED_SUFFIX = re.compile(r"^(?P<base>.+)-s(?P<seed>\d+)$")
# A seeded column's header suffix (see _header), to find the column behind a header.
_SEEDS = re.compile(r" \(\d+(-\d+)? seeds?\)$")
NOTE_SIGNIFICANT = (
    f"{SIGNIFICANT} the self-cross gap's 95% bootstrap interval (source cultures resampled) "
    "excludes 0."
)
NOTE_SOURCES = (
    f"{SIGNIFICANT_SOURCES}: k of C source cultures whose own self-cross gap is significant "
    "(paired bootstrap over evaluation items, one-sided, Benjamini-Hochberg over sources); "
    "seed columns give the mean k over seeds."
)
NOTE_UNITS = (
    "Acc. Δ in percentage points (masked - full); flip rate in % of items whose predicted answer "
    "changed; RND is culture-independent, so it has no cross/gap values."
)


def selector_column(selector: str) -> tuple[str, bool]:
    """Table 2 column of a selector instance, and whether the instance is one seed of several.

    ``rnd-s0`` -> ("RND", True), ``conact`` -> ("CAS", False), ``my-sel`` -> ("MY-SEL", False).
    """
    match = _SEED_SUFFIX.match(selector)
    base = match["base"] if match else selector
    return _DISPLAY.get(base.lower(), base.upper()), match is not None


def _average_rows(summary: pd.DataFrame, key: tuple[Hashable, str]) -> pd.DataFrame:
    rows = summary[summary["source"] == AVERAGE].set_index("metric")
    missing = [m for m in METRICS if m not in rows.index]
    if missing:
        raise InputError(f"summary of {key}: no average row for {', '.join(missing)}")
    return rows


def _columns(summaries: Mapping[tuple[Hashable, str], pd.DataFrame]) -> dict[str, bool]:
    """Column -> whether it averages seeded instances, in Table 2 order; validates the mapping."""
    per_model: dict[tuple[Hashable, str], list[bool]] = {}
    for model, selector in summaries:
        column, seeded = selector_column(selector)
        per_model.setdefault((model, column), []).append(seeded)
    seeded_columns: dict[str, set[bool]] = {}
    for (model, column), flags in per_model.items():
        if len(flags) > 1 and not all(flags):
            # e.g. "cas" and "conact" both given: averaging two different runs would hide that.
            raise InputError(
                f"model {model!r}: several unseeded selectors map to column {column!r}"
            )
        seeded_columns.setdefault(column, set()).add(all(flags))
    for column, kinds in seeded_columns.items():
        if len(kinds) > 1:
            raise InputError(f"column {column!r} is seeded for some models and not for others")
    known = [c for c in SELECTOR_ORDER if c in seeded_columns]
    others = [c for c in seeded_columns if c not in SELECTOR_ORDER]
    return {c: seeded_columns[c].pop() for c in known + others}


def _header(column: str, seeded: bool, counts: set[int]) -> str:
    if not seeded:
        return column
    lo, hi = min(counts), max(counts)
    count = str(hi) if lo == hi else f"{lo}-{hi}"
    return f"{column} ({count} seed{'' if hi == 1 else 's'})"


def table2_values(
    summaries: Mapping[tuple[Hashable, str], pd.DataFrame],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numbers behind Table 2, and where the gap's interval excludes 0.

    Args:
        summaries: (model, selector instance) -> its
            :func:`~culture_neurons.analysis.metrics.self_cross_summary`.

    Returns:
        ``(values, significant)``: two frames with the Table 2 index (VLM, Metric, Eval. Setting)
        and one column per selector (headers as in :func:`table2`); ``values`` holds floats (NaN
        for "-"), seeds averaged; ``significant`` is True on gap cells whose 95% interval
        excludes 0 (never on averaged seed columns).
    """
    if not summaries:
        raise InputError("no summaries given for Table 2")
    columns = _columns(summaries)
    models = list(dict.fromkeys(model for model, _ in summaries))
    grouped: dict[tuple[Hashable, str], list[pd.DataFrame]] = {}
    counts: dict[str, set[int]] = {}
    for (model, selector), summary in summaries.items():
        column, _ = selector_column(selector)
        grouped.setdefault((model, column), []).append(_average_rows(summary, (model, selector)))
    for (_, column), parts in grouped.items():
        counts.setdefault(column, set()).add(len(parts))
    headers = {c: _header(c, seeded, counts[c]) for c, seeded in columns.items()}
    index = pd.MultiIndex.from_tuples(
        [
            (model, label, setting)
            for model in models
            for label in METRICS.values()
            for setting in SETTINGS
        ],
        names=INDEX_NAMES,
    )
    # Filled positionally: .loc on a MultiIndex not lexsorted warns and is slow.
    row_of = {key: i for i, key in enumerate(index)}
    col_of = {column: j for j, column in enumerate(headers)}
    values = np.full((len(index), len(headers)), np.nan)
    significant = np.zeros_like(values, dtype=bool)
    for (model, column), parts in grouped.items():
        j = col_of[column]
        for metric, label in METRICS.items():
            for setting, field in SETTINGS.items():
                cells = [float(p.loc[metric, field]) for p in parts]
                # mean, not nanmean: one seed's missing value must not shrink the average silently.
                values[row_of[(model, label, setting)], j] = float(np.mean(cells))
            if len(parts) == 1:
                flag = parts[0].loc[metric, "gap_ci_excludes_zero"]
                significant[row_of[(model, label, "Self-Cross Gap")], j] = bool(
                    flag is not pd.NA and flag
                )
    columns = list(headers.values())
    return (
        pd.DataFrame(values, index=index, columns=columns),
        pd.DataFrame(significant, index=index, columns=columns),
    )


def _format_value(value: float, setting: str, metric_label: str) -> str:
    if np.isnan(value):
        return MISSING
    # + 0.0 turns a rounded -0.0 into 0.0, so a vanishing change prints "+0.00", never "-0.00".
    value = round(float(value), 2) + 0.0
    signed = metric_label == METRICS["delta"] or SETTINGS[setting] == "gap"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def format_table2(values: pd.DataFrame, significant: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 2 numbers as the paper prints them (see the module docstring)."""
    marks = (
        np.zeros(values.shape, dtype=bool)
        if significant is None
        else significant.reindex_like(values).fillna(False).to_numpy(dtype=bool)
    )
    cells = [
        [
            _format_value(value, setting, label) + (SIGNIFICANT if mark else "")
            if not np.isnan(value)
            else MISSING
            for value, mark in zip(row, row_marks, strict=True)
        ]
        for (_, label, setting), row, row_marks in zip(
            values.index, values.to_numpy(), marks, strict=True
        )
    ]
    return pd.DataFrame(cells, index=values.index, columns=values.columns, dtype=object)


def significant_source_cells(
    significance: Mapping[tuple[Hashable, str], pd.DataFrame],
) -> dict[tuple[Hashable, str, str], str]:
    """(model, metric label, column) -> ``"k/C"``: source cultures whose own gap is significant,
    from each selector instance's :func:`~culture_neurons.analysis.significance.source_gap_tests`
    (seeds of one column: the mean k)."""
    from culture_neurons.analysis.significance import significant_sources

    grouped: dict[tuple[Hashable, str, str], list[tuple[int, int]]] = {}
    for (model, selector), table in significance.items():
        column, _ = selector_column(selector)
        for metric, counts in significant_sources(table).items():
            grouped.setdefault((model, METRICS[metric], column), []).append(counts)
    cells = {}
    for key, counts in grouped.items():
        tested = {c for _, c in counts}
        if tested == {0}:
            continue
        k = float(np.mean([k for k, _ in counts]))
        shown = f"{k:.0f}" if k.is_integer() else f"{k:.1f}"
        cells[key] = f"{shown}/{max(tested)}"
    return cells


def _with_source_rows(
    formatted: pd.DataFrame, cells: Mapping[tuple[Hashable, str, str], str]
) -> pd.DataFrame:
    """``formatted`` with a :data:`SIGNIFICANT_SOURCES` row after each metric's gap row."""
    rows, index = [], []
    for key, row in zip(formatted.index, formatted.to_numpy().tolist(), strict=True):
        rows.append(row)
        index.append(key)
        model, label, setting = key
        if setting == "Self-Cross Gap":
            index.append((model, label, SIGNIFICANT_SOURCES))
            rows.append(
                [cells.get((model, label, _SEEDS.sub("", c)), MISSING) for c in formatted.columns]
            )
    out = pd.DataFrame(
        rows,
        index=pd.MultiIndex.from_tuples(index, names=INDEX_NAMES),
        columns=formatted.columns,
        dtype=object,
    )
    out.attrs.update(formatted.attrs)
    return out


def label_free_models(values: pd.DataFrame) -> list[Hashable]:
    """Models of :func:`table2_values` with no accuracy change anywhere (hidden labels)."""
    delta = values.xs(METRICS["delta"], level="Metric")
    return [
        model for model, rows in delta.groupby(level="VLM", sort=False) if rows.isna().all().all()
    ]


def table2(
    summaries: Mapping[tuple[Hashable, str], pd.DataFrame],
    significance: Mapping[tuple[Hashable, str], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The paper's Table 2 as formatted strings.

    Args:
        summaries: (model, selector instance name) -> its
            :func:`~culture_neurons.analysis.metrics.self_cross_summary`. Models appear in insertion
            order; instances named ``<selector>-s<seed>`` are averaged into one column.
        significance: optional (model, selector instance) -> its per-source gap tests; adds the
            row :data:`SIGNIFICANT_SOURCES` ("k/C") under each metric.

    Returns:
        Index (VLM, Metric, Eval. Setting); columns RND, LAP, LAPE, MAD, CAS, then others;
        cells such as ``"+0.96"``, ``"4.66"``, ``"-4.88*"`` or ``"-"``. ``attrs["notes"]`` holds
        the footnotes :func:`write_table2` prints.
    """
    values, significant = table2_values(summaries)
    formatted = format_table2(values, significant)
    notes = [NOTE_UNITS]
    unscored = label_free_models(values)
    if unscored:
        notes.append(
            f"No Acc. Δ for {', '.join(map(str, unscored))}: labels hidden. {HIDDEN_LABELS_HELP}"
        )
    if significant.to_numpy().any():
        notes.append(NOTE_SIGNIFICANT)
    if significance:
        formatted = _with_source_rows(formatted, significant_source_cells(significance))
        notes.append(NOTE_SOURCES)
    formatted.attrs["notes"] = notes
    return formatted


def _blank_repeats(df: pd.DataFrame) -> list[list[str]]:
    """Index columns with a value shown only where it changes, as in the paper."""
    rows, previous = [], (None, None)
    for model, label, setting in df.index:
        key = (str(model), str(label))
        shown_model = key[0] if key[0] != previous[0] else ""
        shown_label = key[1] if key != previous else ""
        rows.append([shown_model, shown_label, str(setting)])
        previous = key
    return rows


def _markdown(df: pd.DataFrame, notes: list[str]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("*", "\\*")

    header = [*INDEX_NAMES, *map(str, df.columns)]
    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join(["---"] * len(INDEX_NAMES) + ["---:"] * len(df.columns)) + "|",
    ]
    for labels, values in zip(_blank_repeats(df), df.to_numpy().tolist(), strict=True):
        lines.append("| " + " | ".join(cell(str(v)) for v in [*labels, *values]) + " |")
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def _latex_escape(text: str) -> str:
    escaped = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)
    # Δ is not in pdflatex's default input encoding; math mode works everywhere.
    return escaped.replace("Δ", r"$\Delta$")


def _latex_value(text: str) -> str:
    if text.endswith(SIGNIFICANT):
        return f"${text[:-1]}^{{*}}$"
    return text if text == MISSING else f"${text}$"


def _latex(df: pd.DataFrame, notes: list[str]) -> str:
    n_values = len(df.columns)
    lines = [
        "% Needs \\usepackage{booktabs}.",
        "\\begin{tabular}{lll" + "r" * n_values + "}",
        "\\toprule",
        " & ".join(_latex_escape(h) for h in [*INDEX_NAMES, *map(str, df.columns)]) + " \\\\",
        "\\midrule",
    ]
    first = True
    for labels, values in zip(_blank_repeats(df), df.to_numpy().tolist(), strict=True):
        if labels[0] and not first:
            lines.append("\\midrule")
        elif labels[1] and not first:
            lines.append(f"\\cmidrule(l){{2-{3 + n_values}}}")
        first = False
        cells = [_latex_escape(v) for v in labels] + [_latex_value(str(v)) for v in values]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"% {note}" for note in notes]
    return "\n".join(lines) + "\n"


def markdown_table2(df: pd.DataFrame) -> str:
    """:func:`table2` as the Markdown that ``<prefix>.md`` holds, footnotes included."""
    return _markdown(df, list(df.attrs.get("notes", [])))


def write_table2(df: pd.DataFrame, out_prefix: str | Path) -> list[Path]:
    """Write :func:`table2` as ``<prefix>.csv``, ``<prefix>.md`` and ``<prefix>.tex``.

    Footnotes (``df.attrs["notes"]``) go below the Markdown table and as ``%`` comments after the
    LaTeX tabular. Returns the written paths.
    """
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    notes = list(df.attrs.get("notes", []))
    paths = [prefix.with_name(prefix.name + ext) for ext in (".csv", ".md", ".tex")]
    df.to_csv(paths[0], index=True, encoding="utf-8")
    paths[1].write_text(_markdown(df, notes), encoding="utf-8")
    paths[2].write_text(_latex(df, notes), encoding="utf-8")
    return paths


def models_loaded_note(summaries: Mapping[tuple[str, str], pd.DataFrame]) -> list[str]:
    """Table 2's note naming the model files each row came from (path, requested revision,
    commit loaded), as the summaries carry them from the baseline tables; none if none do."""
    loaded: dict[str, str] = {}
    for (model, _), table in summaries.items():
        source = table.attrs.get("model")
        if source and model not in loaded:
            commit = source.get("commit")
            where = f"commit {commit}" if commit else "a local folder, no hub commit"
            revision = source.get("revision")
            asked = f", revision {revision}" if revision and revision != commit else ""
            loaded[model] = f"{model}: {source.get('model_path')} ({where}{asked})"
    return [f"Models loaded: {'; '.join(loaded.values())}."] if loaded else []
