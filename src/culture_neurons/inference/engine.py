"""Batched greedy answering: the unmasked baseline (with activation recording) and masked runs.

Each batch is one prompt per row, left-padded, decoded by the fast path of
`culture_neurons.inference.decoding`; the row's answer is scored with the paper's Algorithm 1.
Recording reduces the prefill's act_fn outputs on the device (see `culture_neurons.models.hooks`);
masking multiplies them by the row's own keep mask, so many masks share one batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from culture_neurons.data.images import PixelBound, load_image
from culture_neurons.inference import batch_memory
from culture_neurons.inference.answers import NO_CHOICE, extract_choice, is_correct
from culture_neurons.inference.batch_memory import BatchSizer
from culture_neurons.inference.decoding import (
    DecodeStats,
    GreedySettings,
    Prompt,
    capture_prompts,
    greedy_decode,
)
from culture_neurons.inference.drafts import DraftJudge
from culture_neurons.inference.inputs import InputStats, stream
from culture_neurons.inference.scheduler import run_batches
from culture_neurons.models import apply_keep_masks, record_activation_stats
from culture_neurons.models.base import ModelAdapter
from culture_neurons.models.hooks import KeepMasks
from culture_neurons.models.sites import intervene_site
from culture_neurons.selection.conventions import DECODER_MLP, VISION_MLP

log = logging.getLogger(__name__)

UNMASKED = -1  # the mask index of a row without intervention (the drafts' pass)
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
    act_sum: np.ndarray | None = None  # [L, D] float64, summed over the batch's valid tokens


def prompt_items(
    rows: pd.DataFrame, *, with_images: bool = True, bound: PixelBound | None = None
) -> list[dict[str, Any]]:
    """Model inputs of items.parquet rows: question, options and the decoded image (or the
    in-memory ``image`` column that the benchmark's rows carry). The image is None for a text
    item (no image source) and when ``with_images`` is False (a model run blind). ``bound``
    (the adapter's `image_bound`) decodes images no larger than the model's processor keeps."""
    in_memory = "image" in rows.columns

    def image_of(row) -> Any:
        if not with_images:
            return None
        if in_memory:
            return row.image
        return load_image(row.image_source, row.image_row, bound) if row.image_source else None

    listed = list(rows.itertuples(index=False))
    order: Sequence[int] = range(len(listed))
    if with_images and not in_memory:
        # Decoded in file order: photos that share a shard's row group read it once, however
        # the split orders them (CVQA's row groups hold ~100 MB of photos).
        order = sorted(order, key=lambda i: (listed[i].image_source, listed[i].image_row))
    images: list[Any] = [None] * len(listed)
    for i in order:
        images[i] = image_of(listed[i])
    return [
        {"question": row.question, "options": list(row.options), "image": image}
        for row, image in zip(listed, images, strict=True)
    ]


def model_items(adapter: ModelAdapter, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """`prompt_items` as ``adapter``'s model takes them: blind or not, images within its bound."""
    return prompt_items(rows, with_images=adapter.takes_images, bound=adapter.image_bound)


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
    offset: torch.Tensor | None = None,
    items: Sequence[dict[str, Any]] | None = None,
) -> BatchAnswers:
    """Greedy answers for ``rows`` in one batch (fast path); records statistics and/or applies
    interventions (``keep`` factors and ``offset`` banks, see `apply_keep_masks`). ``items``:
    the rows' `model_items`, when loaded ahead (see `culture_neurons.inference.inputs`).

    The rows keep the processor's padding, so the recording's valid-token mask fits the prefill.
    """
    if items is None:
        items = model_items(adapter, rows)
    if len(items) != len(rows):
        raise ValueError(f"{len(items)} prompt items for {len(rows)} rows")
    batch = adapter.build_batch(items)
    prompts = capture_prompts(adapter, batch)
    settings = GreedySettings.from_model(adapter.model)
    with _interventions(adapter, batch, record, keep, row_mask_index, offset) as (
        recorder,
        masks,
    ):
        tokens = greedy_decode(
            adapter,
            prompts,
            max_new_tokens=max_new_tokens,
            settings=settings,
            select_rows=None if masks is None else masks.select_rows,
        )
    texts = decode_texts(adapter, tokens)
    choices, correct = score(texts, rows)
    answers = BatchAnswers(texts, choices, correct)
    if recorder is not None:
        answers.fire_count = recorder.fire_count.numpy()
        answers.pos_sum = recorder.pos_sum.numpy()
        answers.act_sum = recorder.act_sum.numpy()
        answers.tokens = recorder.tokens.numpy()
    return answers


def record_batch(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    sizer: BatchSizer,
    *,
    max_new_tokens: int,
    items: Sequence[dict[str, Any]] | None = None,
) -> list[BatchAnswers]:
    """`answer_batch` with recording, for ``rows`` of one record batch, under the run's
    out-of-memory strategy (`culture_neurons.inference.scheduler`): one part per batch it ran,
    in row order (one part unless an out-of-memory error split the rows)."""
    if items is None:
        items = model_items(adapter, rows)
    if len(items) != len(rows):
        raise ValueError(f"{len(items)} prompt items for {len(rows)} rows")

    def answer(positions: Sequence[int]) -> BatchAnswers:
        part = rows.iloc[positions[0] : positions[-1] + 1]
        return answer_batch(adapter, part, max_new_tokens=max_new_tokens, record=True,
                            items=[items[i] for i in positions])  # fmt: skip

    return [part for _, part in run_batches(range(len(rows)), answer, sizer)]


def reference_answers(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    *,
    max_new_tokens: int,
    keep: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    site: str = DECODER_MLP,
) -> list[str]:
    """The plain loop the fast path must match: `generate()` one item at a time, one bank (on
    the units of ``site``)."""
    texts = []
    for position in range(len(rows)):  # one image decoded at a time
        batch = adapter.build_batch(model_items(adapter, rows.iloc[position : position + 1]))
        with ExitStack() as stack:
            if keep is not None:
                stack.enter_context(intervene_site(adapter, site, keep, offset=offset))
            new_tokens = adapter.generate(batch, max_new_tokens=max_new_tokens)
        texts.append(adapter.decode(new_tokens)[0].strip())
    return texts


def decode_texts(adapter: ModelAdapter, tokens: Sequence[Sequence[int]]) -> list[str]:
    return [t.strip() for t in adapter.tokenizer.batch_decode(tokens, skip_special_tokens=True)]


@contextmanager
def _interventions(
    adapter: ModelAdapter,
    batch: Any,
    record: bool,
    keep: torch.Tensor | None,
    row_mask_index: torch.Tensor | None,
    offset: torch.Tensor | None = None,
) -> Iterator[tuple[Any, KeepMasks | None]]:
    """Masking and/or recording hooks for one batch; yields (recorder or None, masks or None)."""
    modules = adapter.act_fn_modules()
    with ExitStack() as stack:
        masks = None
        if keep is not None:
            masks = stack.enter_context(apply_keep_masks(modules, keep, row_mask_index, offset))
        recorder = None
        if record:
            # Registered after the masks, so recording sees the activations the model uses.
            mask = adapter.valid_token_mask(batch)
            recorder = stack.enter_context(record_activation_stats(modules, mask))
        yield recorder, masks


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
    max_batch_size: int | None = None,
) -> pd.DataFrame:
    """Unmasked greedy answers for every row (no recording): the evaluation baseline.

    The same fast path as the masked runs, so that a flip is never a difference of code paths.
    """
    return answer_masked(
        adapter,
        rows,
        None,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        desc=desc,
        max_batch_size=max_batch_size,
    )[0]


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


def items_per_window(
    n_masks: int, batch_size: int, max_batch_size: int | None = None, window_rows: int | None = None
) -> int:
    """Items `answer_masked` prepares and sorts by length together: ``window_rows`` (default
    8 batches of the largest size) (item, mask) pairs, at most 2 batches of items. A caller
    that splits the rows into runs of whole windows gets exactly the batches of one run."""
    largest = max(batch_size, max_batch_size or 0)
    window_rows = window_rows or 8 * largest
    return max(1, min(window_rows // n_masks, 2 * largest))


def answer_masked(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    keep: torch.Tensor | None,
    *,
    batch_size: int,
    max_new_tokens: int,
    offset: torch.Tensor | None = None,
    desc: str = "ablate",
    window_rows: int | None = None,
    max_batch_size: int | None = None,
    drafts: bool | None = None,
    stats: DecodeStats | None = None,
    site: str = DECODER_MLP,
) -> list[pd.DataFrame]:
    """Answer every row under each of the ``keep`` masks ([M, L, D]; None: unmasked); one table
    per mask, rows in the order given. ``offset`` (``[M, L, D]``) adds a constant per bank after
    the factors (mean-patching); factors other than 0/1 scale (see `apply_keep_masks`).

    Batch rows are (item, mask) pairs, each carrying its own mask index, so one batch serves many
    masks. An item's processor and vision encoder run once (`capture_prompts`) for all its masks.
    Within a window of ``window_rows`` pairs the items are sorted by prompt length, so a batch
    pads little; a row stops at its end-of-sequence token. An out-of-memory error halves the
    batch instead of ending the run. With ``max_batch_size`` (on CUDA), batches grow beyond
    ``batch_size`` as far as free memory holds, measured on the batches before
    (`culture_neurons.inference.batch_memory`).

    With ``drafts`` (masked runs), each item's unmasked greedy answer, decoded once per window,
    is the draft of its masked rows: a row that agrees with it at every position is finished by
    its prefill (`greedy_decode`); the answers are those of step-by-step decoding either way.
    Drafting is judged on its first `drafts.DRAFT_PROBE_ROWS` drafted rows and stops for the rest of
    the run when fewer than `drafts.DRAFT_MIN_ACCEPTANCE` of them were finished by their draft (a
    random-init model's masked answers hardly ever agree). The default (None) drafts on CUDA
    only: there a decode step costs about as much for one row as for many, so every step a
    draft saves pays; on a CPU a prefill token costs about what a step's token does, and drafts
    did not pay even at 97% acceptance (benchmarks/cpu). ``stats`` collects the decoder calls
    and how many rows the drafts finished.

    ``site`` says whose units the banks are (`culture_neurons.models.sites`): the decoder MLP's
    and the attention heads' act in the decoder calls; a vision site's act in the vision tower,
    so each item's prompt is captured once per mask instead of once.
    """
    n_masks = 1 if keep is None else keep.shape[0]
    settings = GreedySettings.from_model(adapter.model)
    if drafts is None:
        drafts = any(p.device.type == "cuda" for p in adapter.model.parameters())
    per_window = items_per_window(n_masks, batch_size, max_batch_size, window_rows)
    texts: list[list[str]] = [[""] * len(rows) for _ in range(n_masks)]
    sizer = BatchSizer(
        batch_size,
        ceiling=max_batch_size,
        memory=batch_memory.model_memory(adapter.model) if max_batch_size else None,
    )
    stats = stats if stats is not None else DecodeStats()
    runner = _BatchRunner(adapter, keep, settings, max_new_tokens, sizer, offset, stats, site)
    runner.drafting.on = bool(drafts) and keep is not None
    windows = [
        range(first, min(first + per_window, len(rows)))
        for first in range(0, len(rows), per_window)
    ]
    inputs = InputStats()
    # The next window's images are decoded in the background while this one is answered; only
    # two windows of (downscaled) images are ever held, however many rows there are.
    loaded = stream(
        windows,
        lambda window: model_items(adapter, rows.iloc[window.start : window.stop]),
        stats=inputs,
        size=len,
    )
    began = time.perf_counter()
    with (
        closing(loaded),
        tqdm(total=len(rows) * n_masks, desc=desc, unit="item", mininterval=2.0) as progress,
    ):
        for window, window_items in loaded:
            unmasked = _window_prompts(adapter, window, window_items, batch_size)
            prompts = _pair_prompts(adapter, site, keep, offset, window, window_items, unmasked,
                                    batch_size)  # fmt: skip
            by_length = sorted(window, key=lambda i: unmasked[i].length)
            if runner.drafting.on:
                runner.draft(by_length, prompts)
            pairs = [(item, mask) for item in by_length for mask in range(n_masks)]
            decoded = runner.run(pairs, prompts, progress)
            for (item, mask), text in zip(pairs, decode_texts(adapter, decoded), strict=True):
                texts[mask][item] = text
    inputs.model_s = time.perf_counter() - began - inputs.wait_s
    log.info("%s: %s", desc, inputs.summary())
    tables = []
    for mask_texts in texts:
        choices, correct = score(mask_texts, rows)
        tables.append(answer_table(rows, mask_texts, choices, correct))
    return tables


def _window_prompts(
    adapter: ModelAdapter, window: range, items: Sequence[dict[str, Any]], batch_size: int
) -> dict[int, Prompt]:
    """The decoder inputs of a window's items (row number -> prompt), captured in batches."""
    prompts: dict[int, Prompt] = {}
    for start in range(window.start, window.stop, batch_size):
        ids = list(range(start, min(start + batch_size, window.stop)))
        batch = adapter.build_batch([items[i - window.start] for i in ids])
        prompts.update(zip(ids, capture_prompts(adapter, batch), strict=True))
    return prompts


PairPrompts = dict[tuple[int, int], Prompt]


def _pair_prompts(
    adapter: ModelAdapter,
    site: str,
    keep: torch.Tensor | None,
    offset: torch.Tensor | None,
    window: range,
    items: Sequence[dict[str, Any]],
    unmasked: dict[int, Prompt],
    batch_size: int,
) -> PairPrompts:
    """The prompt of every (row, mask) pair of a window, (row, `UNMASKED`) included: the
    unmasked one for banks acting in the decoder, one captured under each bank for a site in
    the vision tower (the bank changes the image features the decoder receives)."""
    n_masks = 1 if keep is None else keep.shape[0]  # unmasked rows are mask 0 too
    prompts: PairPrompts = {(row, UNMASKED): prompt for row, prompt in unmasked.items()}
    if keep is None or site != VISION_MLP:
        prompts.update({(row, m): p for row, p in unmasked.items() for m in range(n_masks)})
        return prompts
    for m in range(n_masks):
        bank_offset = None if offset is None else offset[m : m + 1]
        with intervene_site(adapter, site, keep[m : m + 1], offset=bank_offset):
            captured = _window_prompts(adapter, window, items, batch_size)
        prompts.update({(row, m): p for row, p in captured.items()})
    return prompts


class _BatchRunner:
    """Runs (item, mask) pairs in batches under the run's out-of-memory strategy
    (`culture_neurons.inference.scheduler`), with or without each item's draft."""

    def __init__(
        self,
        adapter: ModelAdapter,
        keep: torch.Tensor | None,
        settings: GreedySettings,
        max_new_tokens: int,
        sizer: BatchSizer,
        offset: torch.Tensor | None = None,
        stats: DecodeStats | None = None,
        site: str = DECODER_MLP,
    ) -> None:
        self.adapter = adapter
        self.site = site
        self.keep = keep
        self.offset = offset
        self.stats = stats if stats is not None else DecodeStats()
        self.drafts: dict[int, list[int]] | None = None
        self.drafting = DraftJudge()
        self.settings = settings
        self.max_new_tokens = max_new_tokens
        self.sizer = sizer

    def draft(self, items: Sequence[int], prompts: PairPrompts) -> None:
        """Each item's unmasked answer becomes the draft of its masked rows; decoded through
        `run`, so the drafts' batches share its sizing and out-of-memory halving."""
        self.drafts = None
        with tqdm(disable=True) as silent:
            decoded = self.run([(item, UNMASKED) for item in items], prompts, silent)
        self.drafts = dict(zip(items, decoded, strict=True))

    def run(
        self, pairs: Sequence[tuple[int, int]], prompts: PairPrompts, progress: tqdm
    ) -> list[list[int]]:
        """The generated tokens of every (item, mask) pair; mask `UNMASKED`: no intervention."""

        def width(chunk: Sequence[tuple[int, int]]) -> int:
            """Padded width of a batch of ``chunk``, new tokens included."""
            return max(prompts[pair].length for pair in chunk) + self.max_new_tokens

        def answer(chunk: Sequence[tuple[int, int]]) -> list[list[int]]:
            drafting = self.drafts is not None and self.drafting.on
            before = (self.stats.drafted, self.stats.accepted)
            tokens = self._answer(chunk, prompts, drafting)
            if drafting:
                self.drafting.judge(self.stats.drafted - before[0], self.stats.accepted - before[1])
            return tokens

        tokens: list[list[int]] = []
        for chunk, chunk_tokens in run_batches(pairs, answer, self.sizer, width=width):
            tokens += chunk_tokens
            progress.update(len(chunk))
        return tokens

    def _answer(
        self,
        chunk: Sequence[tuple[int, int]],
        prompts: PairPrompts,
        drafting: bool,
    ) -> list[list[int]]:
        row_prompts = [prompts[pair] for pair in chunk]
        # A vision site's banks are in the prompts already (`_pair_prompts`).
        masked = self.keep is not None and chunk[0][1] != UNMASKED and self.site != VISION_MLP
        with ExitStack() as stack:
            masks = None
            if masked:
                index = torch.tensor([mask for _, mask in chunk], dtype=torch.long)
                masks = stack.enter_context(
                    intervene_site(self.adapter, self.site, self.keep, index, self.offset)
                )
            tokens = greedy_decode(
                self.adapter,
                row_prompts,
                max_new_tokens=self.max_new_tokens,
                settings=self.settings,
                select_rows=None if masks is None else masks.select_rows,
                drafts=[self.drafts[i] for i, _ in chunk] if drafting else None,
                stats=self.stats,
            )
        return tokens
