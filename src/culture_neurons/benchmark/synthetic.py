"""A synthetic per-item activation store with planted culture signal, for tests and benchmarks.

Every neuron fires on each valid token with a base probability (Beta-distributed over neurons);
each culture has its own small set of neurons whose probability is raised by ``signal`` on that
culture's items. Counts are binomial per item, sums are counts times a positive magnitude. The
store is written with the recording code's own layout (:func:`create_or_resume`), chunk by chunk,
so it reads exactly like a recorded one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from culture_neurons.record.store import ActivationStore, create_or_resume


def write_synthetic_store(
    path: str | Path,
    *,
    n_cultures: int,
    items_per_culture: int,
    n_layers: int,
    n_neurons: int,
    own_share: float = 0.02,
    signal: float = 0.3,
    tokens: int = 200,
    accuracy: float = 0.6,
    chunk_items: int = 64,
    seed: int = 0,
) -> ActivationStore:
    """Write the store (items ordered by culture, like a split grouped by pair) and return it."""
    rng = np.random.default_rng(seed)
    cells = n_layers * n_neurons
    cultures = [f"c{c:02d}" for c in range(n_cultures)]
    item_cultures = np.repeat(np.arange(n_cultures), items_per_culture)
    n_items = len(item_cultures)
    base = rng.beta(0.6, 6.0, size=cells).astype(np.float32)
    own = rng.random((n_cultures, cells)) < own_share
    magnitude = rng.gamma(2.0, 0.5, size=cells).astype(np.float32)
    store = create_or_resume(
        path,
        item_ids=[f"item{i:06d}" for i in range(n_items)],
        cultures=[cultures[c] for c in item_cultures],
        n_layers=n_layers,
        n_neurons=n_neurons,
        chunk_items=chunk_items,
        attrs={"model": "synthetic", "dataset_fingerprint": f"synthetic-{seed}"},
    )
    valid = rng.integers(tokens // 2, tokens + 1, size=n_items)
    correct = (rng.random(n_items) < accuracy).astype(np.int8)
    for chunk in tqdm(store.pending_chunks(), desc="synthetic store", unit="chunk"):
        rows = store.chunk_slice(chunk)
        n = rows.stop - rows.start
        prob = np.broadcast_to(base, (n, cells)).copy()
        for k, c in enumerate(item_cultures[rows]):
            prob[k, own[c]] = np.minimum(prob[k, own[c]] + signal, 1.0)
        fire = rng.binomial(valid[rows][:, None], prob).astype(np.uint16)
        sums = fire * magnitude * rng.uniform(0.8, 1.2, size=(n, 1)).astype(np.float32)
        store.write_chunk(
            chunk,
            fire.reshape(n, n_layers, n_neurons),
            sums.reshape(n, n_layers, n_neurons),
            valid[rows],
            correct[rows],
            # Synthetic outputs are never negative: the sum of all outputs is the positive sum.
            act_sum=sums.reshape(n, n_layers, n_neurons).sum(axis=0, dtype=np.float64),
        )
    return store
