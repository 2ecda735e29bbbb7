"""Deterministic 50/50 identification/evaluation split per country–language pair.

Each item is ranked inside its pair by a seeded hash of its ID, and the first ⌊n/2⌋ go to the
identification half (so evaluation gets the extra item of an odd pair, as in the paper's Table 4).
Because the rank depends only on IDs, reordering rows never changes the split, and a new item
moves at most one existing item across the boundary of its own pair.
"""

from __future__ import annotations

import hashlib

import pandas as pd

IDENTIFICATION = "identification"
EVALUATION = "evaluation"


def id_hash(item_id: str, seed: int) -> int:
    """A stable 64-bit key; Python's hash() is salted per process and would not be."""
    digest = hashlib.sha256(f"{seed}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def assign_splits(item_ids: pd.Series, pairs: pd.Series, seed: int) -> pd.Series:
    """Return 'identification' or 'evaluation' for each item, aligned with ``item_ids``."""
    if item_ids.duplicated().any():
        raise ValueError("assign_splits needs unique item IDs")
    keys = pd.DataFrame(
        {
            "pair": pairs.to_numpy(),
            "hash": [id_hash(i, seed) for i in item_ids],
            "item_id": item_ids.to_numpy(),
        },
        index=item_ids.index,
    )
    # item_id breaks the (astronomically unlikely) hash ties so the order stays total.
    keys = keys.sort_values(["pair", "hash", "item_id"])
    rank = keys.groupby("pair", sort=False).cumcount()
    size = keys.groupby("pair", sort=False)["pair"].transform("size")
    split = pd.Series(EVALUATION, index=keys.index)
    split[rank < size // 2] = IDENTIFICATION
    return split.reindex(item_ids.index)


def split_rows(items: pd.DataFrame, split: str) -> pd.DataFrame:
    """The items of one split, in table order (the artifact both recording and ablation read)."""
    if split not in (IDENTIFICATION, EVALUATION):
        raise ValueError(f"unknown split {split!r}")
    return items[items["split"] == split].reset_index(drop=True)
