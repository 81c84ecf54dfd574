"""`quantscope compare`, `recommend`, `report` and `demo`: read the store, decide, show, and run it all."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from quantscope.cli.app import app, console, friendly_errors

if TYPE_CHECKING:
    from quantscope.demo import DemoProgress

_STORE_HELP = "Project directory holding quantscope.db (default: $QUANTSCOPE_STORE or the current directory)."
_BASELINE_HELP = "Variant to compare against (default: the one marked baseline, else a bf16 recipe)."
_BUDGET_HELP = "Weight-memory budget, e.g. 24GB, 24GiB, 80e9 (default: no limit)."


def _store_dir(store: Path | None) -> Path:
    from quantscope.store import default_store_dir

    return store if store is not None else default_store_dir()


def _budget(text: str | None) -> int | None:
    from quantscope.recipe import parse_size

    return None if text is None else parse_size(text)


@app.command()
@friendly_errors
def compare(
    store: Annotated[Path | None, typer.Option(help=_STORE_HELP)] = None,
    baseline: Annotated[str | None, typer.Option(help=_BASELINE_HELP)] = None,
    task: Annotated[
        list[str] | None, typer.Option("--task", "-t", help="Only these tasks; repeatable.")
    ] = None,
) -> None:
    """Compare each variant with the baseline: accuracy delta with a paired CI, truncation, thinking."""
    from quantscope.analysis.compare import analyze
    from quantscope.report.terminal import comparison_table
    from quantscope.store import Store

    with Store.existing(_store_dir(store)) as opened:
        analysis = analyze(opened, baseline, tasks=task or None)
    console.print(comparison_table(analysis))
    for c in analysis.comparisons:
        if c.explained_by_truncation:
            console.print(
                f"[yellow]{c.variant} on {c.task}: accuracy loss mostly explained by truncation[/] "
                f"({100 * c.accuracy_finished:.1f}% correct among finished vs "
                f"{100 * c.baseline_accuracy_finished:.1f}% for {c.baseline}); try a larger --max-tokens.",
                highlight=False,
            )


@app.command()
@friendly_errors
def recommend(
    budget: Annotated[str | None, typer.Option(help=_BUDGET_HELP)] = None,
    store: Annotated[Path | None, typer.Option(help=_STORE_HELP)] = None,
    baseline: Annotated[str | None, typer.Option(help=_BASELINE_HELP)] = None,
    tie_tolerance: Annotated[
        float,
        typer.Option(
            help="Accuracy gap (points) under which a smaller, not significantly worse variant wins."
        ),
    ] = 2.0,
) -> None:
    """The best variant that fits a memory budget, the runners-up and why they lost."""
    from quantscope.analysis.compare import analyze
    from quantscope.analysis.recommend import recommend as choose
    from quantscope.report.terminal import recommendation_panel
    from quantscope.store import Store

    with Store.existing(_store_dir(store)) as opened:
        analysis = analyze(opened, baseline)
    console.print(recommendation_panel(choose(analysis, _budget(budget), tie_tolerance=tie_tolerance / 100)))


@app.command()
@friendly_errors
def report(
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
    store: Annotated[Path | None, typer.Option(help=_STORE_HELP)] = None,
    baseline: Annotated[str | None, typer.Option(help=_BASELINE_HELP)] = None,
    budget: Annotated[str | None, typer.Option(help=_BUDGET_HELP)] = None,
    examples: Annotated[int, typer.Option(help="Example generations shown per variant.")] = 3,
    title: Annotated[str, typer.Option(help="Report title.")] = "quantscope report",
) -> None:
    """Write one self-contained HTML report (works offline) and print the summary."""
    from quantscope.report import build_report
    from quantscope.report.terminal import comparison_table, recommendation_panel

    written = build_report(
        _store_dir(store),
        out,
        baseline=baseline,
        budget_bytes=_budget(budget),
        examples_per_variant=examples,
        title=title,
    )
    console.print(comparison_table(written.analysis))
    console.print(recommendation_panel(written.recommendation))
    console.print(f"wrote {written.path} ({written.nbytes / 1e6:.1f} MB)", soft_wrap=True, highlight=False)


def _quiet_libraries() -> None:
    """Keep the demo's own progress bars readable: AutoRound logs only errors, and the libraries'
    tqdm bars and transformers' info messages are off (a user's own settings win)."""
    import os

    os.environ.setdefault("AR_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


class _DemoBars:
    """One bar per (stage, variant), fed by the demo's progress events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bars: dict[str, TaskID] = {}

    def __call__(self, event: DemoProgress) -> None:
        key = f"{event.stage} {event.variant or ''}".strip()
        if key not in self.bars:
            self.bars[key] = self.progress.add_task(key, total=event.total or None, note="")
        self.progress.update(
            self.bars[key], completed=event.done, total=event.total or None, note=event.message
        )


@app.command()
@friendly_errors
def demo(
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for checkpoints, store and report (default: quantscope-demo[-quick])."),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Fewer variants and items (about two minutes on a CPU).")
    ] = False,
    budget: Annotated[
        str | None,
        typer.Option(help="Memory budget for the recommendation (default: half the BF16 weights)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option(help="Show AutoRound's and transformers' own logs and bars.")
    ] = False,
) -> None:
    """The whole loop offline on the bundled tiny reasoner: plan, quantize, evaluate, report, recommend.

    Rerunning with the same --out resumes: finished checkpoints and stored generations are reused.
    """
    if not verbose:
        _quiet_libraries()
    from rich.table import Table

    from quantscope.demo import run_demo
    from quantscope.recipe import format_size
    from quantscope.report.terminal import comparison_table, recommendation_panel

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
    )
    out = out if out is not None else Path("quantscope-demo-quick" if quick else "quantscope-demo")
    with progress:
        result = run_demo(out, quick=quick, progress=_DemoBars(progress), budget_bytes=_budget(budget))
    plan = Table(title="variants", title_justify="left")
    for name in ("recipe", "status", "predicted", "exported", "quantize s"):
        plan.add_column(name, justify="left" if name in ("recipe", "status") else "right")
    for variant in result.variants:
        exported = "–" if variant.memory_bytes is None else format_size(variant.memory_bytes)
        seconds = f"{variant.seconds:.0f}" if variant.seconds else "–"
        plan.add_row(variant.preset, variant.status, format_size(variant.predicted_bytes), exported, seconds)
    console.print(plan)
    for variant in result.variants:
        if variant.status == "failed":
            console.print(f"[yellow]skipped {variant.preset}:[/] {variant.detail}", highlight=False)
    console.print(comparison_table(result.report.analysis))
    console.print(recommendation_panel(result.report.recommendation))
    # Paths are printed unwrapped so they can be copied whatever the terminal's width.
    console.print(
        f"report: {result.report.path}   store: {result.store_dir}   ({result.seconds:.0f} s)",
        soft_wrap=True,
        highlight=False,
    )
