"""Answer extraction for multiple-choice VQA (the paper's Algorithm 1, appendix A.4).

The model is asked to write out the *content* of its chosen option (not a letter label).
Scoring a free-form reply then works as follows:

1. Normalise reply and options alike: lowercase, collapse whitespace runs to one space, trim.
2. Find every whole-word occurrence of every option in the reply. The option whose occurrence
   starts last is the model's answer ("the last-mentioned choice is the final decision"), so
   a reply such as "Diwali is plausible, but Holi is wrong, so the answer is Pongal" picks
   Pongal.
3. If no option occurs as a whole word, ``is_correct`` falls back to a plain substring test
   of the ground-truth option in the reply.

Where this module differs from the paper's pseudo-code (each only matters on unusual inputs):

* Text is also NFC-normalised, so a precomposed "é" in the reply matches a decomposed one in
  an option.
* A "word character" is a Unicode letter, digit, underscore *or combining mark* (see
  ``_is_word_char``); Python's ``\\b`` would split Devanagari words at vowel signs.
* Two options matching at the same start position (``"New York"`` / ``"New York City"`` in
  "new york city") resolve to the longer one, where the paper would keep whichever option is
  listed first.
* Options that normalise to the empty string never match, not even in the fallback.
* Overlapping occurrences of one option are all considered (``re.finditer`` skips overlaps).
"""

from __future__ import annotations

import operator
import unicodedata
from collections.abc import Sequence

__all__ = ["NO_CHOICE", "extract_choice", "extract_choices", "is_correct", "normalize"]

# The choice of an answer that names no option (the paper's Algorithm 1 finds none).
NO_CHOICE = -1


def normalize(text: str) -> str:
    """Lowercase ``text``, collapse every whitespace run to one space and trim the ends.

    The text is NFC-normalised first: models and datasets mix precomposed and decomposed
    accents, and without this "café" in one form would not be found in the other.
    ``str.split()`` with no argument splits on all Unicode whitespace (including
    non-breaking spaces and newlines) and drops empty pieces, which is exactly "collapse
    and trim".
    """
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def _is_word_char(ch: str) -> bool:
    # Why not regex `\b`: `\b` needs a word character on exactly one side, so it never
    # matches at the edge of an option that itself begins or ends with punctuation ("C++"
    # followed by a space, "(old)" at the end of a line), and it would accept "C++" glued
    # to a letter, as in "c++x" ("+" then "x" is a boundary). What we want is "no word
    # character directly outside the option", i.e. the lookarounds (?<!\w)...(?!\w), which
    # hold whatever the option's own edge characters are. We test the two neighbours by
    # hand instead of using `re` for two reasons: the option stays a literal string, so
    # regex metacharacters ("$5", "C++", "(old)") need no escaping at all; and we can count
    # combining marks (Unicode category M*) as part of a word. Python's `\w` excludes them,
    # so with `\b`/`\w` the Hindi option "राम" would match inside "रामी" (the vowel sign "ी"
    # is not `\w`) and "हिंदी" would never match at all (it ends in a vowel sign, so there is
    # no `\b` after it).
    return ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")


def _last_whole_word_start(text: str, needle: str) -> int:
    """Start index of the last whole-word occurrence of ``needle`` in ``text``, or -1.

    Both arguments must already be normalised and ``needle`` must be non-empty.
    Overlapping occurrences are considered too (a regex scan such as ``re.finditer`` would
    skip an occurrence overlapping an earlier one); that can only move the answer to a genuinely
    later mention.
    """
    end = len(text)
    while True:
        pos = text.rfind(needle, 0, end)
        if pos < 0:
            return -1
        after = pos + len(needle)
        if (pos == 0 or not _is_word_char(text[pos - 1])) and (
            after == len(text) or not _is_word_char(text[after])
        ):
            return pos
        # Any earlier occurrence starts before `pos`, so it ends before `pos + len - 1`.
        end = after - 1


def extract_choice(text: str, options: Sequence[str]) -> int | None:
    """Index of the option the reply ``text`` settles on, or ``None`` if none is mentioned.

    Reply and options are normalised with :func:`normalize`; an option counts as mentioned
    only where it occurs as a whole word (no letter, digit, underscore or combining mark
    directly before or after it), so "cat" is not found in "category", while "C++" is
    found in "i'd say c++.". Among all mentions the one that *starts* last wins.

    Ties at the same start position (one option is a prefix of another, e.g. "New York" and
    "New York City" in "new york city") go to the longer option. This deviates from the
    paper, whose loop visits options in list order and only replaces the current answer on a
    strictly greater position, so it would return whichever option is listed first; but
    the longer option is the one actually written out, the shorter one is only part of it,
    and option order should not decide what the model said.

    Not handled (as in the paper): an option that is a *suffix* of another, e.g. "Korea" and
    "South Korea" in "south korea": "korea" starts later, so "Korea" is returned. The same
    goes for punctuation-edged options: with "$5" and "5", "it costs $5" returns "5".

    Options that are identical after normalisation resolve to the first such index. Empty
    (or all-whitespace) options never match. Scripts written without spaces between words
    (Chinese, Japanese, Thai) only match when the option is delimited by punctuation, spaces
    or the ends of the reply; otherwise this returns ``None`` and :func:`is_correct` relies on
    its substring fallback, as the paper does.
    """
    norm_text = normalize(text)
    best: int | None = None
    best_key = (-1, -1)
    for index, option in enumerate(options):
        norm_option = normalize(option)
        if not norm_option:
            continue
        pos = _last_whole_word_start(norm_text, norm_option)
        if pos < 0:
            continue
        # Strict `>` on (start, length): later start wins, then the longer option; an exact
        # tie (duplicate option) keeps the earlier index.
        key = (pos, len(norm_option))
        if key > best_key:
            best, best_key = index, key
    return best


def extract_choices(
    texts: Sequence[str], options_list: Sequence[Sequence[str]]
) -> list[int | None]:
    """:func:`extract_choice` for each ``(text, options)`` pair; the lengths must match."""
    if len(texts) != len(options_list):
        raise ValueError(f"got {len(texts)} texts but {len(options_list)} option lists")
    return [
        extract_choice(text, options) for text, options in zip(texts, options_list, strict=True)
    ]


def is_correct(text: str, options: Sequence[str], label: int) -> bool:
    """Whether the reply ``text`` gives the ground-truth option ``options[label]``.

    If some option is mentioned as a whole word, the reply is correct iff the last-mentioned
    one (see :func:`extract_choice`) is the ground truth. Like the paper, this compares the
    option *texts* (after normalisation), so with duplicate options either copy counts; for
    distinct options it is the same as ``extract_choice(text, options) == label``. If no
    option is mentioned, the reply is correct iff the normalised ground-truth option occurs
    anywhere in the normalised reply, even inside a longer word (the paper's fallback).
    An empty ground-truth option is never correct.

    Raises:
        ValueError: ``label`` is not a valid index into ``options``; in particular CVQA's
            ``-1`` for hidden test answers, which must not be scored (a negative index would
            otherwise silently pick the last option as gold).
        TypeError: ``label`` is not an integer.
    """
    label = operator.index(label)
    if not 0 <= label < len(options):
        hint = " (CVQA uses -1 for hidden answers; drop those rows)" if label == -1 else ""
        raise ValueError(
            f"label {label} is not a valid option index for {len(options)} options{hint}"
        )
    gold = normalize(options[label])
    if not gold:
        return False
    choice = extract_choice(text, options)
    if choice is not None:
        return normalize(options[choice]) == gold
    return gold in normalize(text)
