"""inspect_ai `.eval` / `.json` logs, read with inspect_ai's own `inspect_ai.log.read_eval_log`.

Schema as UKGovernmentBEIS/inspect_ai defines it (read at 0.3.285): `inspect_ai/log/_log.py`
(`EvalLog.eval` an `EvalSpec` with `task`, `model`, `model_generate_config`; `EvalLog.plan.config`
the `GenerateConfig` used; `EvalSample` with `id`, `epoch` (from 1), `input`, `target`, `output`,
`scores`) and `inspect_ai/model/_model_output.py` (`ModelOutput.completion`, `.choices[0].message`
whose content may hold `ContentReasoning` blocks, `.choices[0].stop_reason` ("stop", "max_tokens",
...), `.usage.output_tokens` / `.reasoning_tokens`). inspect_ai is an optional extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError
from quantscope.ingest.records import Generated, Source, SourceSettings, malformed

# _model_output.py StopReason -> the finish reasons vLLM writes
_FINISH = {"stop": "stop", "max_tokens": "length", "model_length": "length"}


def read_inspect(path: Path, fields: Mapping[str, str]) -> Source:
    """Every sample of an inspect_ai log, and the generation settings it recorded."""
    del fields  # inspect_ai's schema is fixed
    try:
        from inspect_ai.log import read_eval_log
    except ImportError:
        raise QuantscopeError(
            "reading inspect_ai logs needs inspect_ai: pip install 'quantscope[inspect]'"
        ) from None
    try:
        log = read_eval_log(str(path))
    except Exception as error:  # inspect_ai raises pydantic/zip/json errors alike
        raise malformed(
            path, None, "(file)", f"is not an inspect_ai log ({error})", "pass a .eval or .json log"
        ) from None
    records = tuple(_generation(path, s) for s in log.samples or [])
    return Source(path, records, _settings(log))


def _generation(path: Path, sample: Any) -> Generated:
    from inspect_ai.model import ContentReasoning, ContentText

    output = sample.output
    choice = output.choices[0] if output.choices else None
    reasoning, text = [], []
    content = choice.message.content if choice else output.completion
    if isinstance(content, str):
        text.append(content)
    else:
        for block in content:
            if isinstance(block, ContentReasoning):
                reasoning.append(block.reasoning)
            elif isinstance(block, ContentText):
                text.append(block.text)
    usage = output.usage
    target = sample.target if isinstance(sample.target, str) else (sample.target or [""])[0]
    prompt = sample.input if isinstance(sample.input, str) else "\n".join(m.text for m in sample.input)
    return Generated(
        where=f"{path}, sample {sample.id} epoch {sample.epoch}",
        item_id=str(sample.id),
        sample=sample.epoch - 1,
        prompt=prompt,
        text="".join(text),
        reasoning="\n".join(reasoning) or None,
        gold=target,
        choices=tuple(sample.choices or ()),
        completion_tokens=usage.output_tokens if usage else None,
        thinking_tokens=usage.reasoning_tokens if usage else None,
        finish_reason=_FINISH.get(choice.stop_reason, choice.stop_reason) if choice else None,
        correct=_verdict(sample.scores),
    )


def _verdict(scores: Mapping[str, Any] | None) -> bool | None:
    """The first score whose value is inspect_ai's CORRECT "C" / INCORRECT "I" (or 0/1)."""
    for score in (scores or {}).values():
        value = score.value
        if value in ("C", "I"):
            return value == "C"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
    return None


def _settings(log: Any) -> SourceSettings:
    config = log.plan.config if log.plan else log.eval.model_generate_config
    return SourceSettings(
        task=log.eval.task,
        model=log.eval.model,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        max_tokens=config.max_tokens,
        seed=config.seed,
    )
