"""Batched greedy answering: the unmasked baseline (with activation recording) and masked runs.

Each batch is one prompt per row, left-padded; the row's answer is scored with the paper's
Algorithm 1. Recording reduces the prefill's act_fn outputs on the device (see
`culture_neurons.models.hooks`); masking multiplies them by the row's own keep mask, so several
masks can share one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from culture_neurons.answers import extract_choice, is_correct
from culture_neurons.images import load_image
from culture_neurons.models import apply_keep_masks, record_activation_stats
from culture_neurons.models.base import ModelAdapter

NO_CHOICE = -1
UNKNOWN = -1  # correctness when labels are hidden


@dataclass
class BatchAnswers:
    """Answers of one batch (host side), plus its activation statistics when recorded."""

    texts: list[str]
    choices: np.ndarray  # int8, NO_CHOICE where no option was named
    correct: np.ndarray  # int8: 1, 0, or UNKNOWN
    fire_count: np.ndarray | None = None  # [B, L, D]
    pos_sum: np.ndarray | None = None
    tokens: np.ndarray | None = None


def prompt_items(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Model inputs of items.parquet rows: question, options and the decoded image."""
    return [
        {
            "question": row.question,
            "options": list(row.options),
            "image": load_image(row.image_source, row.image_row),
        }
        for row in rows.itertuples(index=False)
    ]


def score(texts: Sequence[str], rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Extracted choice and correctness (UNKNOWN for hidden labels) of each reply."""
    choices, correct = [], []
    for text, options, label in zip(texts, rows["options"], rows["label"], strict=True):
        options = list(options)
        choice = extract_choice(text, options)
        choices.append(NO_CHOICE if choice is None else choice)
        correct.append(UNKNOWN if label < 0 else int(is_correct(text, options, int(label))))
    return np.asarray(choices, dtype=np.int8), np.asarray(correct, dtype=np.int8)


def answer_batch(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    *,
    max_new_tokens: int,
    record: bool = False,
    keep: torch.Tensor | None = None,
    row_mask_index: torch.Tensor | None = None,
) -> BatchAnswers:
    """Greedy answers for ``rows`` in one batch; records statistics and/or applies keep masks."""
    batch = adapter.build_batch(prompt_items(rows))
    with _interventions(adapter, batch, record, keep, row_mask_index) as recorder:
        new_tokens = adapter.generate(batch, max_new_tokens=max_new_tokens)
    texts = [t.strip() for t in adapter.decode(new_tokens)]
    choices, correct = score(texts, rows)
    answers = BatchAnswers(texts, choices, correct)
    if recorder is not None:
        answers.fire_count = recorder.fire_count.numpy()
        answers.pos_sum = recorder.pos_sum.numpy()
        answers.tokens = recorder.tokens.numpy()
    return answers


@contextmanager
def _interventions(
    adapter: ModelAdapter,
    batch: Any,
    record: bool,
    keep: torch.Tensor | None,
    row_mask_index: torch.Tensor | None,
) -> Iterator[Any]:
    """Masking and/or recording hooks for one batch; yields the recorder (or None)."""
    modules = adapter.act_fn_modules()
    with ExitStack() as stack:
        if keep is not None:
            stack.enter_context(apply_keep_masks(modules, keep, row_mask_index))
        recorder = None
        if record:
            # Registered after the masks, so recording sees the activations the model uses.
            mask = adapter.valid_token_mask(batch)
            recorder = stack.enter_context(record_activation_stats(modules, mask))
        yield recorder


def batches(rows: pd.DataFrame, batch_size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(rows), batch_size):
        yield rows.iloc[start : start + batch_size]


def answer_all(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    *,
    batch_size: int,
    max_new_tokens: int,
    desc: str,
) -> pd.DataFrame:
    """Unmasked greedy answers for every row (no recording): the evaluation baseline."""
    parts = []
    with tqdm(total=len(rows), desc=desc, unit="item", mininterval=2.0) as progress:
        for chunk in batches(rows, batch_size):
            answers = answer_batch(adapter, chunk, max_new_tokens=max_new_tokens)
            parts.append(answer_table(chunk, answers.texts, answers.choices, answers.correct))
            progress.update(len(chunk))
    return pd.concat(parts, ignore_index=True)


def answer_table(
    rows: pd.DataFrame, texts: Sequence[str], choices: np.ndarray, correct: np.ndarray
) -> pd.DataFrame:
    """One row per item: who it is and what the model answered."""
    return pd.DataFrame(
        {
            "item_id": rows["item_id"].to_numpy(),
            "culture": rows["culture"].to_numpy(),
            "subset": rows["subset"].to_numpy(),
            "label": rows["label"].to_numpy(),
            "output": list(texts),
            "choice": np.asarray(choices, dtype=np.int8),
            "correct": np.asarray(correct, dtype=np.int8),
        }
    )


def answer_masked(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    keep: torch.Tensor,
    *,
    batch_size: int,
    max_new_tokens: int,
    desc: str = "ablate",
) -> list[pd.DataFrame]:
    """Answer every row under each of the ``keep`` masks ([M, L, D]); one table per mask.

    Batch rows are (item, mask) pairs, item-major, each carrying its own mask index, so one
    batch serves several masks and an item's copies sit side by side.
    """
    n_masks = keep.shape[0]
    pairs = [(item, mask) for item in range(len(rows)) for mask in range(n_masks)]
    per_mask: list[list[pd.DataFrame]] = [[] for _ in range(n_masks)]
    with tqdm(total=len(pairs), desc=desc, unit="item", mininterval=2.0) as progress:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            items = [item for item, _ in chunk]
            masks = torch.tensor([mask for _, mask in chunk], dtype=torch.long)
            sub = rows.iloc[items]
            answers = answer_batch(
                adapter, sub, max_new_tokens=max_new_tokens, keep=keep, row_mask_index=masks
            )
            table = answer_table(sub, answers.texts, answers.choices, answers.correct)
            for mask in range(n_masks):
                picked = (masks == mask).numpy()
                if picked.any():
                    per_mask[mask].append(table[picked])
            progress.update(len(chunk))
    return [pd.concat(parts, ignore_index=True) for parts in per_mask]
