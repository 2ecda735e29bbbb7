"""Peak host memory (``/usr/bin/time -v``) of `culture-neurons record` and `ablate` on photo-sized
JPEGs at two sizes, and the seconds per item spent decoding versus answering.

    PYTHONPATH=src python benchmarks/real_size/measure_memory.py WORK_DIR --label streamed \
        --data SMALL_ITEMS_DIR LARGE_ITEMS_DIR [--src OTHER/src] [--out memory.json]

Each ``--data`` folder is a prepared dataset (items.parquet + report.json, from `prepare-data` on
`make_photos.py`'s source). The model is the shipped demo model (resources/demo/model) with its
Qwen2.5-VL processor capped at ``--max-pixels`` (256 visual tokens by default: the tiny model runs
a 1280-token image at ~1.8 s per item on 2 CPU cores). ``--src`` runs another checkout's package
(the commit before streaming) for comparison. Results are merged into ``--out`` under ``label``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

INPUTS = re.compile(
    r"(?P<stage>record|baseline|ablate[^:]*|chunk \d+/\d+): inputs: (?P<items>\d+) items loaded in "
    r"(?P<load>[\d.]+) s .* waited (?P<wait>[\d.]+) s for them and answered in (?P<model>[\d.]+) s"
)


def timed(command: list[str], log: Path, env: dict[str, str]) -> dict:
    """Run ``command`` under /usr/bin/time -v; its peak RSS, wall time and input timings."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        result = subprocess.run(["/usr/bin/time", "-v", *command], stdout=handle,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip
    text = log.read_text()
    if result.returncode != 0:
        sys.exit(f"{command[1]} failed ({result.returncode}); see {log}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    inputs = [
        {
            "stage": m["stage"],
            "items": int(m["items"]),
            "decode_s_per_item": float(m["load"]) / int(m["items"]),
            "answer_s_per_item": float(m["model"]) / int(m["items"]),
            "wait_s": float(m["wait"]),
        }
        for m in INPUTS.finditer(text)
    ]
    return {
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "inputs": inputs,
        "log": str(log),
    }


def run_size(data: Path, work: Path, model: dict, env: dict[str, str], batch: int) -> dict:
    items = pd.read_parquet(data / "items.parquet")
    work.mkdir(parents=True, exist_ok=True)
    store = work / "activations.zarr"
    for stale in (store, work / "activations.partial.zarr", work / "masks.zarr", work / "ablate"):
        shutil.rmtree(stale, ignore_errors=True)
    common = ["--model", json.dumps(model), "--batch-size", str(batch), "--max-batch-size", "0",
              "--max-new-tokens", "20"]  # fmt: skip
    cli = ["culture-neurons", "--threads", "2"]
    record = timed(
        [*cli, "record", "--items", str(data / "items.parquet"), "--data-report",
         str(data / "report.json"), "--model-name", "demo", "--chunk-items", str(4 * batch),
         "--store", str(store), "--baseline-dir", str(work / "baseline"), *common],
        work / "record.log", env,
    )  # fmt: skip
    subprocess.run(
        [*cli, "select", "--store", str(store), "--selector", "cas", "--ratio", "0.01",
         "--all-items", "--out", str(work / "masks.zarr"), "--report", str(work / "select.json")],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ablate = timed(
        [*cli, "ablate", "--items", str(data / "items.parquet"), "--masks",
         str(work / "masks.zarr"), "--sources", "all", "--out-dir", str(work / "ablate"), *common],
        work / "ablate.log", env,
    )  # fmt: skip
    return {
        "evaluation_items": int((items["split"] == "evaluation").sum()),
        "identification_items": int((items["split"] == "identification").sum()),
        "record": record,
        "ablate": ablate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--label", required=True)
    parser.add_argument("--data", type=Path, nargs=2, required=True, help="small, large")
    parser.add_argument("--src", type=Path, help="the package source to run (default: this one)")
    parser.add_argument("--max-pixels", type=int, default=256 * 28 * 28)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("memory.json"))
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.src:
        env["PYTHONPATH"] = str(args.src.resolve())
    model = {"family": "qwen2_5_vl", "path": "resources/demo/model", "dtype": "float32",
             "device_map": "cpu", "token_scope": "all",
             "processor_kwargs": {"max_pixels": args.max_pixels}}  # fmt: skip
    runs = {}
    for name, data in zip(("small", "large"), args.data, strict=True):
        runs[name] = run_size(data, args.work / args.label / name, model, env, args.batch_size)
        print(name, json.dumps({k: runs[name][k]["peak_rss_mb"] for k in ("record", "ablate")}))
    ratio = {
        job: round(runs["large"][job]["peak_rss_mb"] / runs["small"][job]["peak_rss_mb"], 3)
        for job in ("record", "ablate")
    }
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.label] = {
        "model": model,
        "batch_size": args.batch_size,
        "items_ratio": runs["large"]["evaluation_items"] / runs["small"]["evaluation_items"],
        "peak_ratio_large_to_small": ratio,
        **runs,
    }
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(args.label, "peak ratio large/small:", ratio)


if __name__ == "__main__":
    main()
