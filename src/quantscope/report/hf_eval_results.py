"""Hugging Face Hub eval results (`quantscope export --format hf-eval-results`): one
`.eval_results/<task>.yaml` per benchmark for a model repo, the files the Hub reads to show scores on
the model page and on the benchmark's leaderboard (https://huggingface.co/docs/hub/eval-results;
the spec is hub-docs' `eval_results.yaml`).

Each file is a YAML list of entries built and serialized by huggingface_hub's own
`EvalResultEntry` / `eval_result_entries_to_yaml` (huggingface_hub/_eval_results.py): `dataset`
(`id`: the benchmark's hub dataset, `task_id`: the task within it), `value`, `date`, `source`
and `notes`. One variant per export (the model repo's): the Hub reads a value as that model's
score, so the accuracy is written as a percentage of avg@k, and the notes say what it is over,
the generation settings and, against the baseline, the paired delta and the CoT Token
Inflation Ratio. A task quantscope knows no hub dataset for is left out (the Hub would reject it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quantscope.analysis.compare import Analysis, analyze
from quantscope.analysis.metrics import TaskMetrics
from quantscope.errors import QuantscopeError
from quantscope.store.database import Store
from quantscope.util import write_atomic


@dataclass(frozen=True)
class HubResultFile:
    """One `.eval_results/<task>.yaml` written for `variant`, and the task's hub dataset."""

    variant: str
    task: str
    dataset_id: str
    path: Path

    def __str__(self) -> str:
        return f"{self.variant} on {self.task} ({self.dataset_id}): {self.path}"


def export_hf_eval_results(
    store: Store,
    out: str | Path,
    *,
    variant: str | None = None,
    baseline: str | None = None,
    task: str | None = None,
    source_url: str | None = None,
) -> tuple[HubResultFile, ...]:
    """Write `out/.eval_results/<task>.yaml` for `variant` (needed when the store holds several) on
    every task of it with a known hub dataset (or only `task`); `source_url` links the evaluation's
    logs (e.g. an EEE upload) and is named the source."""
    import yaml
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    analysis = analyze(store, baseline, allow_mismatch=True)
    name = _variant(analysis, variant)
    written = []
    for metrics in analysis.metrics:
        dataset = _hub_dataset(metrics.task)
        if metrics.variant != name or task not in (None, metrics.task) or dataset is None:
            continue
        entry = EvalResultEntry(
            dataset_id=dataset[0],
            task_id=dataset[1],
            value=round(100 * metrics.accuracy, 2),
            date=_date(store, metrics),
            source_url=source_url,
            source_name="quantscope" if source_url else None,
            notes=_notes(analysis, metrics),
        )
        text = yaml.safe_dump(eval_result_entries_to_yaml([entry]), sort_keys=False, allow_unicode=True)
        path = write_atomic(Path(out) / ".eval_results" / f"{metrics.task}.yaml", text)
        written.append(HubResultFile(name, metrics.task, dataset[0], path))
    if not written:
        raise QuantscopeError(
            f"no task of {name!r} in {store.path} has a known hub dataset: the Hub's eval results name "
            "one (.eval_results needs dataset.id); export --format eee instead"
        )
    return tuple(written)


def _variant(analysis: Analysis, requested: str | None) -> str:
    names = analysis.variant_names
    if requested is not None:
        return analysis.variant(requested).name
    if len(names) == 1:
        return names[0]
    raise QuantscopeError(
        f"the store holds {len(names)} variants ({', '.join(names)}); .eval_results belong to one model "
        "repo: pass --variant NAME"
    )


def _hub_dataset(task: str) -> tuple[str, str] | None:
    """(dataset id, task id) of a benchmark quantscope loads from the Hub, else None."""
    from quantscope.tasks.registry import task_class

    try:
        hub = getattr(task_class(task), "hub", None)
    except QuantscopeError:
        return None
    return None if hub is None else (hub.repo_id, hub.config or "default")


def _date(store: Store, metrics: TaskMetrics) -> str | None:
    """When the evaluation was run: its latest run's start (ISO-8601, UTC)."""
    runs = store.runs(metrics.variant, metrics.task)
    if not runs:
        return None
    return datetime.fromtimestamp(max(r.created for r in runs), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _notes(analysis: Analysis, metrics: TaskMetrics) -> str:
    """What the value is and how it was made, in one line."""
    run = analysis.results.select(metrics.variant, metrics.task)
    settings = [analysis.settings[h] for h in dict.fromkeys(run.spec_hash.tolist()) if h in analysis.settings]
    parts = [
        f"quantscope: avg@{metrics.k} accuracy (%) over {metrics.n_items} items, 95% bootstrap CI over items "
        f"[{100 * metrics.ci_low:.1f}, {100 * metrics.ci_high:.1f}]; cap {metrics.max_tokens} tokens, "
        f"truncated {100 * metrics.truncation_rate:.1f}%"
    ]
    if settings:
        s = settings[0]
        thinking = "thinking" if s.thinking else "no thinking"
        parts.append(f"{thinking}, temperature {s.temperature}, top_p {s.top_p}, top_k {s.top_k}")
    comparison = analysis.comparison(metrics.variant, metrics.task)
    if comparison is not None:
        low, high = comparison.decision.ci95
        cot = comparison.cot_token_inflation_ratio
        parts.append(
            f"vs {comparison.baseline}: {100 * comparison.delta:+.1f} points (paired 95% CI over "
            f"{comparison.paired_items} items [{100 * low:+.1f}, {100 * high:+.1f}]; {comparison.verdict})"
        )
        if math.isfinite(cot.ratio):
            parts.append(f"CoT Token Inflation Ratio {cot.ratio:.2f}x (arXiv 2606.25519)")
    return "; ".join(parts)
