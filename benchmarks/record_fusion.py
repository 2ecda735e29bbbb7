"""Record overhead on CUDA with the compiled reduction vs the eager one (same model, same batches).

python benchmarks/record_fusion.py      # needs a CUDA GPU; prints a small table
"""

from __future__ import annotations

import dataclasses

from culture_neurons.benchmark import bench
from culture_neurons.models import hooks


def main() -> None:
    adapter = bench.cuda_model()
    sizes = dataclasses.replace(bench.CUDA_SIZES, n_items=64)
    items = bench.bench_items(adapter, sizes)
    rows = []
    for name, reduce in (("compiled", None), ("eager", hooks.reduce_positive)):
        hooks._compiled_reduce = reduce
        result = bench.measure_record_overhead(adapter, items, sizes, "cuda")
        rows.append((name, result["record_overhead"], result["bare_forward_items_per_s"]))
    print("| reduction | record_overhead | bare items/s |\n|---|---:|---:|")
    for name, overhead, rate in rows:
        print(f"| {name} | {overhead:.3f} | {rate:.2f} |")


if __name__ == "__main__":
    main()
