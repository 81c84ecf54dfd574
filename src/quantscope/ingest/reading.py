"""Reading harness files: JSON values with the line each starts on, dotted paths into them, and
typed field values, every failure as `records.malformed` (file, line, field)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from quantscope.ingest.records import malformed

MISSING: Any = object()
"""What `lookup` returns for a path the value does not have."""


def json_values(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, value) for each value of a JSONL file (one per non-blank line) or each element of a
    JSON list; a file holding one JSON object is one value. Lines are 1-based."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise malformed(
            path, None, "(file)", f"cannot be read ({exc})", "pass a readable UTF-8 file"
        ) from None
    head = text.lstrip()[:1]
    if head == "[":
        yield from _list_values(path, text)
    elif head == "{" and _one_document(text):
        yield text[: len(text) - len(text.lstrip())].count("\n") + 1, json.loads(text)
    else:
        yield from _lines(path, text)


def _one_document(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _lines(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise malformed(
                    path,
                    number,
                    "(line)",
                    f"not JSON ({exc.msg})",
                    "each line of a JSONL file is one JSON object",
                ) from None


def _list_values(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """The elements of a JSON list with the line each starts on (the decoder's own positions)."""
    decoder = json.JSONDecoder()
    position, values = _skip(text, text.index("[") + 1), []
    try:
        if text[position : position + 1] != "]":
            while True:
                value, end = decoder.raw_decode(text, position)
                values.append((text.count("\n", 0, position) + 1, value))
                position = _skip(text, end)
                if text[position : position + 1] == ",":
                    position = _skip(text, position + 1)
                    continue
                if text[position : position + 1] != "]":
                    raise json.JSONDecodeError("expected ',' or ']'", text, position)
                break
    except json.JSONDecodeError as exc:
        raise malformed(path, exc.lineno, "(list)", f"not JSON ({exc.msg})", "fix the file's JSON") from None
    yield from values


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def lookup(value: Any, dotted: str) -> Any:
    """The value at a dotted path (`metrics.extractive_match`, `choices.0.message.content`): keys
    of objects, indices of lists, and a one-element list stepped through as its element (so
    `choices.message.content` reads the only choice). `MISSING` when the path is not there."""
    for part in dotted.split("."):
        if isinstance(value, list) and not part.lstrip("-").isdigit() and len(value) == 1:
            value = value[0]
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def scalar(value: Any) -> Any:
    """A one-element list taken as its element (harnesses wrap single responses in lists)."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


class Fields:
    """Typed values from one JSON value of a file, each failure naming the file, line and field."""

    def __init__(self, path: Path, line: int, value: Any) -> None:
        self.path, self.line, self.value = path, line, value

    def get(self, dotted: str) -> Any:
        """The value at `dotted` (one-element lists unwrapped), or MISSING."""
        found = lookup(self.value, dotted)
        return found if found is MISSING else scalar(found)

    def text(self, dotted: str, *, required: bool = False, fix: str = "") -> str | None:
        """A string field (numbers are written as text); None when absent and not required."""
        found = self.get(dotted)
        if found is MISSING or found is None:
            if required:
                raise self.error(dotted, "is missing", fix or "add it, or map another field with --field")
            return None
        if isinstance(found, (dict, list)):
            raise self.error(dotted, f"holds {type(found).__name__}, not text", fix or "map a text field")
        return str(found)

    def integer(self, dotted: str) -> int | None:
        """A whole-number field (tokens, indices), None when absent."""
        found = self.get(dotted)
        if found is MISSING or found is None:
            return None
        if isinstance(found, bool) or not isinstance(found, (int, float, str)):
            raise self.error(dotted, f"is {found!r}, not a whole number", "give a count")
        try:
            number = float(found)
        except ValueError:
            raise self.error(dotted, f"is {found!r}, not a whole number", "give a count") from None
        if number != int(number):
            raise self.error(dotted, f"is {found!r}, not a whole number", "give a count")
        return int(number)

    def number(self, dotted: str) -> float | None:
        """A real-valued field (seconds), None when absent."""
        found = self.get(dotted)
        if found is MISSING or found is None:
            return None
        try:
            return float(found)
        except (TypeError, ValueError):
            raise self.error(dotted, f"is {found!r}, not a number", "give a number") from None

    def verdict(self, dotted: str) -> bool | None:
        """A correctness field: true/false, 1/0 (or 1.0/0.0), "C"/"I" (inspect's CORRECT /
        INCORRECT), "true"/"false"; None when absent."""
        found = self.get(dotted)
        if found is MISSING or found is None:
            return None
        if isinstance(found, bool):
            return found
        if isinstance(found, (int, float)) and found in (0, 1):
            return bool(found)
        if isinstance(found, str) and found.strip().lower() in _VERDICTS:
            return _VERDICTS[found.strip().lower()]
        raise self.error(
            dotted,
            f"is {found!r}, not a verdict",
            "map a field holding true/false or 1/0 (or pass --task to re-judge)",
        )

    def error(self, dotted: str, problem: str, fix: str) -> Exception:
        """The malformed-input error for `dotted` on this value's line."""
        return malformed(self.path, self.line, dotted, problem, fix)


_VERDICTS = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "c": True,
    "i": False,
    "correct": True,
    "incorrect": False,
}
