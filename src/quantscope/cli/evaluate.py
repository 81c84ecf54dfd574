"""`quantscope eval`, `runs` and `export`: evaluate a variant into the store, list and export the store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from quantscope.cli.app import app, console, friendly_errors
from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    from quantscope.analysis import TaskMetrics
    from quantscope.runner import ProgressUpdate

_STORE_HELP = "Project directory holding quantscope.db (default: $QUANTSCOPE_STORE or the current directory)."


def _store_dir(store: Path | None) -> Path:
    from quantscope.store import default_store_dir

    return store if store is not None else default_store_dir()


def _engine_options(pairs: list[str] | None) -> dict[str, Any] | None:
    if not pairs:
        return None
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise QuantscopeError(f"--engine-option {pair!r}: write KEY=VALUE, e.g. dtype=float32")
        options[key.strip()] = yaml.safe_load(value) if value else ""
    return options


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}%"


def metrics_table(metrics: list[TaskMetrics], title: str) -> Table:
    """A rich table of per (variant, task) metrics: accuracy with its 95% CI, pass@k,
    truncation, accuracy among finished samples, and thinking / answer tokens."""
    table = Table(title=title)
    for name in ("variant", "task", "items", "k", "cap"):
        table.add_column(name, justify="left" if name in ("variant", "task") else "right")
    for name in (
        "accuracy [95% CI]",
        "pass@k",
        "truncated",
        "acc finished",
        "think tok μ/p90",
        "answer tok μ",
    ):
        table.add_column(name, justify="right")
    for m in metrics:
        table.add_row(
            m.variant,
            m.task,
            str(m.n_items),
            str(m.k),
            str(m.max_tokens),
            f"{_percent(m.accuracy)} [{_percent(m.ci_low)}–{_percent(m.ci_high)}]",
            _percent(m.pass_at_k),
            _percent(m.truncation_rate),
            _percent(m.accuracy_finished),
            f"{m.thinking_tokens.mean:.0f}/{m.thinking_tokens.p90:.0f}",
            f"{m.answer_tokens.mean:.0f}",
        )
    return table


class _Bars:
    """One progress bar per task, fed by the runner's ProgressUpdates (items done, tokens/s)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bars: dict[str, TaskID] = {}

    def __call__(self, update: ProgressUpdate) -> None:
        if update.task not in self.bars:
            self.bars[update.task] = self.progress.add_task(update.task, total=update.total, rate="")
        rate = f"{update.tokens / update.seconds:,.0f} tok/s" if update.seconds > 0 and update.tokens else ""
        self.progress.update(self.bars[update.task], completed=update.done, rate=rate)


@app.command(name="eval")
@friendly_errors
def eval_(
    model: Annotated[
        str | None, typer.Argument(help="Checkpoint directory, hub id, or served model name.")
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", "-t", help="Task NAME, or NAME=FILE for a local JSONL/Parquet; repeatable."),
    ] = None,
    engine: Annotated[str | None, typer.Option(help="transformers | vllm | openai.")] = None,
    variant: Annotated[
        str | None, typer.Option(help="Variant name (default: the model's last part).")
    ] = None,
    thinking: Annotated[bool | None, typer.Option("--thinking/--no-thinking", help="Reasoning mode.")] = None,
    preset: Annotated[str | None, typer.Option(help="Sampling preset: qwen3.5-thinking, greedy, ...")] = None,
    temperature: Annotated[float | None, typer.Option(help="Overrides the preset.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Overrides the preset.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Overrides the preset (0 = off).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Generation cap in tokens (default 32768).")] = None,
    k: Annotated[int | None, typer.Option("-k", "--samples", help="Samples per item (default 1).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N items of each task.")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed; sample j uses seed + j (default 0).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Requests per committed chunk (default 32).")] = None,
    store: Annotated[Path | None, typer.Option(help=_STORE_HELP)] = None,
    spec: Annotated[Path | None, typer.Option(help="Run spec YAML; flags override its fields.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    engine_option: Annotated[
        list[str] | None, typer.Option(help="Engine option KEY=VALUE (e.g. dtype=float32); repeatable.")
    ] = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe this variant was quantized with.")] = None,
    baseline: Annotated[
        bool | None, typer.Option("--baseline/--no-baseline", help="Mark this variant as the baseline.")
    ] = None,
) -> None:
    """Evaluate MODEL on benchmarks, storing every generation; rerun the same command to resume."""
    from quantscope.analysis import load_results, summarize
    from quantscope.runner import load_spec, run_eval
    from quantscope.store import Store

    overrides = {
        "model": model,
        "tasks": task or None,
        "engine": engine,
        "variant": variant,
        "thinking": thinking,
        "preset": preset,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_tokens": max_tokens,
        "k": k,
        "limit": limit,
        "seed": seed,
        "batch_size": batch_size,
        "base_url": base_url,
        "engine_options": _engine_options(engine_option),
        "recipe": recipe,
        "baseline": baseline,
    }
    run_spec = load_spec(spec, overrides)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with Store.open(_store_dir(store)) as opened:
        with progress:
            summary = run_eval(run_spec, opened, progress=_Bars(progress))
        for done in summary.tasks:
            console.print(
                f"{done.task}: {done.generated} generated, {done.stored_before} already stored "
                f"({done.tokens:,} tokens in {done.seconds:.1f} s)"
            )
        results = load_results(opened, variant=summary.variant)
        metrics = [summarize(results, summary.variant, t.task) for t in summary.tasks if t.expected]
    console.print(metrics_table(metrics, f"{summary.variant} ({opened.path})"))


@app.command()
@friendly_errors
def runs(store: Annotated[Path | None, typer.Option(help=_STORE_HELP)] = None) -> None:
    """List what the store holds: per variant and task, samples, accuracy and truncation."""
    from quantscope.analysis import load_results, summarize_all
    from quantscope.store import Store

    with Store.existing(_store_dir(store)) as opened:
        metrics = summarize_all(load_results(opened))
        path = opened.path
    if not metrics:
        console.print(f"{path} holds no results yet.")
        return
    console.print(metrics_table(metrics, str(path)))


@app.command()
@friendly_errors
def export(
    out: Annotated[Path, typer.Option(help="File to write (.parquet or .csv).")],
    format: Annotated[
        str | None, typer.Option("--format", help="parquet | csv (default: from --out's suffix).")
    ] = None,
    store: Annotated[Path | None, typer.Option(help=_STORE_HELP)] = None,
    variant: Annotated[str | None, typer.Option(help="Only this variant.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
) -> None:
    """Export every stored generation with its judgement and run metadata to Parquet or CSV."""
    from quantscope.store import Store

    fmt = format or ("csv" if out.suffix.lower() == ".csv" else "parquet")
    with Store.existing(_store_dir(store)) as opened:
        count = opened.export(out, fmt, variant=variant, task=task)  # type: ignore[arg-type]
    console.print(f"wrote {count} rows to {out}")
