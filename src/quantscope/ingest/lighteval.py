"""lighteval `--save-details` parquet files, with the results JSON the same run wrote.

Layout and columns, as huggingface/lighteval writes them (read at commit 3fd1526, May 2026):
- `logging/evaluation_tracker.py` (`save`, `save_details`, `_get_details_sub_folder`): one file per
  task, `<output_dir>/details/<model_name>/<date_id>/details_<task>_<date_id>.parquet`, a
  `datasets.Dataset` built from `asdict(Detail)` rows (columns sorted, `id` dropped); the results
  at `<output_dir>/results/<model_name>/results_<date_id>.json` (`save_results`), whose
  `config_general.model_config.generation_parameters` holds the settings (`models/model_input.py`
  `GenerationParameters`: `temperature`, `top_p`, `top_k`, `min_p`, `presence_penalty`,
  `repetition_penalty`, `max_new_tokens`, `seed`) and `config_general.model_name` the model.
- `logging/info_loggers.py` (`DetailsLogger.Detail`): the columns `doc`, `model_response`, `metric`.
- `tasks/requests.py` (`Doc`): `doc.query` (the prompt), `doc.choices` and `doc.gold_index` (the
  reference: the choice(s) it points at), `doc.id`.
- `models/model_output.py` (`ModelResponse`): `text` (one entry per sample, `num_samples`),
  `reasonings` (the reasoning a server returned apart, per sample), `output_tokens` (the token ids
  generated, per sample: their number is the completion's length).
- `metric`: the metric values of the document; a 0/1 value of a known accuracy metric is the
  harness's verdict (used when quantscope does not re-judge the task).
lighteval records no finish reasons; they are inferred from the cap and the thinking as for the
other formats. Errors name a parquet row as a line, from 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantscope.ingest.reading import MISSING, Fields, lookup
from quantscope.ingest.records import Generated, Source, SourceSettings, malformed
from quantscope.store.settings import text_fingerprint

# evaluation_tracker.py: f"details_{task_name}_{date_id}.parquet", date_id = isoformat, ":" -> "-"
_NAME = re.compile(r"^details_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.]+)\.parquet$")
# metric names lighteval's accuracy metrics log per document (metrics/metrics.py)
_VERDICT_METRICS = ("extractive_match", "exact_match", "em", "quasi_exact_match", "acc", "gpqa_pass@1")


def read_lighteval(path: Path, fields: Mapping[str, str]) -> Source:
    """Every generation of a lighteval details parquet, and the settings its results JSON recorded."""
    del fields  # lighteval's columns are fixed
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise malformed(
            path,
            None,
            "(file)",
            f"is not a readable parquet file ({error})",
            "pass details_<task>_<date>.parquet",
        ) from None
    records: list[Generated] = []
    for index, value in enumerate(rows, start=1):
        records += _generations(Fields(path, index, value))
    return Source(path, tuple(records), _settings(path))


def _generations(row: Fields) -> list[Generated]:
    for column in ("doc", "model_response"):
        if not isinstance(row.get(column), Mapping):
            raise row.error(
                column, "is missing", "pass a lighteval details parquet (doc, model_response, metric)"
            )
    prompt = row.text("doc.query", required=True, fix="lighteval's Doc always has a query") or ""
    item = row.text("doc.id") or text_fingerprint(prompt)
    responses = _list(row, "model_response.text")
    if not responses or not all(isinstance(t, str) for t in responses):
        raise row.error("model_response.text", "holds no generated text", "pass a generative task's details")
    reasonings, tokens = _list(row, "model_response.reasonings"), _list(row, "model_response.output_tokens")
    choices = [str(c) for c in _list(row, "doc.choices")]
    single = len(responses) == 1
    return [
        Generated(
            where=f"{row.path}, line {row.line}",
            item_id=item,
            sample=index,
            prompt=prompt,
            text=text,
            reasoning=reasonings[index] if index < len(reasonings) and reasonings[index] else None,
            gold=_gold(row, choices),
            choices=tuple(choices) if len(choices) > 1 else (),
            completion_tokens=len(tokens[index]) if index < len(tokens) and tokens[index] else None,
            correct=_verdict(row) if single else None,
        )
        for index, text in enumerate(responses)
    ]


def _list(row: Fields, dotted: str) -> list[Any]:
    found = lookup(row.value, dotted)
    if found is MISSING or found is None:
        return []
    if not isinstance(found, list):
        raise row.error(dotted, f"is {type(found).__name__}, not a list", "pass a lighteval details parquet")
    return found


def _gold(row: Fields, choices: list[str]) -> str | None:
    """The choice `doc.gold_index` points at (the first, where it lists several)."""
    index = lookup(row.value, "doc.gold_index")
    index = index[0] if isinstance(index, list) and index else index
    if isinstance(index, int) and 0 <= index < len(choices):
        return choices[index]
    return None


def _verdict(row: Fields) -> bool | None:
    metric = row.get("metric")
    if not isinstance(metric, Mapping):
        return None
    for name in _VERDICT_METRICS:
        value = metric.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
    return None


def _settings(path: Path) -> SourceSettings:
    """The task (from the file name) and the results JSON's generation parameters, where found."""
    name = _NAME.match(path.name)
    results = _results(path, name.group("date")) if name else {}
    general = results.get("config_general") if isinstance(results.get("config_general"), Mapping) else {}
    config = general.get("model_config") if isinstance(general.get("model_config"), Mapping) else {}
    params = config.get("generation_parameters")
    params = params if isinstance(params, Mapping) else {}
    model = general.get("model_name")
    return SourceSettings(
        task=name.group("task") if name else None,
        model=model if isinstance(model, str) else None,
        temperature=_number(params.get("temperature")),
        top_p=_number(params.get("top_p")),
        top_k=_whole(params.get("top_k")),
        min_p=_number(params.get("min_p")),
        presence_penalty=_number(params.get("presence_penalty")),
        repetition_penalty=_number(params.get("repetition_penalty")),
        max_tokens=_whole(params.get("max_new_tokens")),
        seed=_whole(params.get("seed")),
    )


def _results(path: Path, date_id: str) -> Mapping[str, Any]:
    """`<output_dir>/results/<model_name>/results_<date_id>.json` for a details file at
    `<output_dir>/details/<model_name>/<date_id>/` (model names may hold a '/'); {} if absent."""
    folder = path.parent.parent
    for root in folder.parents:
        if root.name == "details":
            candidate = root.parent / "results" / folder.relative_to(root) / f"results_{date_id}.json"
            try:
                found = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return {}
            return found if isinstance(found, Mapping) else {}
    return {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _whole(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)
