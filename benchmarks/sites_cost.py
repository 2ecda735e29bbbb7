"""What recording the extra sites costs: seconds and store bytes per item, beside the decoder
MLP's recording, on the CPU bench model.

    python benchmarks/sites_cost.py [--items 48] [--out benchmarks/sites/cost.json]

The model is `culture-neurons bench`'s CPU model (a random-init Qwen2.5-VL: 8 decoder layers x
2,048 MLP neurons and 8 heads, a 4-block vision tower of 1,024 MLP neurons). The items are
photo-sized JPEGs (1600x1200 to 3000x2000), decoded as a run decodes them and scaled by the
adapter to Qwen's cap of 1280 x 28 x 28 pixels: about 5,000 vision patches and 1,240 visual
tokens per photo, prompts of about 1,470 tokens (the paper's Qwen2.5-VL-7B sees as many), with
questions of varied length. Rule record's pass (answers and
decoder statistics, 20 new tokens at most) runs first; each site's record_site pass (prompt
forwards only) then runs on its identification baseline. Each pass is timed in this process
after a warm-up batch; the store bytes are what lands on disk (compressed), per item. The units
of the paper's Qwen2.5-VL-7B are listed beside, from its config, to scale the bytes per item.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from culture_neurons.benchmark.bench import cpu_model
from culture_neurons.data.images import PixelBound, decode_image
from culture_neurons.models.sites import ATTENTION_HEADS, VISION_MLP, site_shape
from culture_neurons.record.recording import (
    baseline_table_from_store,
    record_identification,
)
from culture_neurons.record.site_recording import record_site_pass
from culture_neurons.stages.record_site import directory_bytes

#: Qwen2.5-VL-7B-Instruct's units per site (its config.json: 28 decoder layers, intermediate
#: 18,944, 28 attention heads; vision depth 32, intermediate 3,420).
QWEN25VL_7B_UNITS = {
    "decoder_mlp": 28 * 18944,
    "vision_mlp": 32 * 3420,
    "attention_heads": 28 * 28,
}
QUESTIONS = [
    "What is shown in the picture?",
    "Which festival is celebrated in this photo, and in which country does it take place?",
    "What food is this?",
    "Where was this photo taken? Name the city shown in the picture, please, as precisely as "
    "you can tell from the buildings and the people.",
]


def photo_rows(n: int, bound: PixelBound | None, seed: int = 0) -> pd.DataFrame:
    """Identification rows with photo-sized JPEGs, held as a run's `load_image` gives them
    (decoded down to the model's ``bound``), and four options each."""
    rng = np.random.default_rng(seed)
    sizes = [(1600, 1200), (3000, 2000), (2000, 3000), (2400, 1800)]
    rows = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        small = rng.integers(0, 256, size=(h // 50, w // 50, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize((w, h)).save(buffer, format="JPEG", quality=85)
        # In memory (`prompt_items`' in-memory column), decoded as `load_image` decodes a shard's
        # photo: at the smallest JPEG scale still above the processor's bound, then resized.
        image = decode_image({"bytes": buffer.getvalue(), "path": None}, bound=bound)
        rows.append({
            "item_id": f"photo_{i:04d}", "culture": f"C{i % 4}", "subset": "photos",
            "label": int(rng.integers(0, 4)), "question": QUESTIONS[i % len(QUESTIONS)],
            "options": [f"option {k} of item {i}" for k in range(4)],
            "image": image, "split": "identification",
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/sites/cost.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        adapter = cpu_model(root)
        rows = photo_rows(args.items, adapter.image_bound)
        chunk = 2 * args.batch_size
        # Warm-up: one batch of each pass, outside the timings.
        warm = rows.iloc[: args.batch_size]
        store, _ = record_identification(
            adapter, warm, root / "warm.zarr", batch_size=args.batch_size, chunk_batches=1,
            max_new_tokens=20, attrs={},
        )  # fmt: skip
        start = time.perf_counter()
        store, timings = record_identification(
            adapter, rows, root / "decoder.zarr", batch_size=args.batch_size, chunk_batches=2,
            max_new_tokens=20, attrs={},
        )  # fmt: skip
        passes = {
            "decoder_mlp": {
                "pass": "record (answers, 20 new tokens at most, + decoder statistics)",
                "seconds": time.perf_counter() - start,
                "units": adapter.n_layers * adapter.n_neurons,
                "store_bytes": directory_bytes(root / "decoder.zarr"),
            }
        }
        baseline = baseline_table_from_store(store, rows)
        for site in (VISION_MLP, ATTENTION_HEADS):
            shape = site_shape(adapter, site)
            record_site_pass(adapter, warm, baseline.iloc[: len(warm)], shape,
                             root / f"warm_{site}.zarr", batch_size=args.batch_size,
                             chunk_items=chunk, attrs={})  # fmt: skip
            start = time.perf_counter()
            record_site_pass(adapter, rows, baseline, shape, root / f"{site}.zarr",
                             batch_size=args.batch_size, chunk_items=chunk, attrs={})  # fmt: skip
            passes[site] = {
                "pass": "record_site (prompt forwards only)",
                "seconds": time.perf_counter() - start,
                "units": shape.n_layers * shape.n_units,
                "store_bytes": directory_bytes(root / f"{site}.zarr"),
            }
    for site, entry in passes.items():
        entry["seconds_per_item"] = round(entry["seconds"] / args.items, 4)
        entry["store_bytes_per_item"] = round(entry["store_bytes"] / args.items, 1)
        entry["store_bytes_per_unit_item"] = round(
            entry["store_bytes"] / args.items / entry["units"], 3
        )
        entry["seconds"] = round(entry["seconds"], 2)
        # The paper model's bytes per item at this store's compression.
        entry["qwen25vl_7b_units"] = QWEN25VL_7B_UNITS[site]
        entry["qwen25vl_7b_store_mib_per_item_at_this_ratio"] = round(
            entry["store_bytes_per_unit_item"] * QWEN25VL_7B_UNITS[site] / 2**20, 3
        )
    decoder = passes["decoder_mlp"]
    for site in (VISION_MLP, ATTENTION_HEADS):
        passes[site]["time_vs_record"] = round(passes[site]["seconds"] / decoder["seconds"], 3)
    report = {
        "command": "python benchmarks/sites_cost.py",
        "items": args.items,
        "batch_size": args.batch_size,
        "model": "culture-neurons bench CPU model (random-init Qwen2.5-VL, see docstring)",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },  # fmt: skip
        "passes": passes,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
