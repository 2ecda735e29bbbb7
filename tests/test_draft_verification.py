"""The unmasked answer as a draft: masked rows check it in their prefill instead of decoding it,
and keep exactly the tokens of step-by-step greedy decoding (float32), for every family, with the
repetition penalty, and with an end-of-sequence token inside the draft. The items' prompts differ
in length, so drafts sit after left-padded prompts of different widths."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from culture_neurons.inference import drafts
from culture_neurons.inference.decoding import (
    DecodeStats,
    GreedySettings,
    capture_prompts,
    greedy_decode,
)
from culture_neurons.inference.engine import answer_masked, prompt_items, reference_answers
from tests.varied_inputs import end_of_sequence, frequent_reply_token

pytest_plugins = ["tests.tiny_models"]
MAX_NEW = 10


@pytest.fixture(scope="module")
def evaluation(varied_evaluation) -> pd.DataFrame:
    return varied_evaluation


def banks(adapter, offs: list[float], seed: int = 0) -> torch.Tensor:
    """One keep mask per share of neurons switched off (0.0: a mask that changes nothing)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (adapter.n_layers, adapter.n_neurons)
    return torch.stack([(torch.rand(shape, generator=generator) >= off).float() for off in offs])


def test_drafts_keep_the_tokens_of_step_by_step_decoding(tiny_adapter, evaluation,
                                                         one_torch_thread):  # fmt: skip
    keep = banks(tiny_adapter, [0.0, 0.02, 0.6])
    stats = DecodeStats()
    drafted = answer_masked(tiny_adapter, evaluation, keep, batch_size=4,
                            max_new_tokens=MAX_NEW, stats=stats, drafts=True)  # fmt: skip
    decoded = answer_masked(tiny_adapter, evaluation, keep, batch_size=4,
                            max_new_tokens=MAX_NEW, drafts=False)  # fmt: skip
    for a, b in zip(drafted, decoded, strict=True):
        pd.testing.assert_frame_equal(a, b)
    for m in range(len(keep)):
        assert drafted[m]["output"].tolist() == reference_answers(
            tiny_adapter, evaluation, max_new_tokens=MAX_NEW, keep=keep[m : m + 1]
        )
    # Both branches ran: rows finished by their draft (at least the no-op mask's) and rows that
    # disagreed and decoded on.
    rows = len(evaluation) * len(keep)
    assert stats.drafted == rows
    assert len(evaluation) <= stats.accepted < rows


def test_drafts_under_the_repetition_penalty(load_tiny, evaluation, one_torch_thread):
    adapter = load_tiny("pangea")
    keep = banks(adapter, [0.0, 0.05, 0.5], seed=1)
    adapter.model.generation_config.repetition_penalty = 1.8
    try:
        drafted = answer_masked(adapter, evaluation, keep, batch_size=3, max_new_tokens=MAX_NEW,
                                drafts=True)  # fmt: skip
        expected = [
            reference_answers(adapter, evaluation, max_new_tokens=MAX_NEW, keep=keep[m : m + 1])
            for m in range(len(keep))
        ]
    finally:
        adapter.model.generation_config.repetition_penalty = 1.0
    plain = answer_masked(adapter, evaluation, keep, batch_size=3, max_new_tokens=MAX_NEW)
    assert [t["output"].tolist() for t in plain] != expected  # the penalty matters here
    assert [t["output"].tolist() for t in drafted] == expected


def test_an_end_of_sequence_token_inside_the_draft(load_tiny, evaluation, one_torch_thread):
    adapter = load_tiny("llava_next")
    # Make a token the model often writes mid-answer the end of sequence, so drafts end early
    # and masked rows either stop with them or disagree before.
    with end_of_sequence(adapter, frequent_reply_token(adapter, evaluation, MAX_NEW)):
        keep = banks(adapter, [0.0, 0.05, 0.5], seed=2)
        stats = DecodeStats()
        drafted = answer_masked(adapter, evaluation, keep, batch_size=4,
                                max_new_tokens=MAX_NEW, stats=stats, drafts=True)  # fmt: skip
        expected = [
            reference_answers(adapter, evaluation, max_new_tokens=MAX_NEW, keep=keep[m : m + 1])
            for m in range(len(keep))
        ]
    assert [t["output"].tolist() for t in drafted] == expected
    lengths = {len(o) for t in drafted for o in t["output"]}
    assert len(lengths) > 1  # answers end at different points


def prompts_of(adapter, evaluation, n=3):
    batch = adapter.build_batch(prompt_items(evaluation.head(n)))
    return capture_prompts(adapter, batch)


def test_a_wrong_or_short_draft_still_gives_the_greedy_tokens(load_tiny, evaluation,
                                                             one_torch_thread):  # fmt: skip
    adapter = load_tiny("qwen2_5_vl")
    prompts = prompts_of(adapter, evaluation)
    settings = GreedySettings(eos_token_ids=())  # no end of sequence: every row runs 8 tokens
    truth = greedy_decode(adapter, prompts, max_new_tokens=8, settings=settings)
    stats = DecodeStats()
    same = greedy_decode(adapter, prompts, max_new_tokens=8, settings=settings, drafts=truth,
                         stats=stats)  # fmt: skip
    assert same == truth and stats.accepted == 3 and stats.forwards == 1  # one decoder call
    vocab = adapter.model.get_output_embeddings().out_features
    wrong = [t[:3] + [(t[3] + 1) % vocab] + t[4:] for t in truth]  # wrong from position 3 on
    stats = DecodeStats()
    assert greedy_decode(adapter, prompts, max_new_tokens=8, settings=settings, drafts=wrong,
                         stats=stats) == truth  # fmt: skip
    assert stats.accepted == 0 and stats.forwards == 1 + (8 - 4)  # prefill, then 4 steps
    short = [t[:2] for t in truth]  # agrees, but stops before the token limit: decoding goes on
    assert greedy_decode(adapter, prompts, max_new_tokens=8, settings=settings,
                         drafts=short) == truth  # fmt: skip
    with pytest.raises(ValueError, match="at least one token"):
        greedy_decode(adapter, prompts, max_new_tokens=8, settings=settings,
                      drafts=[[], [1], [1]])  # fmt: skip


@pytest.mark.parametrize(
    ("drafted", "accepted", "on"),
    [
        (32, 16, True),  # exactly the minimum share: drafting goes on
        (32, 15, False),  # below it: off
        (31, 0, True),  # not judged before the probe's rows are in
        (40, 20, True),
    ],
)
def test_drafting_is_judged_at_the_probe_size_and_minimum_share(drafted, accepted, on):
    assert drafts.DRAFT_PROBE_ROWS == 32 and drafts.DRAFT_MIN_ACCEPTANCE == 0.5
    drafting = drafts.DraftJudge(on=True)
    drafting.judge(drafted, accepted)
    assert drafting.on is on


def test_drafting_judges_the_rows_of_every_batch_so_far():
    drafting = drafts.DraftJudge(on=True)
    drafting.judge(20, 20)  # below the probe size: not judged yet
    drafting.judge(12, 0)  # 20 of 32: above the minimum share
    assert drafting.on
    drafting.judge(10, 0)  # 20 of 42: below it
    assert not drafting.on
    drafting.judge(100, 100)  # once off, it stays off for the run
    assert not drafting.on


def test_drafting_stops_when_drafts_are_rarely_accepted(load_tiny, evaluation, one_torch_thread,
                                                        monkeypatch):  # fmt: skip
    adapter = load_tiny("qwen2_5_vl")
    monkeypatch.setattr(drafts, "DRAFT_PROBE_ROWS", 4)
    rows = len(evaluation) * 2
    # Every neuron off: the masked answers share nothing with the unmasked drafts.
    off = banks(adapter, [1.0, 1.0])
    stats = DecodeStats()
    drafted = answer_masked(adapter, evaluation, off, batch_size=2, max_new_tokens=MAX_NEW,
                            drafts=True, stats=stats)  # fmt: skip
    assert stats.accepted == 0 and 4 <= stats.drafted < rows  # judged after the probe, then off
    plain = answer_masked(adapter, evaluation, off, batch_size=2, max_new_tokens=MAX_NEW,
                          drafts=False)  # fmt: skip
    for a, b in zip(drafted, plain, strict=True):
        pd.testing.assert_frame_equal(a, b)
    # Masks that change nothing: every draft is accepted, so drafting goes on to the end.
    stats = DecodeStats()
    answer_masked(adapter, evaluation, banks(adapter, [0.0, 0.0]), batch_size=2,
                  max_new_tokens=MAX_NEW, drafts=True, stats=stats)  # fmt: skip
    assert stats.drafted == stats.accepted == rows
    # Off CUDA the default is not to draft at all.
    stats = DecodeStats()
    answer_masked(adapter, evaluation, off, batch_size=2, max_new_tokens=MAX_NEW, stats=stats)
    assert stats.drafted == 0


def test_draft_feed_reads_all_but_the_last_checked_token():
    feed = drafts.DraftFeed.of([[5, 6, 7], [8], [1, 2, 3, 4, 9]], rows=3, max_new_tokens=4)
    assert feed.checked == [3, 1, 4]  # a draft past the token limit is checked up to it
    assert feed.fed == [[5, 6], [], [1, 2, 3]]
    assert drafts.DraftFeed.of(None, rows=2, max_new_tokens=4).checked == [0, 0]
    with pytest.raises(ValueError, match="2 drafts for 3 prompts"):
        drafts.DraftFeed.of([[1], [2]], rows=3, max_new_tokens=4)


def test_verify_keeps_tokens_up_to_the_first_disagreement_and_counts_what_was_misread():
    # Rows of different draft lengths, left-padded: row r's prediction of its draft token k sits
    # at column width - checked[r] + k. The "model" predicts the value stored at that column.
    width = 5
    predicted = torch.tensor([[0, 0, 11, 12, 13],  # agrees everywhere
                              [0, 0, 0, 21, 99],  # disagrees at its second (last) token
                              [31, 98, 33, 34, 35]])  # fmt: skip
    states = predicted[:, :, None].float()
    draft_rows = [[11, 12, 13], [21, 22], [31, 32, 33, 34, 35]]
    feed = drafts.DraftFeed.of(draft_rows, rows=3, max_new_tokens=8)
    seen: list[list[int]] = []

    def choose(states_at, rows):
        seen.append(rows.tolist())
        return states_at[:, 0].long()

    verdict = drafts.verify(draft_rows, feed, states, choose)
    assert verdict.tokens == [[11, 12, 13], [21, 99], [31, 98]]
    # Row 2 rejected its draft at position 1: the 3 draft tokens fed after it were misread.
    assert verdict.rejected == [0, 0, 3]
    assert verdict.accepted == 1
    assert seen == [[0, 1, 2], [0, 1, 2], [0]]  # position by position, rejected rows drop out
    assert states.shape[1] == width
