"""Draft acceptance on the trained demo model (not random init): the demo's evaluation split
under CAS's 8 culture masks at the headline ratio, answered with and without drafts.

    python benchmarks/draft_acceptance.py OUT_DIR   (after `snakemake --cores 2`)

Writes OUT_DIR/draft_acceptance.json: rates (median of 3 interleaved runs, and each run), draft
acceptance, decoder forwards per answer and whether every answer is the same both ways.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from culture_neurons.data.split import EVALUATION, split_rows
from culture_neurons.demo.shipped import SHIPPED_MODEL_DIR
from culture_neurons.inference.decoding import DecodeStats
from culture_neurons.inference.engine import answer_masked
from culture_neurons.models import load_adapter
from culture_neurons.selection.masks import read_masks

MODEL = "results/demo-qwen25vl-tiny"
REPEATS = 3


def main(out_dir: str) -> None:
    torch.set_num_threads(2)
    adapter = load_adapter({"family": "qwen2_5_vl", "path": SHIPPED_MODEL_DIR,
                            "dtype": "float32"})  # fmt: skip
    rows = split_rows(pd.read_parquet("results/data/demo/items.parquet"), EVALUATION)
    selected, cultures, _ = read_masks(f"{MODEL}/masks/cas.zarr")
    keep = torch.from_numpy(~selected.astype(bool)).to(adapter.dtype)
    result: dict = {"items": len(rows), "masks": len(cultures), "selector": "cas"}
    tables = {}
    pairs = len(rows) * len(cultures)
    rates: dict[str, list[float]] = {"drafts": [], "no_drafts": []}
    for _ in range(REPEATS):  # interleaved: this machine's speed drifts by 10% or more
        for drafts in (True, False):
            stats = DecodeStats()
            start = time.perf_counter()
            tables[drafts] = answer_masked(
                adapter, rows, keep, batch_size=16, max_new_tokens=20, drafts=drafts,
                stats=stats, desc=f"drafts={drafts}",
            )  # fmt: skip
            key = "drafts" if drafts else "no_drafts"
            rates[key].append(pairs / (time.perf_counter() - start))
            result[f"{key}_decoder_forwards_per_answer"] = stats.row_forwards / pairs
            if drafts:
                result["draft_acceptance"] = stats.accepted / max(stats.drafted, 1)
    for key, values in rates.items():
        result[f"{key}_items_per_s"] = statistics.median(values)
        result[f"{key}_items_per_s_runs"] = values
    result["same_answers"] = all(
        a["output"].tolist() == b["output"].tolist()
        for a, b in zip(tables[True], tables[False], strict=True)
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "draft_acceptance.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
