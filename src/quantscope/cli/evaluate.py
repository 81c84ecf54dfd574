"""`quantscope eval`, `runs` and `export`: evaluate a variant into the store, list and export the store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress, TaskID, TextColumn

from quantscope.cli.app import (
    DEFAULT_MARGIN_POINTS,
    BaselineOpt,
    StoreOpt,
    app,
    console,
    friendly_errors,
    progress_bars,
    size_or_none,
    store_dir,
)
from quantscope.engines.base import DEFAULT_MAX_TOKENS
from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    from quantscope.evaluate.runner import ProgressUpdate

# eval's parameters that are not RunSpec fields, and the ones named differently on the command line.
_NOT_SPEC_FIELDS = ("spec", "store", "until_decided", "max_k", "margin", "against")
_SPEC_FIELD = {"task": "tasks", "engine_option": "engine_options", "memory": "memory_bytes"}

_RESULTS_FORMATS = {"eee": "eee:export_eee", "hf-eval-results": "hf_eval_results:export_hf_eval_results"}
_RESULTS = (
    "eee (Every Eval Ever 0.3.0 aggregate JSON + instance JSONL, with the paired analysis against the "
    "baseline) | hf-eval-results (.eval_results/*.yaml for one variant's model repo on the Hub)"
)


def _engine_options(pairs: list[str] | None) -> dict[str, Any] | None:
    import yaml

    if not pairs:
        return None
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise QuantscopeError(f"--engine-option {pair!r}: write KEY=VALUE, e.g. dtype=float32")
        options[key.strip()] = yaml.safe_load(value) if value else ""
    return options


def _budgets(text: str | None) -> tuple[int, ...] | None:
    """--forced-budgets 4096,8192 as token counts (None when not given)."""
    if text is None:
        return None
    try:
        return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise QuantscopeError(
            f"--forced-budgets {text!r}: give token counts separated by commas, e.g. 4096,8192,16384"
        ) from None


def _spec_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """eval's flags as RunSpec fields (unset flags are None and keep the spec file's values)."""
    from quantscope.evaluate.spec import RunSpec

    overrides = {
        _SPEC_FIELD.get(name, name): value for name, value in flags.items() if name not in _NOT_SPEC_FIELDS
    }
    overrides["tasks"] = overrides["tasks"] or None
    overrides["engine_options"] = _engine_options(overrides["engine_options"])
    overrides["memory_bytes"] = size_or_none(overrides["memory_bytes"])
    overrides["forced_budgets"] = _budgets(overrides["forced_budgets"])
    stray = set(overrides) - set(RunSpec.model_fields)
    if stray:  # a flag added to `eval_` without a RunSpec field
        raise QuantscopeError(f"internal: eval flags {sorted(stray)} are not RunSpec fields")
    return overrides


def _evaluate(run_spec: Any, store: Any, bars: Any, flags: dict[str, Any]) -> tuple[Any, Any]:
    """(the run's summary, the until-decided summary or None): `run_eval`, or sampling until decided."""
    from quantscope.evaluate.runner import run_eval
    from quantscope.evaluate.until_decided import eval_until_decided

    if not flags["until_decided"]:
        return run_eval(run_spec, store, progress=bars), None
    adaptive = eval_until_decided(
        run_spec,
        store,
        max_k=flags["max_k"],
        margin=flags["margin"] / 100,
        baseline=flags["against"],
        progress=bars,
    )
    return adaptive.first, adaptive


class _Bars:
    """One progress bar per task, fed by the runner's ProgressUpdates: stored of total, then in
    flight, failed, tokens/s and the ETA from tokens."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bars: dict[str, TaskID] = {}

    def __call__(self, update: ProgressUpdate) -> None:
        if update.task not in self.bars:
            self.bars[update.task] = self.progress.add_task(update.task, total=update.total, rate="")
        self.progress.update(self.bars[update.task], completed=update.done, rate=_status(update))


def _status(update: ProgressUpdate) -> str:
    parts = [f"{update.in_flight} in flight"] if update.in_flight else []
    if update.failed:
        parts.append(f"[red]{update.failed} failed[/red]")
    if update.tokens:
        parts.append(f"{update.tokens_per_second:,.0f} tok/s")
    eta = update.eta_seconds
    if eta is not None and update.done + update.failed < update.total:
        parts.append(f"ETA {_clock(eta)}")
    return " · ".join(parts)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


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
    min_p: Annotated[float | None, typer.Option(help="Overrides the preset (0 = off).")] = None,
    presence_penalty: Annotated[
        float | None,
        typer.Option(help="Overrides the preset (0 = off; Qwen3.5's thinking preset uses 1.5)."),
    ] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="Overrides the preset (1 = off).")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help=f"Generation cap in tokens (default {DEFAULT_MAX_TOKENS}).")
    ] = None,
    k: Annotated[int | None, typer.Option("-k", "--samples", help="Samples per item (default 1).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N items of each task.")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed; sample j uses seed + j (default 0).")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="At most this many rows per commit (default 32); also requests per batch for transformers."
        ),
    ] = None,
    store: StoreOpt = None,
    spec: Annotated[Path | None, typer.Option(help="Run spec YAML; flags override its fields.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    engine_option: Annotated[
        list[str] | None,
        typer.Option(
            help="Engine option KEY=VALUE; repeatable. All engines: dtype. transformers: device, "
            "batch_size. openai: concurrency (requests in flight, default 64), timeout_s, max_retries, "
            "abort_after (connection errors in a row that stop the run). vllm: max_model_len (default "
            "the model's; must hold prompt + cap), max_num_seqs (sequences in one step), "
            "gpu_memory_utilization, "
            "enable_prefix_caching, kv_cache_dtype (fp8 changes outputs: an output setting), "
            "tensor_parallel_size (data parallelism: `quantscope sweep` replicas, or vllm serve "
            "--data-parallel-size with --engine openai), speculative_config (e.g. "
            "'{method: mtp, num_speculative_tokens: 2}' for the model's MTP head, GPU only). "
            "Options that change outputs are part of the run's settings; a resume under others is refused."
        ),
    ] = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe this variant was quantized with.")] = None,
    baseline: Annotated[
        bool | None, typer.Option("--baseline/--no-baseline", help="Mark this variant as the baseline.")
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(help="This variant's weight memory, e.g. 30.3GB (for a model behind a server)."),
    ] = None,
    memory_from: Annotated[
        str | None,
        typer.Option(
            help="Read this variant's weight memory from a checkpoint dir or hub id with the same weights "
            "(headers only; for a model behind a server)."
        ),
    ] = None,
    forced_budgets: Annotated[
        str | None,
        typer.Option(
            help="After generating, force an answer at each of these budgets (completion tokens, comma-"
            "separated, at most the cap): every stored sample that did not finish within B is cut at B "
            "tokens, its thinking closed, and made to answer; the report shows the forced curve beside "
            "the censored one."
        ),
    ] = None,
    forced_answer_tokens: Annotated[
        int | None, typer.Option(help="With --forced-budgets: the most answer tokens generated after a cut.")
    ] = None,
    until_decided: Annotated[
        bool,
        typer.Option(
            help="After the first k samples, add one sample per item per round (to this variant and the "
            "baseline alike, every item of each undecided task, never chosen by outcome) until every task's "
            "verdict is decided or --max-k is reached; alpha is spent over the planned rounds."
        ),
    ] = False,
    max_k: Annotated[
        int, typer.Option(help="With --until-decided: at most this many samples per item.")
    ] = 16,
    margin: Annotated[
        float, typer.Option(help="With --until-decided: the equivalence margin (points).")
    ] = DEFAULT_MARGIN_POINTS,
    against: Annotated[
        str | None, typer.Option(help="With --until-decided: the baseline variant (default: the store's).")
    ] = None,
) -> None:
    """Evaluate MODEL on benchmarks, storing every generation; rerun the same command to resume."""
    flags = dict(locals())
    from quantscope.analysis.metrics import summarize_tasks
    from quantscope.cli.views.evaluate import adaptive_lines, cap_warnings, metrics_table, run_lines
    from quantscope.evaluate.spec import load_spec
    from quantscope.store.database import Store

    run_spec = load_spec(spec, _spec_overrides(flags))
    with Store.open(store_dir(store)) as opened:
        with progress_bars(TextColumn("{task.fields[rate]}")) as bars:
            summary, adaptive = _evaluate(run_spec, opened, _Bars(bars), flags)
        metrics = summarize_tasks(opened, summary.variant, [t.task for t in summary.tasks if t.expected])
    console.print(run_lines(summary), highlight=False)
    console.print(metrics_table(metrics, f"{summary.variant} ({opened.path})"))
    console.print(cap_warnings(metrics), highlight=False)
    if adaptive is not None:
        console.print(adaptive_lines(adaptive), highlight=False)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def runs(store: StoreOpt = None) -> None:
    """List what the store holds: per variant and task, samples, accuracy and truncation."""
    from quantscope.analysis import load_results, summarize_all
    from quantscope.cli.views.evaluate import cap_warnings, metrics_table
    from quantscope.store.database import Store

    with Store.existing(store_dir(store)) as opened:
        metrics = summarize_all(load_results(opened))
        path = opened.path
    if not metrics:
        console.print(f"{path} holds no results yet.")
        return
    console.print(metrics_table(metrics, str(path)))
    console.print(cap_warnings(metrics), highlight=False)


@app.command()
@friendly_errors
def export(
    out: Annotated[
        Path,
        typer.Option(help="File to write (.parquet, .csv or .jsonl); a folder for eee / hf-eval-results."),
    ],
    format: Annotated[
        str | None,
        typer.Option("--format", help=f"parquet | csv | jsonl (default: from --out's suffix) | {_RESULTS}."),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="Only these columns, comma-separated (e.g. leave the text out); default all."),
    ] = None,
    store: StoreOpt = None,
    variant: Annotated[str | None, typer.Option(help="Only this variant.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    baseline: BaselineOpt = None,
) -> None:
    """Export every stored generation with its judgement and run metadata to Parquet, CSV or JSON
    Lines, streamed in batches (memory stays flat whatever the store's size), or the results as
    Every Eval Ever files or the Hub's .eval_results."""
    from quantscope.store.database import Store
    from quantscope.store.export import export_results

    if format in _RESULTS_FORMATS:
        return _export_results(format, out, store, {"variant": variant, "task": task, "baseline": baseline})
    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    with Store.existing(store_dir(store)) as opened:
        count = export_results(opened, out, format, columns=chosen, variant=variant, task=task)
    console.print(f"wrote {count} rows to {out}")


def _export_results(fmt: str, out: Path, store: Path | None, options: dict[str, str | None]) -> None:
    """export --format eee / hf-eval-results: the writer in `quantscope.report` (with --variant,
    --task and --baseline), then what it wrote."""
    from quantscope.store.database import Store
    from quantscope.util import import_target

    write = import_target(f"quantscope.report.{_RESULTS_FORMATS[fmt]}")
    with Store.existing(store_dir(store)) as opened:
        written = write(opened, out, **options)
    for part in written:
        console.print(f"wrote {part}", soft_wrap=True, highlight=False)
