"""The atlas at the paper's size: time and peak memory of `culture-neurons atlas`.

    python benchmarks/atlas_bench.py [--root /tmp/atlas-bench] [--out benchmarks/atlas]

Writes (once, then reuses) under ``--root`` a synthetic store of the paper's shape, built as
benchmarks/stability.py builds its store (25 cultures x 28 layers x 18,944 neurons, 5,178
identification items rounded up to 208 per culture), an items table whose items carry a photo
(one in ten a text item) in a parquet shard, and five culture-specific rankings (random
permutations: the chosen neurons scatter over every layer, the atlas's worst case). Then the
atlas stage runs in a child process for 5 selectors x 25 cultures x 20 neurons, k = 8, 1,000
bootstrap resamples: its wall time and peak RSS (``ru_maxrss`` of the child) are the numbers,
written to ``<out>/bench.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

N_CULTURES, N_LAYERS, N_NEURONS, N_ITEMS = 25, 28, 18944, 5178
SELECTORS = ("lap", "lape", "mad", "cas", "attr")
NEURONS_PER_CULTURE, TOP_K, N_BOOT = 20, 8, 1000
CHILD = """
import json, sys, time, logging
logging.basicConfig(level=logging.INFO)
from culture_neurons.stages.atlas import atlas_stage
args = json.loads(sys.argv[1])
start = time.perf_counter()
n = atlas_stage(**args)
print(json.dumps({"wall_s": time.perf_counter() - start, "neurons": n}))
"""


def ensure_store(path: Path) -> float:
    """The synthetic store, as benchmarks/stability.py writes it; seconds spent writing."""
    from culture_neurons.benchmark.synthetic import write_synthetic_store

    if (path / "zarr.json").exists():
        return 0.0
    start = time.perf_counter()
    writing = path.with_name(path.stem + ".writing.zarr")
    write_synthetic_store(
        writing, n_cultures=N_CULTURES, items_per_culture=-(-N_ITEMS // N_CULTURES),
        n_layers=N_LAYERS, n_neurons=N_NEURONS, chunk_items=64, own_share=0.01, signal=0.2,
        seed=0,
    )  # fmt: skip
    writing.rename(path)
    return time.perf_counter() - start


def ensure_items(root: Path, store: Path) -> Path:
    """items.parquet for the store's items: nine in ten with a 640x480 JPEG in one shard."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr
    from PIL import Image, ImageDraw

    items = root / "items.parquet"
    if items.exists():
        return items
    ids = [str(i) for i in zarr.open_group(str(store), mode="r")["item_id"][:]]
    rng = np.random.default_rng(0)
    images = []
    for _ in ids:
        image = Image.new("RGB", (640, 480), tuple(int(v) for v in rng.integers(0, 255, 3)))
        box = sorted(rng.integers(0, 480, 2).tolist())
        ImageDraw.Draw(image).ellipse((box[0], box[0] // 2, box[1] + 100, box[1]), fill="white")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        images.append({"bytes": buffer.getvalue(), "path": None})
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    shard = root / "images.parquet"
    pq.write_table(pa.table({"image": pa.array(images, struct)}), shard, row_group_size=256)
    pd.DataFrame({
        "item_id": ids,
        "question": [f"Synthetic question {k}: what is shown?" for k in range(len(ids))],
        "options": [[f"option {j}" for j in range(4)] for _ in ids],
        "image_source": [None if k % 10 == 0 else str(shard) for k in range(len(ids))],
        "image_row": list(range(len(ids))),
    }).to_parquet(items)  # fmt: skip
    return items


def ensure_masks(root: Path, store: Path) -> dict[str, str]:
    """One ranking per selector: a random permutation of every neuron, per culture."""
    import numpy as np
    import zarr

    from culture_neurons.selection.masks import write_masks

    cultures = sorted({str(c) for c in zarr.open_group(str(store), mode="r")["culture"][:]})
    paths = {}
    for seed, name in enumerate(SELECTORS):
        path = root / "masks" / f"{name}.zarr"
        paths[name] = str(path)
        if path.exists():
            continue
        rng = np.random.default_rng(seed)
        ranks = np.stack(
            [rng.permutation(N_LAYERS * N_NEURONS) for _ in cultures]
        ).reshape(len(cultures), N_LAYERS, N_NEURONS).astype(np.int32)  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        write_masks(path, ranks < 100, cultures, {"selector": name}, ranks=ranks)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/atlas-bench")
    parser.add_argument("--out", default="benchmarks/atlas")
    args = parser.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    store = root / "activations.zarr"
    written_s = ensure_store(store)
    items, masks = ensure_items(root, store), ensure_masks(root, store)
    site, export = root / "atlas", root / "atlas.jsonl"
    payload = json.dumps({
        "model": "paper-size", "store": str(store), "items": str(items), "masks": masks,
        "neurons_per_culture": NEURONS_PER_CULTURE, "top_k": TOP_K, "out_dir": str(site),
        "export_out": str(export), "figure_out": str(root / "atlas_layers.png"),
        "n_boot": N_BOOT,
    })  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, payload], env=env, capture_output=True, text=True
    )
    if child.returncode:
        sys.exit(f"atlas child failed:\n{child.stderr[-4000:]}")
    timing = json.loads(child.stdout.strip().splitlines()[-1])
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    files = [f for f in site.rglob("*") if f.is_file()]
    thumbs = list((site / "thumbs").glob("*.jpg"))
    result = {
        "shape": {"cultures": N_CULTURES, "layers": N_LAYERS, "neurons": N_NEURONS,
                  "items": N_CULTURES * -(-N_ITEMS // N_CULTURES)},
        "selectors": list(SELECTORS), "neurons_per_culture": NEURONS_PER_CULTURE,
        "top_k": TOP_K, "n_boot": N_BOOT,
        "atlas_neurons": timing["neurons"],
        "wall_s": round(timing["wall_s"], 1),
        "peak_rss_gib": round(peak_gib, 2),
        "site_files": len(files),
        "site_mib": round(sum(f.stat().st_size for f in files) / 2**20, 1),
        "thumbnails": len(thumbs),
        "thumbnail_kib_mean": round(sum(f.stat().st_size for f in thumbs) / len(thumbs) / 1024, 1)
        if thumbs else 0,
        "export_mib": round(export.stat().st_size / 2**20, 1),
        "store_gib_on_disk": round(
            sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**30, 2
        ),
        "store_write_s": round(written_s, 1),
        "target": {"wall_s": 300, "peak_rss_gib": 4},
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        # The stage's own timings (store read, thumbnails, pages), not its progress bars.
        "log": [line for line in child.stderr.splitlines() if line.startswith("INFO")],
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
