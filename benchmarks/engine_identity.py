"""The engine's answers, scores, recorded statistics and decoder calls, hashed, with timings
(issue 33: "behaviour unchanged" for the engine with explicit state).

    python benchmarks/engine_identity.py --out FILE.json [--items ITEMS] [--repeats 3]
    python benchmarks/engine_identity.py --compare A.json B.json

On the shipped demo model (`resources/demo/model`, float32, one torch thread) and the demo's
items (default results/data/demo/items.parquet; image paths are read relative to the current
folder): masked answers of 200 evaluation items under 3 masks (no-op, 1% and 5% of the neurons
off, seed 7) with drafts and step by step, the unmasked baseline, and `record_identification`
(answers + activation statistics) of 96 identification items. Run it once with the code before a
change and once after (e.g. PYTHONPATH pointing at each tree); --compare checks that every digest
and decoder-call count agrees and prints the median seconds side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _digest(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return digest.hexdigest()[:16]


def _table(table) -> str:
    return _digest(table["output"].tolist(), table["choice"].to_numpy(),
                   table["correct"].to_numpy(), table["item_id"].tolist())  # fmt: skip


def measure(items: Path, repeats: int) -> dict:
    import pandas as pd
    import torch
    import zarr

    from culture_neurons.data.split import EVALUATION, IDENTIFICATION, split_rows
    from culture_neurons.inference.decoding import DecodeStats
    from culture_neurons.inference.engine import answer_all, answer_masked
    from culture_neurons.models import load_adapter
    from culture_neurons.record.recording import record_identification, store_attrs

    torch.set_num_threads(1)
    adapter = load_adapter({"family": "qwen2_5_vl", "path": str(ROOT / "resources/demo/model"),
                            "dtype": "float32"})  # fmt: skip
    rows = pd.read_parquet(items)
    evaluation = split_rows(rows, EVALUATION).head(200).reset_index(drop=True)
    identification = split_rows(rows, IDENTIFICATION).head(96).reset_index(drop=True)
    generator = torch.Generator().manual_seed(7)
    shape = (adapter.n_layers, adapter.n_neurons)
    keep = torch.ones((3, *shape))
    keep[1] = (torch.rand(shape, generator=generator) > 0.01).float()
    keep[2] = (torch.rand(shape, generator=generator) > 0.05).float()
    out: dict = {"digests": {}, "decoder_calls": {}, "seconds": {}}
    for _ in range(repeats):
        for name, drafts in (("masked_drafts", True), ("masked_steps", False)):
            stats = DecodeStats()
            began = time.perf_counter()
            tables = answer_masked(adapter, evaluation, keep, batch_size=16, max_new_tokens=20,
                                   drafts=drafts, stats=stats, desc=name)  # fmt: skip
            out["seconds"].setdefault(name, []).append(time.perf_counter() - began)
            out["digests"][name] = [_table(t) for t in tables]
            out["decoder_calls"][name] = {
                "forwards": stats.forwards, "row_forwards": stats.row_forwards,
                "rows": stats.rows, "drafted": stats.drafted, "accepted": stats.accepted,
            }  # fmt: skip
        began = time.perf_counter()
        baseline = answer_all(adapter, evaluation, batch_size=16, max_new_tokens=20, desc="base")
        out["seconds"].setdefault("baseline", []).append(time.perf_counter() - began)
        out["digests"]["baseline"] = _table(baseline)
        with tempfile.TemporaryDirectory() as work:
            began = time.perf_counter()
            record_identification(
                adapter, identification, Path(work) / "store.zarr", batch_size=16,
                chunk_batches=2, max_new_tokens=20, attrs=store_attrs(adapter, "fp", "demo"),
            )  # fmt: skip
            out["seconds"].setdefault("record", []).append(time.perf_counter() - began)
            group = zarr.open_group(str(Path(work) / "store.zarr"), mode="r")
            out["digests"]["record"] = {
                name: _digest(list(group[name][:]) if group[name].dtype == object
                              else group[name][:])
                for name in sorted(group.array_keys())
            }  # fmt: skip
    out["median_seconds"] = {k: float(np.median(v)) for k, v in out["seconds"].items()}
    return out


def compare(a: dict, b: dict) -> bool:
    same = a["digests"] == b["digests"] and a["decoder_calls"] == b["decoder_calls"]
    print("digests and decoder calls", "identical" if same else "DIFFER")
    for name, seconds in a["median_seconds"].items():
        other = b["median_seconds"][name]
        print(f"{name:14s} {seconds:8.3f} s {other:8.3f} s  x{other / seconds:.3f}")
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--items", type=Path, default=Path("results/data/demo/items.parquet"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", nargs=2, type=Path)
    args = parser.parse_args()
    if args.compare:
        first, second = (json.loads(p.read_text()) for p in args.compare)
        return 0 if compare(first, second) else 1
    if args.out is None:
        parser.error("--out or --compare is needed")
    args.out.write_text(json.dumps(measure(args.items, args.repeats), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
