"""Draft verification, all of it: which tokens a row's prefill reads after its prompt, how its
greedy choices there are checked against the draft, and when drafting stops paying.

A masked row's draft is its item's unmasked answer. The prefill reads the prompt and the draft
(all but its last token) in one decoder call; the greedy choice at every draft position is
compared with the draft's token. A row that agrees everywhere is finished by that call; any other
keeps its tokens up to and including its first disagreement (its own greedy choice there) and
decodes on from it, the rejected draft positions masked out of its attention. The tokens are
those of step-by-step greedy decoding either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

DRAFT_PROBE_ROWS = 32  # rows drafted before drafting is judged
DRAFT_MIN_ACCEPTANCE = 0.5  # below this share of rows finished by their draft, drafting stops

Choose = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DraftFeed:
    """What each row's prefill reads after its prompt: ``fed`` (its draft but the last token,
    whose successor is never needed: a draft ends at end of sequence or at the token limit) and
    ``checked``, how many draft tokens its prefill checks (0: no draft)."""

    checked: list[int]
    fed: list[list[int]]

    @classmethod
    def of(
        cls, drafts: Sequence[Sequence[int]] | None, rows: int, max_new_tokens: int
    ) -> DraftFeed:
        if drafts is None:
            return cls([0] * rows, [[] for _ in range(rows)])
        if len(drafts) != rows:
            raise ValueError(f"{len(drafts)} drafts for {rows} prompts")
        checked = [min(len(d), max_new_tokens) for d in drafts]
        if min(checked, default=1) == 0:
            raise ValueError("every draft needs at least one token")
        return cls(checked, [list(d[: n - 1]) for d, n in zip(drafts, checked, strict=True)])


@dataclass
class Verdict:
    """A prefill's check of its drafts: each row's new tokens, how many of its fed draft
    positions were read under a wrong prefix (to mask out), and how many rows agreed everywhere."""

    tokens: list[list[int]]
    rejected: list[int]
    accepted: int


def verify(
    drafts: Sequence[Sequence[int]], feed: DraftFeed, states: torch.Tensor, choose: Choose
) -> Verdict:
    """Greedy choices at every draft position of the prefill's output ``states`` ([rows, width,
    H], rows left-padded so each row's draft ends the sequence), position by position: ``choose``
    (which applies the repetition penalty and then records its choice) sees the tokens before
    each one, as step-by-step decoding would."""
    device = states.device
    rows, width = len(drafts), states.shape[1]
    checked = feed.checked
    tokens: list[list[int]] = [[] for _ in range(rows)]
    rejected = [0] * rows
    matching = [True] * rows
    for k in range(max(checked, default=0)):
        which = [r for r in range(rows) if matching[r] and k < checked[r]]
        if not which:
            break
        index = torch.tensor(which, dtype=torch.long, device=device)
        # Row r's prediction of draft token k sits at column width - checked[r] + k.
        columns = torch.tensor([width - checked[r] + k for r in which], device=device)
        for r, token in zip(which, choose(states[index, columns], index).tolist(), strict=True):
            tokens[r].append(token)
            if token != drafts[r][k]:
                matching[r] = False
                # Its draft positions after this one were read under a wrong prefix.
                rejected[r] = checked[r] - 1 - k
    return Verdict(tokens, rejected, accepted=sum(matching))


@dataclass
class DraftJudge:
    """Whether masked rows get drafts: on until the rows drafted so far (at least
    `DRAFT_PROBE_ROWS`) show that fewer than `DRAFT_MIN_ACCEPTANCE` of them are finished by it."""

    on: bool = False
    drafted: int = 0
    accepted: int = 0

    def judge(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted
        judged = self.drafted >= DRAFT_PROBE_ROWS
        if self.on and judged and self.accepted < DRAFT_MIN_ACCEPTANCE * self.drafted:
            self.on = False
            log.info(
                "drafts finished %d of %d masked rows (below %.0f%%): decoding the rest of "
                "the run step by step",
                self.accepted, self.drafted, 100 * DRAFT_MIN_ACCEPTANCE,
            )  # fmt: skip
