"""Stability at the paper's size: time and peak memory of re-selection on a synthetic store.

    python benchmarks/stability.py [--store /tmp/stability-bench.zarr] [--out benchmarks/cpu]

Writes (once, then reuses) a synthetic per-item store of the paper's shape (25 cultures x 28
layers x 18,944 neurons, 5,178 identification items rounded up to 208 per culture, about 60%
answered correctly), then runs the stability analysis with B = 50 bootstrap resamples and 10
null replicates for all five selectors in a child process, whose wall time and peak RSS
(``ru_maxrss`` of the child) are the numbers.
Results go to ``<out>/stability.json`` and ``<out>/stability.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

N_CULTURES, N_LAYERS, N_NEURONS, N_ITEMS = 25, 28, 18944, 5178
SELECTORS = {
    "rnd-s0": {"method": "rnd", "seed": 0},
    "lap": {"method": "lap", "alpha": 95},
    "lape": {"method": "lape", "alpha": 95, "beta": 90, "rho": 1.0},
    "mad": {"method": "mad", "alpha": 95},
    "cas": {"method": "cas"},
}
CHILD = """
import json, sys, time, logging
logging.basicConfig(level=logging.INFO)
from culture_neurons.record.store import open_store
from culture_neurons.selection.stability import stability
args = json.loads(sys.argv[1])
start = time.perf_counter()
result = stability(open_store(args["store"]), args["selectors"], ratio=0.01,
                   n_resamples=args["resamples"], null_resamples=args["null"],
                   memory_gb=args["memory_gb"])
summary = result.summary.groupby(["selector", "kind"])["mean"].mean().round(4)
print(json.dumps({"wall_s": time.perf_counter() - start, **result.seconds,
                  "mean_jaccard": {f"{s}/{k}": v for (s, k), v in summary.items()}}))
"""


def ensure_store(path: Path) -> float:
    """Write the synthetic store unless a complete one is there; seconds spent writing."""
    from culture_neurons.benchmark.synthetic import write_synthetic_store

    if (path / "zarr.json").exists():
        return 0.0
    start = time.perf_counter()
    write_synthetic_store(
        path.with_name(path.stem + ".writing.zarr"), n_cultures=N_CULTURES,
        items_per_culture=-(-N_ITEMS // N_CULTURES), n_layers=N_LAYERS, n_neurons=N_NEURONS,
        chunk_items=64, own_share=0.01, signal=0.2, seed=0,
    )  # fmt: skip
    path.with_name(path.stem + ".writing.zarr").rename(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="/tmp/stability-bench.zarr")
    parser.add_argument("--out", default="benchmarks/cpu")
    parser.add_argument("--resamples", type=int, default=50)
    parser.add_argument("--null", type=int, default=10)
    parser.add_argument("--memory-gb", type=float, default=1.5)
    args = parser.parse_args()
    store = Path(args.store)
    written_s = ensure_store(store)
    payload = json.dumps(
        {"store": str(store), "selectors": SELECTORS, "resamples": args.resamples,
         "null": args.null, "memory_gb": args.memory_gb}
    )  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, payload], capture_output=True, text=True, env=env, check=True
    )
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    result = {
        # Equal cultures: 25 x 208 = 5,200 items, the paper's 5,178 rounded up.
        "shape": {"cultures": N_CULTURES, "layers": N_LAYERS, "neurons": N_NEURONS,
                  "items": N_CULTURES * -(-N_ITEMS // N_CULTURES)},
        "resamples": args.resamples,
        "null_resamples": args.null,
        "memory_gb_setting": args.memory_gb,
        "selectors": list(SELECTORS),
        "wall_s": round(measured["wall_s"], 1),
        "accumulate_s": round(measured["accumulate_s"], 1),
        "select_s": round(measured["select_s"], 1),
        "peak_rss_gib": round(peak_gib, 2),
        "store_gib_on_disk": round(
            sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**30, 2
        ),
        "store_write_s": round(written_s, 1),
        "mean_jaccard": measured["mean_jaccard"],
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "targets": {"wall_s": 600, "peak_rss_gib": 4},
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stability.json").write_text(json.dumps(result, indent=2) + "\n")
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    (out / "stability.md").write_text(
        "| measure | value | target |\n|---|---:|---|\n"
        f"| wall time (B={args.resamples}, null {args.null}, 5 selectors) | {result['wall_s']} s "
        f"| ≤ 600 s ({met(result['wall_s'] <= 600)}) |\n"
        f"| of which store passes | {result['accumulate_s']} s | |\n"
        f"| of which selector calls | {result['select_s']} s | |\n"
        f"| peak RSS | {result['peak_rss_gib']} GiB | ≤ 4 GiB ({met(peak_gib <= 4)}) |\n"
        f"| store on disk | {result['store_gib_on_disk']} GiB | |\n"
    )
    print((out / "stability.md").read_text())


if __name__ == "__main__":
    main()
