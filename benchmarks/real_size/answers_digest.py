"""Answers of the shipped demo model on demo items, as a digest to compare two versions of the code.

Streaming must not change an answer: run this at the commit before and after, compare the JSON.
    PYTHONPATH=src python benchmarks/real_size/answers_digest.py ITEMS.parquet OUT.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile

import numpy as np
import pandas as pd
import torch

from culture_neurons.data.split import split_rows
from culture_neurons.inference.engine import answer_masked
from culture_neurons.models import load_adapter
from culture_neurons.record.recording import record_identification

MODEL = {"family": "qwen2_5_vl", "path": "resources/demo/model", "dtype": "float32",
         "device_map": "cpu", "token_scope": "all"}  # fmt: skip


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def main(items_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    adapter = load_adapter(MODEL)
    items = pd.read_parquet(items_path)
    evaluation = split_rows(items, "evaluation")
    generator = torch.Generator().manual_seed(7)
    keep = (torch.rand((3, adapter.n_layers, adapter.n_neurons), generator=generator) > 0.2).float()
    tables = answer_masked(adapter, evaluation, keep, batch_size=16, max_new_tokens=20)
    (baseline,) = answer_masked(adapter, evaluation, None, batch_size=16, max_new_tokens=20)
    result = {
        "masked_outputs": [t["output"].tolist() for t in tables],
        "baseline_outputs": baseline["output"].tolist(),
    }
    identification = split_rows(items, "identification").head(128)
    with tempfile.TemporaryDirectory() as tmp:
        store, _ = record_identification(
            adapter, identification, f"{tmp}/a.zarr", batch_size=16, chunk_batches=2,
            max_new_tokens=20, attrs={},
        )  # fmt: skip
        group = store.group
        result["record"] = {
            name: digest(group[name][:]) for name in ("fire_count", "pos_sum", "tokens", "correct")
        }
        result["record_answers"] = list(group["answer"][:])
    with open(out_path, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
