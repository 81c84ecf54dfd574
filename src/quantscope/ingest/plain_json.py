"""Plain JSON (a list of objects) or JSONL (one object per line) with a field mapping: vLLM and
OpenAI batch outputs, home-made runs.

`--field NAME=PATH` says where each field lives; a PATH is dotted (`metrics.extractive_match`,
`response.body.choices.0.message.content`) and a one-element list on the way is taken as its
element (`reading.lookup`). Unmapped fields are read from the default paths in `DEFAULT_PATHS`
when present. Without an `id`, an item is named by a hash of its prompt, so two variants' files
pair by prompt; without a `sample`, an item's generations are numbered in file order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from quantscope.errors import QuantscopeError
from quantscope.ingest.reading import MISSING, Fields, json_values
from quantscope.ingest.records import Generated, Source, SourceSettings, malformed
from quantscope.store.settings import text_fingerprint

DEFAULT_PATHS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "sample": ("sample",),
    "prompt": ("prompt",),
    "text": ("text",),
    "reasoning": ("reasoning", "reasoning_content"),
    "gold": ("gold",),
    "choices": ("choices",),
    "correct": ("correct",),
    "completion_tokens": ("completion_tokens", "usage.completion_tokens"),
    "thinking_tokens": ("thinking_tokens", "usage.completion_tokens_details.reasoning_tokens"),
    "finish_reason": ("finish_reason",),
    "seconds": ("seconds",),
}
"""Each field's default paths, tried in order (an OpenAI-style `usage` object is read as is)."""


def parse_fields(pairs: Sequence[str]) -> dict[str, str]:
    """`--field NAME=PATH` flags as {name: path}; an unknown NAME or a pair without `=` is an error."""
    mapping = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise QuantscopeError(f"--field {pair!r}: write NAME=PATH, e.g. --field text=generated_text")
        if name not in DEFAULT_PATHS:
            raise QuantscopeError(f"--field {pair!r}: no field {name!r}; fields: {', '.join(DEFAULT_PATHS)}")
        mapping[name] = path
    return mapping


def read_plain_json(path: Path, fields: Mapping[str, str]) -> Source:
    """Every generation of a JSON list or JSONL file, read through `fields` (see the module)."""
    paths = {
        name: (fields[name],) if name in fields else defaults for name, defaults in DEFAULT_PATHS.items()
    }
    counts: dict[str, int] = {}
    records = []
    for line, value in json_values(path):
        if not isinstance(value, Mapping):
            raise malformed(
                path,
                line,
                "(line)",
                f"is {type(value).__name__}, not an object",
                "give one object per generation",
            )
        row = Fields(path, line, value)
        records.append(_record(row, paths, counts))
    return Source(path, tuple(records), SourceSettings())


def _record(row: Fields, paths: Mapping[str, tuple[str, ...]], counts: dict[str, int]) -> Generated:
    def at(name: str) -> str:
        return next((p for p in paths[name] if row.get(p) is not MISSING), paths[name][0])

    text = row.text(at("text"), required=True, fix="map the completion with --field text=PATH")
    prompt = row.text(at("prompt"))
    item = row.text(at("id"))
    if item is None and prompt is None:
        raise row.error(
            at("prompt"),
            "is missing, and there is no id either",
            "map one with --field prompt=PATH or --field id=PATH",
        )
    item = item if item is not None else text_fingerprint(prompt or "")
    sample = row.integer(at("sample"))
    if sample is None:
        sample = counts.get(item, 0)
    counts[item] = max(counts.get(item, 0), sample + 1)
    return Generated(
        where=f"{row.path}, line {row.line}",
        item_id=item,
        sample=sample,
        prompt=prompt or "",
        text=text or "",
        reasoning=row.text(at("reasoning")),
        gold=row.text(at("gold")),
        choices=_choices(row, at("choices")),
        completion_tokens=row.integer(at("completion_tokens")),
        thinking_tokens=row.integer(at("thinking_tokens")),
        finish_reason=row.text(at("finish_reason")),
        correct=row.verdict(at("correct")),
        seconds=row.number(at("seconds")),
    )


def _choices(row: Fields, dotted: str) -> tuple[str, ...]:
    from quantscope.ingest.reading import lookup

    found = lookup(row.value, dotted)
    if found is MISSING or found is None:
        return ()
    if not isinstance(found, list) or not all(isinstance(c, (str, int, float)) for c in found):
        return ()  # an OpenAI response's `choices` are completions, not options
    return tuple(str(c) for c in found)
