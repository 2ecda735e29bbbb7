"""Inputs that vary the way real data does, so that the tiny models' batches are padded.

CVQA's prompts differ in token count (questions, options, photo sizes) and replies end at
different lengths; a fixture whose prompts are all alike never pads a batch, and a test of the
fast path, the drafts, the KV cache or the recording on it cannot see a padding bug. Import the
helpers from here (test modules load `tests.tiny_models` as a plugin, which offers the rows as the
`varied_evaluation` fixture).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd

from culture_neurons.inference.engine import model_items
from culture_neurons.models.base import ModelAdapter
from culture_neurons.models.tiny import random_image

# (question, options, label, (height, width)): short and long questions, short and long options,
# and photos of different sizes and aspect ratios (Qwen2.5-VL's and LLaVA-NeXT's visual token
# counts follow the image size), so that no two prompts have the same token count in any tiny
# family. The order is not the order of length, not even within pairs of items (the engine sorts
# each window by length, and a test of that sorting needs windows it reorders), and the first
# item is the shortest, so row 0 of a batch is padded (a bug that read every row's positions
# from row 0 would go unseen were it not).
VARIED_ITEMS: list[tuple[str, list[str], int, tuple[int, int]]] = [
    ("What is this?", ["rice", "tea", "salt", "corn"], 1, (56, 56)),
    (
        "Which festival, held every spring with music, masks and a long parade through the old "
        "town, is celebrated in the picture?",
        ["the carnival of the old town", "Hanami", "the festival of lights", "Eid al-Fitr"],
        0,
        (112, 84),
    ),
    ("Where is it?", ["Lima", "Oslo", "Dhaka", "Accra"], 3, (84, 28)),
    (
        "What dish is served here?",
        ["noodles in a spicy peanut sauce with fried shallots", "bread", "soup", "dumplings"],
        2,
        (56, 112),
    ),
    (
        "In which country was this photo of a market taken?",
        ["Japan", "India", "Peru", "France"],
        0,
        (28, 84),
    ),
    ("Who wears this dress?", ["a bride", "a dancer", "a monk", "a farmer"], 1, (112, 112)),
]
CULTURES = ["JPN", "IND", "JPN", "FRA", "IND", "FRA"]


def varied_rows(n: int = len(VARIED_ITEMS)) -> pd.DataFrame:
    """items.parquet-shaped rows of the first ``n`` `VARIED_ITEMS`, images held in memory as
    the `image` column that `prompt_items` reads instead of an image source."""
    if not 0 < n <= len(VARIED_ITEMS):
        raise ValueError(f"n must be between 1 and {len(VARIED_ITEMS)}, got {n}")
    chosen = VARIED_ITEMS[:n]
    return pd.DataFrame(
        {
            "item_id": [f"varied_{i}" for i in range(n)],
            "culture": CULTURES[:n],
            "subset": [f"('language {c}', 'country {c}')" for c in CULTURES[:n]],
            "label": [label for _, _, label, _ in chosen],
            "question": [question for question, _, _, _ in chosen],
            "options": [list(options) for _, options, _, _ in chosen],
            "image": [random_image(h, w, seed=i) for i, (*_, (h, w)) in enumerate(chosen)],
        }
    )


def frequent_reply_token(adapter: ModelAdapter, rows: pd.DataFrame, max_new_tokens: int) -> int:
    """The token the unmasked replies to ``rows`` use most often after their first (end of
    sequence and padding aside): made the end of sequence (`end_of_sequence`), it ends replies
    at different lengths, inside batches and inside drafts. Counted on the generated ids, as
    re-encoding a random model's decoded reply gives other tokens."""
    batch = adapter.build_batch(model_items(adapter, rows))
    replies = adapter.generate(batch, max_new_tokens=max_new_tokens).tolist()
    config = adapter.model.generation_config
    eos = config.eos_token_id
    skip = {config.pad_token_id, *(eos if isinstance(eos, list) else [eos])}
    counts = Counter(token for reply in replies for token in reply[1:] if token not in skip)
    if not counts:
        raise ValueError("the replies have no token after their first")
    return counts.most_common(1)[0][0]


@contextmanager
def end_of_sequence(adapter: ModelAdapter, token_id: int) -> Iterator[None]:
    """``token_id`` as the model's end-of-sequence token (for `generate()` and the fast path,
    which both read the generation config), restored afterwards."""
    config = adapter.model.generation_config
    before = config.eos_token_id
    config.eos_token_id = token_id
    try:
        yield
    finally:
        config.eos_token_id = before
