"""`quantscope compare`, `recommend` and `report`: read the store, decide, show."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantscope.cli.app import (
    BaselineOpt,
    BudgetOpt,
    StoreOpt,
    app,
    console,
    friendly_errors,
    size_or_none,
    store_dir,
)


@app.command()
@friendly_errors
def compare(
    store: StoreOpt = None,
    baseline: BaselineOpt = None,
    task: Annotated[
        list[str] | None, typer.Option("--task", "-t", help="Only these tasks; repeatable.")
    ] = None,
) -> None:
    """Compare each variant with the baseline: accuracy delta with a paired CI, truncation, thinking."""
    from quantscope.analysis.compare import analyze
    from quantscope.report.terminal import comparison_table, truncation_notes
    from quantscope.store import Store

    with Store.existing(store_dir(store)) as opened:
        analysis = analyze(opened, baseline, tasks=task or None)
    console.print(comparison_table(analysis))
    console.print(truncation_notes(analysis), highlight=False)


@app.command()
@friendly_errors
def recommend(
    budget: BudgetOpt = None,
    store: StoreOpt = None,
    baseline: BaselineOpt = None,
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

    with Store.existing(store_dir(store)) as opened:
        analysis = analyze(opened, baseline)
    console.print(
        recommendation_panel(choose(analysis, size_or_none(budget), tie_tolerance=tie_tolerance / 100))
    )


@app.command()
@friendly_errors
def report(
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
    store: StoreOpt = None,
    baseline: BaselineOpt = None,
    budget: BudgetOpt = None,
    examples: Annotated[int, typer.Option(help="Example generations shown per variant.")] = 3,
    title: Annotated[str, typer.Option(help="Report title.")] = "quantscope report",
) -> None:
    """Write one self-contained HTML report (works offline) and print the summary."""
    from quantscope.report import build_report
    from quantscope.report.terminal import comparison_table, recommendation_panel

    written = build_report(
        store_dir(store), out, baseline=baseline, budget_bytes=size_or_none(budget),
        examples_per_variant=examples, title=title,
    )  # fmt: skip
    console.print(comparison_table(written.analysis))
    console.print(recommendation_panel(written.recommendation))
    console.print(f"wrote {written.path} ({written.nbytes / 1e6:.1f} MB)", soft_wrap=True, highlight=False)
