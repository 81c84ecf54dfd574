"""Every Eval Ever (EEE) instance-level JSONL, with the aggregate JSON beside it for the settings.

Fields, as `instance_level_eval.schema.json` (every-eval-ever 0.3.0) defines them: `sample_id`
(the item), `sample_hash` (a hash of the input and its reference, kept as the rows' fingerprint so
two EEE files pair by it), `interaction_type` (only `single_turn` carries an `output`),
`input.raw` / `input.reference` (the gold: its first entry) / `input.choices`, `output.raw`
(the complete responses: each one a sample) and `output.reasoning_trace` (the reasoning, when
the response does not already hold it), `evaluation.is_correct`, `token_usage.output_tokens` /
`reasoning_tokens`, `performance.latency_ms`, and `metadata` (free-form: the `sample_index`,
`seed`, `finish_reason`, `completion_tokens` and `thinking_tokens` quantscope's own EEE export
writes there are read back). The aggregate file (`eval.schema.json`) is the `.json` beside the
JSONL whose `evaluation_id` matches the instances': its `model_info.id`, and the
`evaluation_results[].generation_config.generation_args` (`temperature`, `top_p`, `top_k`,
`max_tokens`, `reasoning`) with their `additional_details` (min_p, penalties, seed and the served
chat template's hash, where quantscope's export puts them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantscope.ingest.reading import MISSING, Fields, json_values, lookup
from quantscope.ingest.records import Generated, Source, SourceSettings


def read_eee(path: Path, fields: Mapping[str, str]) -> Source:
    """Every generation of an EEE instance-level JSONL, and the settings its aggregate JSON recorded."""
    del fields  # EEE's fields are fixed
    records: list[Generated] = []
    counts: dict[str, int] = {}
    evaluation = None
    for line, value in json_values(path):
        row = Fields(path, line, value)
        if not isinstance(value, Mapping):
            raise row.error(
                "(line)", f"is {type(value).__name__}, not an object", "pass an EEE instance JSONL"
            )
        evaluation = evaluation or (
            row.text("evaluation_id"),
            row.text("evaluation_name"),
            row.text("model_id"),
        )
        records += _generations(row, counts)
    settings = _settings(path, *(evaluation or (None, None, None)))
    return Source(path, tuple(records), settings)


def _generations(row: Fields, counts: dict[str, int]) -> list[Generated]:
    kind = row.text("interaction_type", required=True, fix="pass an EEE instance-level record")
    if kind != "single_turn":
        raise row.error(
            "interaction_type", f"is {kind!r}", "only single_turn records carry one output to import"
        )
    item = row.text("sample_id", required=True, fix="every EEE instance names its sample_id")
    responses = _texts(row, "output.raw", required=True)
    traces = _texts(row, "output.reasoning_trace")
    first = _integer_text(row, "metadata.sample_index")
    first = counts.get(item, 0) if first is None else first
    counts[item] = max(counts.get(item, 0), first + len(responses))
    single = len(responses) == 1  # per-record values describe one response
    return [
        Generated(
            where=f"{row.path}, line {row.line}",
            item_id=item,
            sample=first + index,
            prompt=row.text("input.raw", required=True, fix="every EEE instance has input.raw") or "",
            text=text,
            reasoning=_reasoning(text, traces[index] if index < len(traces) else None),
            gold=_reference(row),
            choices=tuple(_texts(row, "input.choices")),
            completion_tokens=_count(row, "token_usage.output_tokens", "metadata.completion_tokens", single),
            thinking_tokens=_count(row, "token_usage.reasoning_tokens", "metadata.thinking_tokens", single),
            finish_reason=row.text("metadata.finish_reason") if single else None,
            correct=row.verdict("evaluation.is_correct") if single else None,
            seconds=_seconds(row) if single else None,
            seed=_integer_text(row, "metadata.seed") if single else None,
            prompt_hash=row.text("sample_hash"),
            finish_inferred=single and row.text("metadata.finish_reason_inferred") == "true",
        )
        for index, text in enumerate(responses)
    ]


def _texts(row: Fields, dotted: str, required: bool = False) -> list[str]:
    found = lookup(row.value, dotted)
    if found is MISSING or found is None:
        if required:
            raise row.error(dotted, "is missing", "a single_turn EEE instance lists its responses there")
        return []
    if not isinstance(found, list) or not all(isinstance(t, str) for t in found):
        raise row.error(dotted, "is not a list of strings", "fix the record (EEE lists responses as strings)")
    if required and not found:
        raise row.error(dotted, "is empty", "a single_turn EEE instance lists its responses there")
    return found


def _reasoning(text: str, trace: str | None) -> str | None:
    """The reasoning held apart from the response, or None when the response already holds it
    (quantscope's export writes the whole completion and its thinking alone)."""
    if trace is None or not trace.strip() or trace.strip() in text:
        return None
    return trace


def _reference(row: Fields) -> str | None:
    found = lookup(row.value, "input.reference")
    if isinstance(found, list) and found and isinstance(found[0], (str, int, float)):
        return str(found[0])
    return None


def _count(row: Fields, usage: str, metadata: str, single: bool) -> int | None:
    if not single:
        return None
    found = row.integer(usage)
    return found if found is not None else _integer_text(row, metadata)


def _integer_text(row: Fields, dotted: str) -> int | None:
    """A whole number EEE's metadata holds as a string (its values are strings)."""
    found = row.get(dotted)
    if found is MISSING or found is None or found == "None":
        return None
    return row.integer(dotted)


def _seconds(row: Fields) -> float | None:
    latency = row.number("performance.latency_ms")
    return None if latency is None else latency / 1000.0


def _settings(path: Path, evaluation_id: str | None, name: str | None, model: str | None) -> SourceSettings:
    """The settings of the aggregate JSON beside `path` with the same evaluation_id (none: unknown)."""
    aggregate = _aggregate(path, evaluation_id)
    result = next(
        (r for r in aggregate.get("evaluation_results", []) if isinstance(r, Mapping) and _has_args(r)), {}
    )
    args = lookup(result, "generation_config.generation_args")
    args = args if isinstance(args, Mapping) else {}
    extra = lookup(result, "generation_config.additional_details")
    extra = extra if isinstance(extra, Mapping) else {}
    model_id = lookup(aggregate, "model_info.id")
    return SourceSettings(
        task=name,
        model=model_id if isinstance(model_id, str) else model,
        thinking=args.get("reasoning") if isinstance(args.get("reasoning"), bool) else None,
        temperature=_number(args.get("temperature")),
        top_p=_number(args.get("top_p")),
        top_k=_whole(args.get("top_k")),
        min_p=_number(extra.get("min_p")),
        presence_penalty=_number(extra.get("presence_penalty")),
        repetition_penalty=_number(extra.get("repetition_penalty")),
        max_tokens=_whole(args.get("max_tokens")),
        seed=_whole(extra.get("seed")),
        chat_template_sha=extra.get("served_chat_template_sha")
        if isinstance(extra.get("served_chat_template_sha"), str)
        else None,
    )


def _aggregate(path: Path, evaluation_id: str | None) -> Mapping[str, Any]:
    if evaluation_id is None:
        return {}
    for candidate in sorted(path.parent.glob("*.json")):
        try:
            found = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not the aggregate: another file beside it
        if isinstance(found, Mapping) and found.get("evaluation_id") == evaluation_id:
            return found
    return {}


def _has_args(result: Mapping[str, Any]) -> bool:
    return isinstance(lookup(result, "generation_config.generation_args"), Mapping)


def _number(value: Any) -> float | None:
    try:
        return None if value is None or value == "None" else float(value)
    except (TypeError, ValueError):
        return None


def _whole(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)
