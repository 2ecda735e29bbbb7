"""Every number the README and docs/demo.md quote about the demo, from one finished run's files.

    python benchmarks/demo_claims.py RUN_DIR OUT.md   (RUN_DIR: where `snakemake --cores 2` ran)

Writes OUT.md: the unmasked accuracy, Table 2, the per-source significance, the dose-response
and amplification lines, the selectors' candidates and set sizes, stability, overlap, the
Jaccards between selectors and the control effect. The demo numbers of the README and of
docs/demo.md are copied from the committed output (benchmarks/demo/claims.md), so a rerun
shows at once whether they still hold.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

MODEL = "demo-qwen25vl-tiny"
NAMES = {"lap": "LAP", "lape": "LAPE", "mad": "MAD", "cas": "CAS", "attr": "ATTR"}


def interval(value: float, lo: float, hi: float, digits: int = 1) -> str:
    return f"{value:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def baseline(run: Path) -> list[str]:
    answers = pd.read_parquet(run / f"results/{MODEL}/baseline/evaluation.parquet")
    per_culture = answers.groupby("culture")["correct"].mean()
    cultures = ", ".join(f"{c} {100 * a:.1f}%" for c, a in per_culture.items())
    return [
        "## Unmasked model (evaluation split)",
        "",
        f"{100 * answers['correct'].mean():.1f}% of {len(answers)} items "
        f"({len(answers) // len(per_culture)} per culture on average): {cultures}.",
    ]


def significance(run: Path) -> list[str]:
    table = pd.read_csv(run / "results/summary/table2_significance.csv")
    lines = ["## Sources with a significant gap (q < 0.05), fixed selectors", ""]
    for selector in ("lap", "lape", "mad", "cas", "attr"):
        for metric in ("delta", "flip_rate"):
            rows = table[(table["selector"] == selector) & (table["metric"] == metric)]
            hits = rows[rows["significant"]]
            named = ", ".join(
                f"{r.source} (gap {r.gap:+.1f}, q = {r.q_value:.3f})" for r in hits.itertuples()
            )
            lines.append(f"- {NAMES[selector]} {metric}: {len(hits)}/{len(rows)} {named}")
    return lines


def dose_response(run: Path) -> list[str]:
    table = pd.read_csv(run / f"results/{MODEL}/dose_response.csv")

    def cell(intervention: str, line: str, ratio: float, metric: str, setting: str) -> pd.Series:
        rows = table[
            (table["intervention"] == intervention) & (table["line"] == line)
            & (np.isclose(table["ratio"], ratio)) & (table["metric"] == metric)
            & (table["setting"] == setting)
        ]  # fmt: skip
        (row,) = rows.itertuples()
        return row

    def shown(intervention, line, ratio, metric, setting, with_interval=True) -> str:
        row = cell(intervention, line, ratio, metric, setting)
        return interval(row.value, row.lo, row.hi) if with_interval else f"{row.value:+.1f}"

    lines = [
        "## Dose-response (zeroing; Δ and gap in points, flip rate in %, 95% intervals over "
        "source cultures)",
        "",
        "| r | CAS self Δ | CAS cross Δ | CAS gap Δ | CAS gap flip | RND Δ | RND flip | "
        "RND-LM gap Δ | ATTR gap Δ |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ratio in sorted(table["ratio"].unique()):
        lines.append(
            f"| {ratio:.2f} | {shown('zero', 'CAS', ratio, 'delta', 'self')} | "
            f"{shown('zero', 'CAS', ratio, 'delta', 'cross', False)} | "
            f"{shown('zero', 'CAS', ratio, 'delta', 'gap')} | "
            f"{shown('zero', 'CAS', ratio, 'flip_rate', 'gap')} | "
            f"{shown('zero', 'RND', ratio, 'delta', 'self', False)} | "
            f"{cell('zero', 'RND', ratio, 'flip_rate', 'self').value:.1f} | "
            f"{shown('zero', 'RND-LM', ratio, 'delta', 'gap', False)} | "
            f"{shown('zero', 'ATTR', ratio, 'delta', 'gap')} |"
        )
    top = max(table["ratio"])
    for intervention in sorted(set(table["intervention"]) - {"zero"}):
        lines += [
            "",
            f"CAS, {intervention}, r = {top:.2f}: self Δ "
            f"{shown(intervention, 'CAS', top, 'delta', 'self')}, cross "
            f"{shown(intervention, 'CAS', top, 'delta', 'cross')}, gap "
            f"{shown(intervention, 'CAS', top, 'delta', 'gap')}; flip rate self "
            f"{cell(intervention, 'CAS', top, 'flip_rate', 'self').value:.1f}%, cross "
            f"{cell(intervention, 'CAS', top, 'flip_rate', 'cross').value:.1f}%.",
        ]
    return lines


def masks(run: Path) -> list[str]:
    lines = ["## Masks at the headline ratio: candidates and selected neurons per culture", ""]
    for selector, name in NAMES.items():
        group = zarr.open_group(str(run / f"results/{MODEL}/masks/{selector}.zarr"), mode="r")
        candidates = group.attrs["candidates_per_culture"].values()
        selected = np.asarray(group["selected"][:]).reshape(len(candidates), -1).sum(axis=1)
        per_layer = np.asarray(group["selected"][:]).sum(axis=(0, 2))
        lines.append(
            f"- {name}: candidates {min(candidates)}–{max(candidates)}, selected "
            f"{selected.min()}–{selected.max()} (ratio {group.attrs['ratio']}); all cultures' "
            f"neurons per layer: {', '.join(str(n) for n in per_layer)}"
        )
    return lines


def stability(run: Path) -> list[str]:
    summary = pd.read_csv(run / f"results/{MODEL}/stability/summary.csv")
    lines = [
        "## Stability (mean over cultures of the mean Jaccard and its 95% interval)",
        "",
        "| selector | bootstrap | permutation null |",
        "|---|---:|---:|",
    ]
    for selector, rows in summary.groupby("selector", sort=False):
        boot = rows[rows["kind"] == "bootstrap"]
        null = rows[rows["kind"] == "permuted"]
        lines.append(
            f"| {NAMES.get(selector, selector)} | {boot['mean'].mean():.2f} "
            f"({boot['lo'].mean():.2f}–{boot['hi'].mean():.2f}) | {null['mean'].mean():.2f} |"
        )
    return lines


def overlap(run: Path) -> list[str]:
    table = pd.read_csv(run / f"results/{MODEL}/overlap/correlation.csv")
    lines = [
        "## Overlap between cultures vs cross-deactivation (Spearman r [95% CI], Mantel p)",
        "",
    ]
    for row in table.itertuples():
        if pd.isna(row.spearman_r):
            lines.append(f"- {row.selector} {row.metric}: undefined ({row.note})")
        else:
            lines.append(
                f"- {row.selector} {row.metric}: {row.spearman_r:+.2f} "
                f"[{row.r_lo:+.2f}, {row.r_hi:+.2f}], p = {row.mantel_p:.3f}"
            )
    pairs = pd.read_parquet(run / f"results/{MODEL}/overlap/selectors.parquet")
    lines += ["", "Jaccard between selectors, per culture (min–max, mean):", ""]
    for a, b in [("attr", "cas"), ("attr", "attr_general"), ("cas", "lap"), ("lap", "mad")] + [
        ("attr", f"rnd_matched-s{seed}") for seed in range(3)
    ]:
        rows = pairs[(pairs["selector_a"] == a) & (pairs["selector_b"] == b)]["jaccard"]
        if len(rows):
            lines.append(f"- {a} ~ {b}: {rows.min():.3f}–{rows.max():.3f} (mean {rows.mean():.3f})")
    return lines


def main(run_dir: str, out: str) -> None:
    run = Path(run_dir)
    table2 = (run / "results/summary/table2.md").read_text().strip()
    control = (run / f"results/{MODEL}/control_effect.md").read_text().strip()
    sections = [
        [
            "# The demo's numbers, from one run",
            "",
            "Written by `benchmarks/demo_claims.py` from a finished `snakemake --cores 2` of "
            "`config.yaml` on a fresh clone.",
        ],
        baseline(run),
        ["## Table 2 (`results/summary/table2.md`)", "", table2],
        significance(run),
        dose_response(run),
        masks(run),
        stability(run),
        overlap(run),
        ["## Control effect (`control_effect.md`)", "", control.split("\n", 1)[1].strip()],
    ]
    Path(out).write_text("\n\n".join("\n".join(s) for s in sections) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
