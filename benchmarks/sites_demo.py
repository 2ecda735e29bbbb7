"""The demo's Table 2 per site, with where CAS puts its units, from a finished demo run with
sites (`snakemake --cores 2 --configfile config.yaml configs/demo-sites.yaml`).

    python benchmarks/sites_demo.py RUN_DIR [--out benchmarks/sites]

Reads RUN_DIR/results/summary/table2.csv (the decoder MLP) and table2_<site>.csv, the sites'
record reports (results/{model}/sites/{site}.json) and the CAS and MAD masks of every site, and
writes ``<out>/demo_table2.md`` (one Table 2 with a site column: RND, the layer-matched control
RND-LM, MAD and CAS) and ``<out>/demo_sites.json`` (the same numbers, the units chosen per layer
and the recording cost per item).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from culture_neurons.selection.masks import read_masks

SITES = ("decoder_mlp", "vision_mlp", "attention_heads")
COLUMNS = ("RND (3 seeds)", "RND-LM (3 seeds)", "MAD", "CAS")
ROWS = ("Self-Deactivation", "Cross-Deactivation Avg.", "Self-Cross Gap",
        "Sources with sig. Gap (q < 0.05)")  # fmt: skip


def site_table(summary: Path, site: str) -> pd.DataFrame:
    name = "table2.csv" if site == "decoder_mlp" else f"table2_{site}.csv"
    table = pd.read_csv(summary / name, dtype=str, keep_default_na=False)
    table["Metric"] = table["Metric"].replace("", pd.NA).ffill()
    table = table[table["Eval. Setting"].isin(ROWS)]
    table.insert(1, "Site", site)
    return table[["VLM", "Site", "Metric", "Eval. Setting", *COLUMNS]]


def chosen_per_layer(masks: Path) -> list[int]:
    """Units a mask store chose per layer, summed over its cultures."""
    selected, _, _ = read_masks(masks)
    return selected.sum(axis=(0, 2)).astype(int).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/sites"))
    args = parser.parse_args()
    results = args.run_dir / "results"
    tables = pd.concat([site_table(results / "summary", site) for site in SITES])
    models = sorted(tables["VLM"].unique())
    report: dict = {"command": "python benchmarks/sites_demo.py RUN_DIR", "models": {}}
    for model in models:
        entry: dict = {"cas_units_per_layer": {}, "mad_units_per_layer": {}, "recording": {}}
        for site in SITES:
            prefix = "" if site == "decoder_mlp" else f"{site}."
            for method in ("cas", "mad"):
                masks = results / model / "masks" / f"{prefix}{method}.zarr"
                entry[f"{method}_units_per_layer"][site] = chosen_per_layer(masks)
            if site != "decoder_mlp":
                entry["recording"][site] = json.loads(
                    (results / model / "sites" / f"{site}.json").read_text()
                )
        report["models"][model] = entry
    report["table2"] = tables.to_dict(orient="records")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_sites.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| " + " | ".join(tables.columns) + " |", "|" + "---|" * len(tables.columns)]
    lines += [
        "| " + " | ".join(str(v) for v in row) + " |" for row in tables.itertuples(index=False)
    ]
    (args.out / "demo_table2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
