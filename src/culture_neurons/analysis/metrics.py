"""Ablation metrics: accuracy change and flip rate per (source, target) culture, and their summary.

Inputs are the answer tables the engine writes (one row per item: ``item_id``, ``culture`` (the
item's culture, i.e. the *target*), ``label``, ``output``, ``choice``, ``correct``): the unmasked
baseline of the evaluation split and, per source culture, the same items answered with that
culture's neurons deactivated. Everything here is a pure function of those tables except the small
``read_*``/``write_*`` helpers at the end.

Definitions (the paper's appendix B.3; all values in percent or percentage points):

* ``acc_full``/``acc_masked``: share of the target's items answered correctly (the engine's
  ``correct``, Algorithm 1 with its substring fallback) without/with the mask.
* ``delta`` = ``acc_masked`` - ``acc_full``, paired over the same items.
* ``flip_rate``: share of the target's items whose *predicted answer* changed (Eq. 11). The
  predicted answer is the extracted option index ``choice``; when neither run named an option
  (``choice == -1`` in both) the answer is the normalised output text itself (lower-case, collapsed
  white space, ``culture_neurons.inference.answers.normalize``), so a change of free-form text still
  counts as a flip, while two different wordings that name the same option do not. An item that
  names an option in one run and none in the other has flipped.

Confidence intervals are 95% percentile bootstraps over items, paired (one resample draws the same
items for the baseline and the masked run) and seeded per target culture, so a cell's interval
does not depend on which other cultures or sources are in the table.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from culture_neurons.errors import InputError
from culture_neurons.inference.answers import NO_CHOICE, normalize
from culture_neurons.selection.conventions import ALL_CULTURES
from culture_neurons.statistics import percentile_interval

__all__ = [
    "AVERAGE",
    "MATRIX_COLUMNS",
    "NO_CHOICE",
    "RANDOM_SOURCE",
    "SUMMARY_COLUMNS",
    "ablation_matrix",
    "baseline_accuracy",
    "flips",
    "read_ablations",
    "self_cross_summary",
    "write_matrix",
    "write_summary",
]

# The source label of a culture-independent selector's one mask row (RND).
RANDOM_SOURCE = ALL_CULTURES
# Source label of the summary rows that average over sources.
AVERAGE = "average"

MATRIX_COLUMNS = [
    "source",
    "target",
    "n",
    "acc_full",
    "acc_masked",
    "delta",
    "delta_lo",
    "delta_hi",
    "flip_rate",
    "flip_rate_lo",
    "flip_rate_hi",
    "no_choice_masked",
]
SUMMARY_COLUMNS = [
    "source",
    "metric",
    "self",
    "cross",
    "gap",
    "gap_lo",
    "gap_hi",
    "gap_ci_excludes_zero",
    "n_sources",
]
_ANSWER_COLUMNS = ("item_id", "culture", "label", "output", "choice", "correct")
_METRICS = ("delta", "flip_rate")


def _check_answers(table: pd.DataFrame, what: str) -> None:
    missing = [c for c in _ANSWER_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {', '.join(missing)}")
    duplicated = table["item_id"][table["item_id"].duplicated()]
    if len(duplicated):
        raise InputError(
            f"{what}: {len(duplicated)} duplicated item_id(s), e.g. {duplicated.iloc[0]!r}"
        )


def _examples(ids: Sequence[str] | set[str], k: int = 3) -> str:
    return ", ".join(repr(i) for i in sorted(ids)[:k])


def _align(baseline: pd.DataFrame, masked: pd.DataFrame, source: str) -> pd.DataFrame:
    """``masked`` reordered to the baseline's item order; refuses differing item sets."""
    what = f"masked answers of source {source!r}"
    _check_answers(masked, what)
    base_ids = pd.Index(baseline["item_id"])
    masked = masked.set_index("item_id")
    if len(masked.index) != len(base_ids) or not base_ids.isin(masked.index).all():
        only_base = set(base_ids.difference(masked.index))
        only_masked = set(masked.index.difference(base_ids))
        raise InputError(
            f"{what} cover other items than the baseline: {len(only_base)} baseline item(s) "
            f"missing (e.g. {_examples(only_base)}), {len(only_masked)} extra item(s) "
            f"(e.g. {_examples(only_masked)}); were they made from the same items.parquet?"
        )
    masked = masked.loc[base_ids]
    moved = masked["culture"].to_numpy() != baseline["culture"].to_numpy()
    if moved.any():
        first = base_ids[np.flatnonzero(moved)[0]]
        raise InputError(
            f"{what}: {int(moved.sum())} item(s) carry another culture than in the baseline, "
            f"e.g. {first!r}; the culture grouping changed between the runs"
        )
    return masked.reset_index()


def flips(
    choice_full: np.ndarray,
    choice_masked: np.ndarray,
    output_full: Sequence[str],
    output_masked: Sequence[str],
) -> np.ndarray:
    """Whether each item's predicted answer changed (Eq. 11; see the module docstring).

    The option index decides whenever either run named an option; only where both named none are
    the normalised texts compared.
    """
    choice_full = np.asarray(choice_full)
    choice_masked = np.asarray(choice_masked)
    flipped = choice_full != choice_masked
    both_none = (choice_full == NO_CHOICE) & (choice_masked == NO_CHOICE)
    for i in np.flatnonzero(both_none):
        flipped[i] = normalize(str(output_full[i])) != normalize(str(output_masked[i]))
    return flipped


def _labelled(baseline: pd.DataFrame, masked: Mapping[str, pd.DataFrame], labels: bool) -> bool:
    if not labels or (baseline["label"].to_numpy() == -1).any():
        return False
    for source, table in [("baseline", baseline), *masked.items()]:
        correct = table["correct"].to_numpy()
        if not np.isin(correct, (0, 1)).all():
            # Labels present but unscored answers: mixing them would silently bias accuracy.
            raise InputError(
                f"{source}: labels are present but 'correct' holds values other than 0/1; "
                "rescore the answers or pass labels=False"
            )
    return True


def _target_seed(seed: int, target: str) -> list[int]:
    # crc32, not hash(): str hashes change between interpreter runs (PYTHONHASHSEED).
    return [seed, zlib.crc32(target.encode("utf-8"))]


def _bootstrap_weights(n: int, n_boot: int, seed: int, target: str) -> np.ndarray:
    """``[n_boot, n]`` multiplicities of a resample-with-replacement of ``n`` items.

    Counts instead of indices let one matrix product evaluate every source's resampled mean at
    once, and the same resamples serve every source of a target (common random numbers).
    """
    rng = np.random.default_rng(_target_seed(seed, target))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


@dataclass(frozen=True)
class PairedItems:
    """Per-item statistics of one selector's masked runs against the baseline: ``[items,
    sources]`` arrays in the baseline's item order (float64, so bootstrap means are products)."""

    baseline: pd.DataFrame
    sources: list[str]
    labelled: bool
    flipped: np.ndarray
    no_choice: np.ndarray
    correct_full: np.ndarray | None = None  # [items]
    correct_masked: np.ndarray | None = None
    diff: np.ndarray | None = None  # correct_masked - correct_full

    def in_target(self, target: str) -> np.ndarray:
        return self.baseline["culture"].astype(str).to_numpy() == target


def paired_item_statistics(
    baseline: pd.DataFrame, masked: Mapping[str, pd.DataFrame], *, labels: bool = True
) -> PairedItems:
    """Align every source's masked answers to the baseline and derive the per-item flips,
    no-choice answers and (with labels) correctness changes; validates as
    :func:`ablation_matrix` does."""
    _check_answers(baseline, "baseline")
    if not masked:
        raise InputError("no masked answer tables given")
    base = baseline.reset_index(drop=True)
    aligned = {str(s): _align(base, masked[s], str(s)) for s in sorted(masked, key=str)}
    labelled = _labelled(base, aligned, labels)
    flipped = np.column_stack(
        [
            flips(base["choice"], t["choice"], base["output"].tolist(), t["output"].tolist())
            for t in aligned.values()
        ]
    ).astype(np.float64)
    no_choice = np.column_stack(
        [(t["choice"].to_numpy() == NO_CHOICE) for t in aligned.values()]
    ).astype(np.float64)
    if not labelled:
        return PairedItems(base, list(aligned), False, flipped, no_choice)
    correct_full = base["correct"].to_numpy().astype(np.float64)
    correct_masked = np.column_stack([t["correct"].to_numpy() for t in aligned.values()]).astype(
        np.float64
    )
    diff = correct_masked - correct_full[:, None]
    return PairedItems(
        base, list(aligned), True, flipped, no_choice, correct_full, correct_masked, diff
    )


def bootstrap_weights(n: int, n_boot: int, seed: int, target: str) -> np.ndarray:
    """The item resamples behind a target culture's intervals (``[n_boot, n]`` counts)."""
    return _bootstrap_weights(n, n_boot, seed, target)


def ablation_matrix(
    baseline: pd.DataFrame,
    masked: Mapping[str, pd.DataFrame],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    labels: bool = True,
) -> pd.DataFrame:
    """Accuracy change and flip rate of every (source, target) pair of one selector.

    Args:
        baseline: unmasked answers of the evaluation split (one row per item).
        masked: source culture -> answers of the same items under that source's mask; for a
            culture-independent selector a single entry ``"ALL"``.
        n_boot: bootstrap resamples per cell; 0 skips the intervals (NaN).
        seed: bootstrap seed; the same seed gives the same intervals.
        labels: ``False`` forces the label-free mode, which is also used whenever any baseline
            label is -1 (hidden): accuracy columns are NaN, flip rates are still computed.

    Returns:
        One row per (source, target), sorted, with :data:`MATRIX_COLUMNS`: ``n`` items of the
        target, ``acc_full``/``acc_masked`` (%), ``delta`` (percentage points, masked - full),
        ``flip_rate`` (%), their 95% bootstrap intervals ``*_lo``/``*_hi``, and
        ``no_choice_masked`` (% of masked answers naming no option: instruction following).

    Raises:
        InputError: a masked table covers other items than the baseline, duplicated item IDs,
            missing columns, or labels present with unscored (-1) answers.
    """
    stats = paired_item_statistics(baseline, masked, labels=labels)
    base, sources, labelled = stats.baseline, stats.sources, stats.labelled
    flipped, no_choice = stats.flipped, stats.no_choice
    if labelled:
        correct_full, correct_masked, diff = stats.correct_full, stats.correct_masked, stats.diff

    rows = []
    cultures = base["culture"].astype(str).to_numpy()
    for target in sorted(set(cultures)):
        in_target = cultures == target
        n = int(in_target.sum())
        flip_t = flipped[in_target]
        flip_rate = 100.0 * flip_t.mean(axis=0)
        nan = np.full(len(sources), np.nan)
        acc_full, acc_masked, delta = nan, nan, nan
        if labelled:
            acc_full = np.full(len(sources), 100.0 * correct_full[in_target].mean())
            acc_masked = 100.0 * correct_masked[in_target].mean(axis=0)
            # From the paired differences, so that delta and its interval agree exactly.
            delta = 100.0 * diff[in_target].mean(axis=0)
        flip_lo, flip_hi, delta_lo, delta_hi = nan, nan, nan, nan
        if n_boot > 0:
            weights = _bootstrap_weights(n, n_boot, seed, target) / n
            flip_lo, flip_hi = percentile_interval(100.0 * weights @ flip_t, axis=0)
            if labelled:
                delta_lo, delta_hi = percentile_interval(100.0 * weights @ diff[in_target], axis=0)
        no_choice_masked = 100.0 * no_choice[in_target].mean(axis=0)
        for k, source in enumerate(sources):
            rows.append(
                (
                    source,
                    target,
                    n,
                    acc_full[k],
                    acc_masked[k],
                    delta[k],
                    delta_lo[k],
                    delta_hi[k],
                    flip_rate[k],
                    flip_lo[k],
                    flip_hi[k],
                    no_choice_masked[k],
                )
            )
    matrix = pd.DataFrame(rows, columns=MATRIX_COLUMNS)
    matrix = matrix.sort_values(["source", "target"], ignore_index=True)
    matrix.attrs.update({"n_boot": int(n_boot), "seed": int(seed), "labelled": labelled})
    return matrix


def _is_random(matrix: pd.DataFrame) -> bool:
    sources = set(matrix["source"])
    if RANDOM_SOURCE in sources and len(sources) > 1:
        raise InputError(
            f"matrix mixes the culture-independent source {RANDOM_SOURCE!r} with culture sources"
        )
    return sources == {RANDOM_SOURCE}


def _summary_row(
    source: str,
    metric: str,
    self_: float,
    cross: float = np.nan,
    gap: float = np.nan,
    ci: tuple[float, float] = (np.nan, np.nan),
    n_sources: int = 1,
) -> dict[str, object]:
    lo, hi = ci
    excludes = pd.NA if np.isnan(lo) else bool(lo > 0 or hi < 0)
    return {
        "source": source,
        "metric": metric,
        "self": self_,
        "cross": cross,
        "gap": gap,
        "gap_lo": lo,
        "gap_hi": hi,
        "gap_ci_excludes_zero": excludes,
        "n_sources": n_sources,
    }


def self_cross_summary(matrix: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Self-deactivation, cross-deactivation average and their gap (the paper's Table 2 rows).

    Per source culture ``s`` and metric (``delta``, ``flip_rate``): ``self`` is the diagonal cell
    (s, s), ``cross`` the unweighted mean over the other targets, ``gap = self - cross``. The
    rows with ``source == "average"`` average these over sources with equal weight per culture
    (so "Cross-Deactivation Avg." equals the mean of all off-diagonal cells), as Table 2 does.

    The averaged gap gets a 95% percentile bootstrap interval that **resamples source cultures**
    (the per-source gaps, with replacement). Why sources and not items: the claim the gap
    supports is about cultures ("neurons found for a culture matter more for that culture"), and
    the cultures differ far more from each other than their item samples fluctuate; an
    item-level resample would hold the set of cultures fixed and report only measurement noise,
    giving intervals that look decisive even when the gap comes from two or three cultures.
    Each per-source gap already carries its item noise, so this interval covers both. It needs
    only the matrix. Caveat: with few cultures (the 8-culture demo) a percentile bootstrap of a
    mean undercovers; read it as indicative there. ``gap_ci_excludes_zero`` says whether the
    interval lies strictly on one side of 0 (``<NA>`` when there is no interval: label-free
    ``delta``, ``n_boot == 0``, or a single source).

    A culture-independent selector (source ``"ALL"``, RND) has no self/cross distinction: its
    ``self`` is the mean over targets, and ``cross``/``gap`` are NaN (the paper's "-").

    Returns:
        :data:`SUMMARY_COLUMNS`, one row per (source, metric) and one per metric with
        ``source == "average"``; ``n_sources`` counts the sources behind a row.
    """
    missing = [c for c in ("source", "target", *_METRICS) if c not in matrix.columns]
    if missing:
        raise InputError(f"matrix: missing column(s) {', '.join(missing)}")
    if (matrix["source"] == AVERAGE).any() or (matrix["target"] == AVERAGE).any():
        raise InputError(f"culture name {AVERAGE!r} is reserved for the summary's average rows")
    rows = []
    if _is_random(matrix):
        for metric in _METRICS:
            value = float(matrix[metric].mean())
            rows.append(_summary_row(RANDOM_SOURCE, metric, value))
            rows.append(_summary_row(AVERAGE, metric, value))
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype(
            {"gap_ci_excludes_zero": "boolean"}
        )

    sources = sorted(matrix["source"].unique())
    # One draw of source indices shared by both metrics, so their intervals are paired.
    resample = np.random.default_rng(seed).integers(0, len(sources), size=(n_boot, len(sources)))
    for metric in _METRICS:
        cells = matrix.pivot(index="source", columns="target", values=metric)
        self_, cross = [], []
        for source in sources:
            if source not in cells.columns:
                raise InputError(
                    f"source {source!r} is not among the evaluated target cultures, "
                    "so it has no self-deactivation cell"
                )
            row = cells.loc[source]
            self_.append(float(row[source]))
            others = row.drop(source).dropna()
            cross.append(float(others.mean()) if len(others) else np.nan)
        self_a, cross_a = np.array(self_), np.array(cross)
        gap_a = self_a - cross_a
        for k, source in enumerate(sources):
            rows.append(_summary_row(source, metric, self_a[k], cross_a[k], gap_a[k]))
        ci = (np.nan, np.nan)
        if n_boot > 0 and len(sources) > 1 and not np.isnan(gap_a).any():
            lo, hi = percentile_interval(gap_a[resample].mean(axis=1), axis=0)
            ci = (float(lo), float(hi))
        rows.append(
            _summary_row(
                AVERAGE,
                metric,
                float(self_a.mean()),
                float(cross_a.mean()),
                float(gap_a.mean()),
                ci,
                len(sources),
            )
        )
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return summary.astype({"gap_ci_excludes_zero": "boolean"})


def baseline_accuracy(ident: pd.DataFrame, evaluation: pd.DataFrame) -> pd.DataFrame:
    """Unmasked accuracy per culture on the identification and evaluation splits (Figure 3).

    Returns one row per (culture, split) with ``n`` items, ``accuracy`` (%, NaN where labels are
    hidden) and ``no_choice`` (% of replies naming no option). For several models, concatenate
    the tables with a ``model`` column;
    :func:`culture_neurons.analysis.figures.plot_baseline_accuracy` draws one panel per model.
    """
    parts = []
    for split, table in (("identification", ident), ("evaluation", evaluation)):
        _check_answers(table, f"{split} baseline")
        frame = pd.DataFrame(
            {
                "culture": table["culture"].astype(str).to_numpy(),
                # Hidden labels (label or correct == -1) give NaN, never a zero accuracy.
                "correct": np.where(
                    (table["label"].to_numpy() == -1) | (table["correct"].to_numpy() == -1),
                    np.nan,
                    table["correct"].to_numpy().astype(np.float64),
                ),
                "no_choice": (table["choice"].to_numpy() == NO_CHOICE).astype(np.float64),
            }
        )
        grouped = frame.groupby("culture", sort=True)
        part = pd.DataFrame(
            {
                "n": grouped.size(),
                # mean(skipna=False): one hidden label makes the culture's accuracy NaN.
                "accuracy": grouped["correct"].agg(lambda c: 100.0 * c.mean(skipna=False)),
                "no_choice": 100.0 * grouped["no_choice"].mean(),
            }
        ).reset_index()
        part.insert(1, "split", split)
        parts.append(part)
    result = pd.concat(parts, ignore_index=True)
    return result.sort_values(["culture", "split"], ignore_index=True)


def read_ablations(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """Masked answer tables keyed by source culture, taken from the file stem (``CHN.parquet``)."""
    tables: dict[str, pd.DataFrame] = {}
    for path in map(Path, paths):
        if path.stem in tables:
            raise InputError(f"two ablation files for source {path.stem!r}")
        tables[path.stem] = pd.read_parquet(path)
    return tables


def write_matrix(matrix: pd.DataFrame, path: str | Path) -> Path:
    """Write an :func:`ablation_matrix` table as parquet; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix.to_parquet(path, index=False)
    return path


def write_summary(summary: pd.DataFrame, path: str | Path) -> Path:
    """Write a :func:`self_cross_summary` table as parquet; returns the path."""
    return write_matrix(summary, path)
