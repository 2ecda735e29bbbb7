"""Tests for answer extraction (the paper's Algorithm 1, appendix A.4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from culture_neurons.inference.answers import extract_choice, extract_choices, is_correct, normalize

FESTIVALS = ["Diwali", "Holi", "Pongal", "Onam"]


# --- normalize -----------------------------------------------------------------------------


def test_normalize_lowercases_collapses_and_trims() -> None:
    assert normalize("  The\tAnswer \n\n IS\u00a0Holi.  ") == "the answer is holi."


def test_normalize_unifies_composed_and_decomposed_accents() -> None:
    assert normalize("Cafe\u0301") == normalize("Caf\u00e9") == "caf\u00e9"


# --- the cases from appendix A.4 -------------------------------------------------------------


def test_paper_example_last_mentioned_option_wins() -> None:
    # "Option A is plausible, but B is incorrect, so the answer is C", with real option texts.
    reply = "Diwali is plausible, but Holi is incorrect, so the answer is Pongal."
    assert extract_choice(reply, FESTIVALS) == 2
    assert is_correct(reply, FESTIVALS, 2)
    assert not is_correct(reply, FESTIVALS, 0)
    assert not is_correct(reply, FESTIVALS, 1)


def test_exact_answer() -> None:
    assert extract_choice("Onam", FESTIVALS) == 3
    assert is_correct("Onam", FESTIVALS, 3)


@pytest.mark.parametrize(
    "reply",
    ["Holi.", "Holi!\n", "Holi\n\n", "  holi  ", "HOLI", "**Holi**", "(Holi)", '"Holi"', "Holi,"],
)
def test_punctuation_case_and_whitespace_around_the_answer(reply: str) -> None:
    assert extract_choice(reply, FESTIVALS) == 1
    assert is_correct(reply, FESTIVALS, 1)


def test_extra_whitespace_inside_reply_and_option() -> None:
    options = ["Hagia  Sophia", "Blue Mosque", "Topkapi\tPalace"]
    assert extract_choice("The answer:\n  hagia\n\nsophia", options) == 0
    assert extract_choice("It is the topkapi    palace", options) == 2


def test_reasoning_mentioning_several_options() -> None:
    reply = (
        "Pongal is a harvest festival from Tamil Nadu and Onam is from Kerala. The colours "
        "suggest Holi rather than Diwali, and the powder is typical of Holi."
    )
    assert extract_choice(reply, FESTIVALS) == 1


def test_last_mention_is_by_position_not_by_option_order() -> None:
    assert extract_choice("onam, not diwali", FESTIVALS) == 0
    assert extract_choice("diwali, not onam", FESTIVALS) == 3


def test_partial_word_is_not_a_match() -> None:
    options = ["cat", "dog"]
    assert extract_choice("This category is unclear.", options) is None
    assert extract_choice("The category shows a cat.", options) == 0
    assert extract_choice("A cat. No wait, the dogs' category", options) == 0


def test_no_option_mentioned() -> None:
    assert extract_choice("I cannot tell from the image.", FESTIVALS) is None
    assert not is_correct("I cannot tell from the image.", FESTIVALS, 0)


# --- the substring fallback ------------------------------------------------------------------


def test_fallback_substring_finds_gold_glued_into_a_longer_token() -> None:
    # Every "tea" here is glued to letters, so there is no whole-word match. (Note that
    # "teacup-tea?" would not do: "-" and "?" are boundaries, so "tea" matches as a word.)
    options = ["tea", "coffee"]
    reply = "Teacups and\nteapots"
    assert extract_choice(reply, options) is None
    assert is_correct(reply, options, 0)
    assert not is_correct(reply, options, 1)


def test_fallback_both_fail() -> None:
    options = ["tea", "coffee"]
    reply = "a glass of water"
    assert extract_choice(reply, options) is None
    assert not is_correct(reply, options, 0)
    assert not is_correct(reply, options, 1)


def test_fallback_not_used_when_a_whole_word_match_exists() -> None:
    # "coffee" is mentioned as a word, so the substring "tea" in "teapot" must not rescue it.
    options = ["tea", "coffee"]
    assert not is_correct("from the teapot comes coffee", options, 0)
    assert is_correct("from the teapot comes coffee", options, 1)


def test_fallback_uses_normalised_text() -> None:
    options = ["Ice  Cream", "Cake"]
    assert extract_choice("ICE\nCREAMS", options) is None
    assert is_correct("ICE\nCREAMS", options, 0)


# --- metacharacters and non-word option edges -------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reply", "expected"),
    [
        (["C", "C++", "C#"], "I would pick C++.", 1),
        (["C", "C++", "C#"], "c# or c++? definitely c#", 2),
        (["C", "C++", "C#"], "c++? no, plain c", 0),
        (["St. John's (old)", "St. John's (new)"], "It is st. john's (old)", 0),
        (["$5", "$50", "€5"], "It costs $50.", 1),
        (["$5", "$50", "€5"], "It costs $5.", 0),
        (["$5", "$50", "€5"], "It costs €5.", 2),
        (["a.b", "a*b"], "axb", None),  # `.` must not act as a regex wildcard
        (["[x]", "(x)"], "answer: [x]", 0),
        (["[x]", "(x)"], "x", None),
        (["1/2", "1\\2"], "half, i.e. 1\\2", 1),
        (["(a|b)", "ab"], "(a|b)", 0),
        (["(a|b)", "ab"], "ab", 1),
        (["^a$", "a"], "^a$ or a", 1),
    ],
)
def test_regex_metacharacters_are_literal(
    options: list[str], reply: str, expected: int | None
) -> None:
    assert extract_choice(reply, options) == expected


def test_option_edges_with_punctuation_respect_neighbouring_letters() -> None:
    # Plain `\b` would fail to match "C++" before a space; lookaround-style boundaries must
    # also refuse "C++" glued to a following letter.
    assert extract_choice("c++x", ["C++"]) is None
    assert extract_choice("xc++", ["C++"]) is None
    assert extract_choice("c++ x", ["C++"]) == 0


def test_underscore_and_digits_are_word_characters() -> None:
    assert extract_choice("cat_2 and 5cat", ["cat"]) is None


# --- ties, duplicates, empty options ---------------------------------------------------------


def test_longer_option_wins_at_the_same_start() -> None:
    # Deviation from the paper, which keeps the first-listed option on a tie.
    for options in (["New York", "New York City"], ["New York City", "New York"]):
        answer = extract_choice("I think it is New York City.", options)
        assert options[answer] == "New York City"
    assert extract_choice("New York, not the city", ["New York", "New York City"]) == 0


def test_option_that_is_a_suffix_of_another_follows_the_paper() -> None:
    # Known limitation kept from the paper: positions are start indices, so "korea" inside
    # "south korea" counts as a later mention. Change deliberately if ever changed.
    assert extract_choice("south korea", ["South Korea", "Korea"]) == 1
    # The same happens with punctuation-edged options: "5" after "$" is a whole word.
    assert extract_choice("It costs $5.", ["$5", "5"]) == 1
    assert extract_choice("answer: [x]", ["[x]", "x"]) == 1


def test_duplicate_options_resolve_to_first_index() -> None:
    options = ["Holi", "Diwali", "holi ", "HOLI"]
    assert extract_choice("Holi", options) == 0
    # Like the paper (which compares option strings), either copy counts as correct.
    assert is_correct("Holi", options, 0)
    assert is_correct("Holi", options, 2)
    assert not is_correct("Holi", options, 1)


def test_empty_options_never_match() -> None:
    options = ["", "   ", "Holi"]
    assert extract_choice("anything at all", options) is None
    assert extract_choice("", options) is None
    assert extract_choice("holi", options) == 2
    assert not is_correct("anything at all", options, 0)
    assert not is_correct("", options, 1)


def test_empty_reply() -> None:
    assert extract_choice("", FESTIVALS) is None
    assert not is_correct("", FESTIVALS, 0)


# --- unicode -------------------------------------------------------------------------------


def test_accented_latin() -> None:
    options = ["Crème brûlée", "Café au lait", "Café"]
    assert extract_choice("La réponse est CRÈME BRÛLÉE.", options) == 0
    assert extract_choice("un café, s'il vous plaît", options) == 2
    assert extract_choice("café au lait", options) == 1
    # Decomposed accents in the reply still match a precomposed option.
    assert extract_choice("cafe\u0301 au lait", options) == 1
    # "é" is a letter: "caf" must not match inside "café".
    assert extract_choice("café", ["Caf"]) is None


def test_devanagari_vowel_signs_are_part_of_words() -> None:
    # With Python's `\w`/`\b`, "हिंदी" (ending in a vowel sign) would never match and
    # "राम" would match inside "रामी".
    options = ["हिंदी", "राम", "तमिल"]
    assert extract_choice("उत्तर: हिंदी", options) == 0
    assert extract_choice("हिंदी।", options) == 0
    assert extract_choice("रामी", options) is None
    assert extract_choice("राम और तमिल", options) == 2


def test_cjk_delimited_and_undelimited() -> None:
    options = ["东京", "京都", "大阪"]
    assert extract_choice("东京", options) == 0
    assert extract_choice("答案：京都。", options) == 1
    assert extract_choice("答案是 大阪", options) == 2
    # No spaces between CJK words: no whole-word match, the fallback decides.
    assert extract_choice("答案是京都", options) is None
    assert is_correct("答案是京都", options, 1)
    assert not is_correct("答案是京都", options, 0)


def test_odd_unicode_does_not_crash() -> None:
    options = ["😀", "🇯🇵 Japan", "\u200b", "Ⅻ"]
    assert extract_choice("smile 😀!", options) == 0
    assert extract_choice("🇯🇵 japan", options) == 1
    extract_choice("\x00\ud7ff\U0010ffff", options)


# --- labels --------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [-1, -2, 4, 100])
def test_invalid_label_raises(label: int) -> None:
    with pytest.raises(ValueError, match="not a valid option index"):
        is_correct("Onam", FESTIVALS, label)


def test_hidden_cvqa_label_is_named() -> None:
    # -1 would otherwise index the last option ("Onam") and score this reply as correct.
    with pytest.raises(ValueError, match="hidden"):
        is_correct("Onam", FESTIVALS, -1)


def test_label_with_no_options_raises() -> None:
    with pytest.raises(ValueError):
        is_correct("Onam", [], 0)


def test_numpy_integer_label_is_accepted() -> None:
    assert is_correct("Onam", FESTIVALS, np.int64(3))


def test_non_integer_label_raises_type_error() -> None:
    with pytest.raises(TypeError):
        is_correct("Onam", FESTIVALS, 3.0)  # type: ignore[arg-type]


# --- batches -------------------------------------------------------------------------------


def test_extract_choices_batch() -> None:
    texts = ["Holi", "nothing", "cat"]
    options_list = [FESTIVALS, FESTIVALS, ["dog", "cat"]]
    assert extract_choices(texts, options_list) == [1, None, 1]
    assert extract_choices([], []) == []


def test_extract_choices_length_mismatch() -> None:
    with pytest.raises(ValueError):
        extract_choices(["Holi"], [])


# --- properties ----------------------------------------------------------------------------

_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFG", min_size=1, max_size=8)
_option_lists = st.lists(_words, min_size=1, max_size=6, unique_by=str.lower)
_fillers = st.lists(
    st.one_of(_words, st.sampled_from([",", ".", "--", "(", ")", "is", "the", "answer"])),
    max_size=12,
)
_seps = st.text(alphabet=" \t\n", min_size=1, max_size=3)
_tails = st.sampled_from(["", ".", "!", "\n", " .", '"', ")", "**"])


@settings(max_examples=200, deadline=None)
@given(options=_option_lists, data=st.data())
def test_property_text_ending_with_option_k_extracts_k(options: list[str], data) -> None:
    k = data.draw(st.integers(0, len(options) - 1))
    fillers = data.draw(_fillers)
    sep = data.draw(_seps)
    tail = data.draw(_tails)
    upper = data.draw(st.booleans())
    answer = options[k].upper() if upper else options[k]
    text = sep.join([*fillers, answer]) + tail
    assert extract_choice(text, options) == k
    assert is_correct(text, options, k)


@settings(max_examples=100, deadline=None)
@given(
    options=st.lists(st.text(max_size=6), max_size=5),
    text=st.text(max_size=40),
)
def test_property_arbitrary_unicode_is_total_and_consistent(options: list[str], text: str) -> None:
    choice = extract_choice(text, options)
    assert choice is None or 0 <= choice < len(options)
    # Normalisation is idempotent, so pre-normalising must not change the answer.
    assert normalize(normalize(text)) == normalize(text)
    assert extract_choice(normalize(text), [normalize(o) for o in options]) == choice
    if choice is not None:
        assert is_correct(text, options, choice)
