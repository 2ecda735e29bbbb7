"""Thread or process for the input worker: decode windows of photo-sized JPEGs (bounded, as a job
does) while the main thread runs torch work, three ways: in line, in `inputs.stream`'s
background thread, in a `torch.utils.data.DataLoader` worker process.

    PYTHONPATH=src python benchmarks/real_size/worker_choice.py ITEMS.parquet [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from culture_neurons.data.images import PixelBound, load_image
from culture_neurons.inference.inputs import stream

BOUND = PixelBound(max_pixels=256 * 28 * 28, factor=28)  # the benchmark's processor cap
WINDOW = 8


def load_window(rows: pd.DataFrame) -> list:
    return [load_image(r.image_source, r.image_row, BOUND) for r in rows.itertuples()]


class Windows(Dataset):
    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return -(-len(self.rows) // WINDOW)

    def __getitem__(self, k: int) -> list:
        return load_window(self.rows.iloc[k * WINDOW : (k + 1) * WINDOW])


def model_work(seconds_of_matmul: int) -> None:
    a = torch.randn(512, 512)
    for _ in range(seconds_of_matmul):
        a = torch.tanh(a @ a.T / 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("items", type=Path)
    parser.add_argument("--work", type=int, default=60, help="matmuls per window")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("worker_choice.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = pd.read_parquet(args.items)
    rows = rows[rows["split"] == "evaluation"].reset_index(drop=True)
    windows = [rows.iloc[s : s + WINDOW] for s in range(0, len(rows), WINDOW)]
    results = {}

    start = time.perf_counter()
    for window in windows:
        load_window(window)
        model_work(args.work)
    results["inline_s"] = time.perf_counter() - start

    start = time.perf_counter()
    for _ in windows:
        model_work(args.work)
    results["model_only_s"] = time.perf_counter() - start

    start = time.perf_counter()
    for _ in stream(windows, load_window):
        model_work(args.work)
    results["thread_s"] = time.perf_counter() - start

    start = time.perf_counter()
    loader = DataLoader(Windows(rows), batch_size=None, num_workers=1, prefetch_factor=1)
    for _ in loader:
        model_work(args.work)
    results["dataloader_1_worker_s"] = time.perf_counter() - start

    results = {k: round(v, 2) for k, v in results.items()}
    results.update(items=len(rows), window=WINDOW, matmuls_per_window=args.work)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
