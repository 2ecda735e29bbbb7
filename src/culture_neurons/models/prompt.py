"""The multiple-choice prompt of the paper's appendix A.3, shared by every model family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PROMPT_TEMPLATE = (
    "Answer the following multiple-choice question{grounding}.\n"
    "Question: {question}\n"
    "Options: {options}\n"
    "Your response must be ONLY the text of the correct option from the list above, "
    "and nothing else."
)


def _one_line(text: str) -> str:
    # A newline inside a question or option would break the template's one-line-per-field layout.
    return " ".join(str(text).split())


def build_prompt_text(question: str, options: Sequence[str], *, with_image: bool = True) -> str:
    """Appendix A.3's user text: question and options (space-separated, in order) on their lines.

    ``with_image=False`` (a text-only model, or a VLM run blind) drops " based on the image" from
    the first line and changes nothing else."""
    if isinstance(options, str) or not options:
        raise ValueError(f"options must be a non-empty sequence of strings, got {options!r}")
    return PROMPT_TEMPLATE.format(
        grounding=" based on the image" if with_image else "",
        question=_one_line(question),
        options=" ".join(_one_line(o) for o in options),
    )


def build_messages(
    prompt_text: str, *, with_image: bool = True, typed_content: bool = True
) -> list[dict[str, Any]]:
    """One user turn, the image placed before the text. ``typed_content``: the content as a
    list of typed parts, as VLM processors' chat templates read it (LLaVA-NeXT's renders a plain
    string as nothing); a text model's template wants the plain string."""
    if not typed_content:
        if with_image:
            raise ValueError("an image needs typed content parts")
        return [{"role": "user", "content": prompt_text}]
    parts = [{"type": "text", "text": prompt_text}]
    return [{"role": "user", "content": [{"type": "image"}, *parts] if with_image else parts}]
