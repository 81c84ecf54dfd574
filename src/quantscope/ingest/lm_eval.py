"""lm-evaluation-harness `--log_samples` files: `samples_<task>_<date>.jsonl`, with the results JSON
`results_<date>.json` written beside it by the same run.

Fields, as lm-eval writes them (EleutherAI/lm-evaluation-harness):
- `lm_eval/evaluator.py` (`evaluate`, the `example` dict): one line per document and filter:
  `doc_id`, `doc` (the dataset row), `target`, `arguments`, `resps` (per request, the model's raw
  responses: one per repeat), `filtered_resps` (after the task's filter), `filter` (its name),
  `metrics` (the metric names), `doc_hash`, `prompt_hash`, `target_hash`, then each metric's value.
- `lm_eval/loggers/evaluation_tracker.py` (`save_results_samples`): `arguments` rewritten as
  `{"gen_args_<i>": {"arg_<j>": ...}}` (arg_0 the prompt, arg_1 the generation kwargs), `resps`
  and `filtered_resps` made strings by `sanitize_list` (nested `[[text, ...]]`, or flat
  `[text, ...]` where a filter or version wrote one level), `target` as a string; the file name
  from the task name and `date_id`, which also names `results_<date_id>.json`
  (`save_results_aggregated`).
- The results JSON (`evaluator.simple_evaluate`): `configs.<task>.generation_kwargs` (`max_gen_toks`,
  `temperature`, `top_p`, `top_k`, `do_sample`), `config.model_args` (e.g. `enable_thinking`, `seed`),
  `chat_template_sha` (`GeneralConfigTracker`), `model_name`.

A document logged under several filters (e.g. GPQA's strict-match and flexible-extract) is one
item: its first line is read, the rest carry the same responses. Each response of a document is a
sample (lm-eval's `repeats`). lm-eval records no finish reasons and no token counts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantscope.ingest.reading import MISSING, Fields, json_values
from quantscope.ingest.records import Generated, Source, SourceSettings, malformed

# evaluation_tracker.py: f"samples_{task_name}_{self.date_id}.jsonl", date_id = isoformat with ":" -> "-"
_NAME = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.]+)\.jsonl$")
_VERDICT_METRICS = ("exact_match", "acc", "pass@1", "correct")


def read_lm_eval(path: Path, fields: Mapping[str, str]) -> Source:
    """Every generation of an lm-eval samples file, and the settings its results JSON recorded."""
    del fields  # lm-eval's fields are fixed
    name = _NAME.match(path.name)
    task = name.group("task") if name else None
    results = _results(path, name.group("date") if name else None)
    settings = _settings(results, task)
    records, seen = [], set()
    for line, value in json_values(path):
        row = Fields(path, line, value)
        if not isinstance(value, Mapping):
            raise row.error(
                "(line)", f"is {type(value).__name__}, not an object", "pass a samples_*.jsonl file"
            )
        item = row.text("doc_id", required=True, fix="pass an lm-eval --log_samples file")
        if item in seen:  # the same document under another filter
            continue
        seen.add(item)
        records += _generations(row, str(item))
    if settings.max_tokens is None and records:
        settings = SourceSettings(max_tokens=_cap_from_arguments(path)).over(settings)
    return Source(path, tuple(records), settings)


def _generations(row: Fields, item: str) -> list[Generated]:
    responses = _responses(row)
    verdict = _verdict(row) if len(responses) == 1 else None  # a document's score is not per repeat
    doc = row.value.get("doc")
    choices = doc.get("choices") if isinstance(doc, Mapping) else None
    return [
        Generated(
            where=f"{row.path}, line {row.line}",
            item_id=item,
            sample=index,
            prompt=_prompt(row),
            text=text,
            gold=row.text("target"),
            choices=tuple(str(c) for c in choices) if isinstance(choices, list) else (),
            correct=verdict,
        )
        for index, text in enumerate(responses)
    ]


def _responses(row: Fields) -> list[str]:
    """The raw responses of a document: `resps` nested per request (`[[r1, r2]]`) or flat (`[r1]`)."""
    resps = row.value.get("resps", MISSING)
    if resps is MISSING or not isinstance(resps, list) or not resps:
        raise row.error("resps", "is missing or empty", "pass a samples file of a generate_until task")
    first = resps[0]
    responses = first if isinstance(first, list) else resps
    if not all(isinstance(r, str) for r in responses):
        raise row.error("resps", "holds something other than text", "import a generate_until task's samples")
    return responses


def _prompt(row: Fields) -> str:
    """The prompt lm-eval sent: arguments.gen_args_0.arg_0 (the tracker's form), or the first
    argument of the first request (the evaluator's)."""
    for dotted in ("arguments.gen_args_0.arg_0", "arguments.0.0"):
        found = row.get(dotted)
        if isinstance(found, str):
            return found
    raise row.error("arguments", "holds no prompt", "pass an lm-eval --log_samples file")


def _verdict(row: Fields) -> bool | None:
    names = row.value.get("metrics")
    candidates = (
        [n for n in names if isinstance(n, str)] if isinstance(names, list) else list(_VERDICT_METRICS)
    )
    for name in candidates:
        value = row.value.get(name)
        if isinstance(value, (bool, int, float)) and value in (0, 1):
            return bool(value)
    return None


def _results(samples: Path, date: str | None) -> dict[str, Any]:
    """The results JSON the same run wrote (`results_<date>.json` beside the samples), or {}."""
    if date is None:
        return {}
    path = samples.with_name(f"results_{date}.json")
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise malformed(
            path, getattr(exc, "lineno", None), "(file)", f"not JSON ({exc})", "fix or remove it"
        ) from None
    return found if isinstance(found, dict) else {}


def _settings(results: Mapping[str, Any], task: str | None) -> SourceSettings:
    config = results.get("config") if isinstance(results.get("config"), Mapping) else {}
    configs = results.get("configs") if isinstance(results.get("configs"), Mapping) else {}
    task_config = configs.get(task, {}) if task else {}
    generation = task_config.get("generation_kwargs") if isinstance(task_config, Mapping) else None
    generation = generation if isinstance(generation, Mapping) else {}
    model_args = _model_args(config.get("model_args"))
    greedy = generation.get("do_sample") is False and "temperature" not in generation
    return SourceSettings(
        task=task,
        model=_text(model_args.get("pretrained") or model_args.get("model") or results.get("model_name")),
        thinking=_flag(model_args.get("enable_thinking")),
        temperature=0.0 if greedy else _float(generation.get("temperature")),
        top_p=_float(generation.get("top_p")),
        top_k=_int(generation.get("top_k")),
        min_p=_float(generation.get("min_p")),
        max_tokens=_int(generation.get("max_gen_toks")),
        seed=_int(model_args.get("seed")),
        chat_template_sha=_text(results.get("chat_template_sha")),
    )


def _cap_from_arguments(path: Path) -> int | None:
    """The cap the first request carried (arguments.gen_args_0.arg_1.max_gen_toks), when the
    results JSON is not there."""
    for line, value in json_values(path):
        return _int(Fields(path, line, value).get("arguments.gen_args_0.arg_1.max_gen_toks"))
    return None


def _model_args(args: Any) -> dict[str, Any]:
    """`model_args` as lm-eval takes them: a dict, or `key=value,key=value`
    (lm_eval/utils.py, `simple_parse_args_string`)."""
    if isinstance(args, Mapping):
        return dict(args)
    if not isinstance(args, str):
        return {}
    pairs = (part.split("=", 1) for part in args.split(",") if "=" in part)
    return {key.strip(): value.strip() for key, value in pairs}


def _text(value: Any) -> str | None:
    return None if value is None or value is MISSING else str(value)


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value is MISSING else float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None
