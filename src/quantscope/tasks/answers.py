"""Pulling the final answer out of model text: the last `\\boxed{...}` (braces balanced)."""

from __future__ import annotations

_BOXED = "\\boxed"


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` in `text`, or None when there is none.

    Braces are balanced, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; an unclosed box gives None.
    """
    start = text.rfind(_BOXED + "{")
    if start < 0:
        return None
    depth = 0
    begin = start + len(_BOXED) + 1
    for index in range(begin - 1, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[begin:index].strip()
    return None
