"""Pulling the final answer out of model text: the last `\\boxed{...}`, a choice letter, an integer.

Everything here reads the *answer* part of a generation (what follows `</think>`); the judge
never looks at the thinking. All functions are linear in the text length and never raise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_BOXED = "\\boxed"
THINK_CLOSE = "</think>"
CHOICE_LETTERS = "ABCDEFGHIJ"
"""Letters for up to 10 options (MMLU-Pro has 10, GPQA 4)."""

# Wrappers a model puts around a bare letter or number: \text{C}, \textbf{C}, \mathrm{C}, $C$, **C**.
_LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|textnormal)\s*\{([^{}]*)\}")
_MAX_WRAPPER_DEPTH = 4  # bounded, so deeply nested adversarial input stays linear
_DECORATION = " \t\n$*_`'\"()[]{}.,;:"

# The model-card format for multiple choice: `"answer": "C"` (JSON field, quotes optional).
_JSON_ANSWER = re.compile(r"""["']?answer["']?\s*:\s*["'](?:\(\s*)?([A-Z])(?:\s*\))?["']""", re.IGNORECASE)
# "The answer is (C)", "Answer: C", "**Final answer:** $C$", "correct option is C. ..."; the letter
# is upper-case and not the start of a word, so "the answer is a bit" does not count.
_ANSWER_PHRASE = re.compile(
    r"(?:answer|correct (?:option|choice))(?:\s+(?:is|would be|should be))?[\s*_$`'\":：]*"
    r"(?:(?:option|choice)[\s*_$`'\"]*)?(?:\\(?:text|textbf|mathrm|mathbf)\s*\{)?[(\[]*([A-Z])(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_BOXED_HEAD = re.compile(r"\(?([A-Z])(?![A-Za-z0-9])")
_LONE_LETTER = re.compile(r"^\(?([A-Z])\)?[.:)]?$")
_INTEGER = re.compile(r"^[+-]?\d+$")


def final_answer_text(answer: str) -> str:
    """The text after the last `</think>` (all of `answer` when there is none).

    Engines already split the thinking off; this guards judges against being handed the whole
    completion, so an answer is never read out of the reasoning.
    """
    cut = answer.rfind(THINK_CLOSE)
    return answer if cut < 0 else answer[cut + len(THINK_CLOSE) :]


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` in `text` (`\\boxed {...}` too), or None when there is none.

    Braces are balanced, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; an unclosed box gives None.
    """
    found = _last_box(text)
    return None if found is None else found[1]


def _last_box(text: str) -> tuple[int, str] | None:
    """(position, content) of the last closed `\\boxed{...}` (whitespace allowed before the brace)."""
    start = text.rfind(_BOXED)
    while start >= 0:
        brace = start + len(_BOXED)
        while brace < len(text) and text[brace] in " \t":
            brace += 1
        if brace < len(text) and text[brace] == "{":
            content = _balanced(text, brace)
            return None if content is None else (start, content)
        start = text.rfind(_BOXED, 0, start)
    return None


def _balanced(text: str, brace: int) -> str | None:
    """The stripped text inside the braces opening at `brace`, or None when they never close."""
    depth = 0
    begin = brace + 1
    for index in range(brace, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[begin:index].strip()
    return None


def strip_wrappers(text: str) -> str:
    """`text` without LaTeX text wrappers (`\\text{...}`, `\\textbf{...}`), `$`, `**` and edge punctuation."""
    return _unwrap_latex(text).strip(_DECORATION)


def _unwrap_latex(text: str) -> str:
    """`text` with `\\text{X}`-style wrappers replaced by X (nested ones too)."""
    for _ in range(_MAX_WRAPPER_DEPTH):
        unwrapped = _LATEX_WRAPPER.sub(r"\1", text)
        if unwrapped == text:
            break
        text = unwrapped
    return text


def choice_letters(n_choices: int) -> str:
    """The option letters for `n_choices` options: 4 -> "ABCD", 10 -> "ABCDEFGHIJ"."""
    if not 1 <= n_choices <= len(CHOICE_LETTERS):
        raise ValueError(f"{n_choices} options; multiple choice supports 1 to {len(CHOICE_LETTERS)}")
    return CHOICE_LETTERS[:n_choices]


def extract_choice(text: str, letters: str, choices: Sequence[str] = ()) -> str | None:
    """The option letter a multiple-choice answer names, or None when it names none of `letters`.

    The answer is the one stated last, whatever its form: the model card's JSON field (`"answer":
    "C"`), the last `\\boxed{}` (`\\boxed{C}`, `\\boxed{\\text{(C)}}`, or the exact text of an
    option from `choices`), an answer phrase ("The answer is (C)", "Answer: C. because ..."), or a
    last line that is only a letter ("(C)", "**C**"). So a model that writes `"answer": "A"` and
    then settles on `\\boxed{C}` answered C.
    """
    found = [
        *_json_letters(text, letters),
        *_boxed_letter(text, letters, choices),
        *_phrase_letters(text, letters),
    ]
    found += _lone_letter(text, letters)
    return max(found)[1] if found else None


def _json_letters(text: str, letters: str) -> list[tuple[int, str]]:
    return [
        (m.start(), m.group(1).upper()) for m in _JSON_ANSWER.finditer(text) if m.group(1).upper() in letters
    ]


def _boxed_letter(text: str, letters: str, choices: Sequence[str]) -> list[tuple[int, str]]:
    box = _last_box(text)
    letter = None if box is None else _letter_from_boxed(box[1], letters, choices)
    return [] if letter is None else [(box[0], letter)]  # type: ignore[index]


def _phrase_letters(text: str, letters: str) -> list[tuple[int, str]]:
    # case-sensitive: a lower-case "a" is an article
    return [(m.start(), m.group(1)) for m in _ANSWER_PHRASE.finditer(text) if m.group(1) in letters]


def _lone_letter(text: str, letters: str) -> list[tuple[int, str]]:
    lines = text.splitlines()
    for number in range(len(lines) - 1, -1, -1):
        if lines[number].strip():
            last = lines[number]
            lone = _LONE_LETTER.match(strip_wrappers(last) if len(last) < 40 else "")
            if lone is not None and lone.group(1) in letters:
                return [(len(text) - len(last), lone.group(1))]
            return []
    return []


def _letter_from_boxed(boxed: str, letters: str, choices: Sequence[str]) -> str | None:
    """A letter from the content of a box: "C", "(C)", "C. 42 m/s", or an option's exact text."""
    content = strip_wrappers(boxed)
    if len(content) == 1 and content.upper() in letters:  # "c" alone is a letter; "a+b" is not
        return content.upper()
    head = _BOXED_HEAD.match(content)
    if head is not None and head.group(1) in letters:
        return head.group(1)
    wanted = " ".join(content.split()).casefold()
    for letter, choice in zip(letters, choices, strict=False):
        if wanted and " ".join(strip_wrappers(choice).split()).casefold() == wanted:
            return letter
    return None


def clip(text: str | None, max_chars: int = 200) -> str | None:
    """`text` cut to `max_chars` characters (with a trailing "…"), so a runaway answer is not stored whole."""
    if text is None or len(text) <= max_chars:
        return text
    return text[:max_chars] + "…"


def parse_integer(text: str) -> int | None:
    """`text` as an integer when it is only one ("042", "+7", "$70$", "\\text{70}", "1{,}000"), else None.

    Accepts at most 100 digits, so an adversarial answer cannot cost a huge conversion.
    """
    if len(text) > 1000:
        return None
    candidate = _unwrap_latex(text).replace("{,}", "").strip().strip("$").strip()
    candidate = candidate.removesuffix(".")  # a sentence end; a leading "." would make a decimal
    if len(candidate) > 100 or not _INTEGER.match(candidate):
        return None
    return int(candidate)


def same_integer_answer(first: str, second: str) -> bool:
    """Whether two extracted answers are the same as an integer judge compares them: as integers
    when both are one ("042" and "42"), else as text without wrappers (`\\text{}`, `$`)."""
    a, b = parse_integer(first), parse_integer(second)
    if a is not None and b is not None:
        return a == b
    return strip_wrappers(first) == strip_wrappers(second)


def same_choice_answer(first: str, second: str) -> bool:
    """Whether two extracted multiple-choice answers are the same: the same letter (or, for the raw
    box a judge keeps when it found no letter, the same text up to wrappers and case)."""
    return strip_wrappers(first).casefold() == strip_wrappers(second).casefold()
