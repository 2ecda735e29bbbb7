"""The bench stage (`culture-neurons bench`, no rule): how fast masked evaluation, recording and
selection run here (`culture_neurons.benchmark.bench`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from culture_neurons.benchmark.bench import run_bench

log = logging.getLogger(__name__)


def bench_stage(device: str, out: str | Path, store: str | Path | None = None) -> dict[str, Any]:
    """`culture-neurons bench`: `run_bench` into ``out``; logs the headline numbers and prints
    the Markdown table."""
    result = run_bench(device, Path(out), store=Path(store) if store else None)
    log.info(
        "engine %.2f items/s, naive %.2f (%.1fx), record overhead %.3f, agreement %.4f",
        result["masked_items_per_s"],
        result["naive_items_per_s"],
        result["speedup_vs_naive"],
        result["record_overhead"],
        result["answer_agreement"],
    )
    print((Path(out) / "bench.md").read_text())
    return result
