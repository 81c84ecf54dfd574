"""`quantscope demo`: the whole loop offline on the bundled tiny reasoner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, TaskID, TextColumn

from quantscope.cli.app import app, console, friendly_errors, progress_bars, quiet_libraries, size_or_none

if TYPE_CHECKING:
    from quantscope.demo import DemoProgress


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
    gpu: Annotated[
        str,
        typer.Option(
            help="GPU whose kernels (vLLM 0.32, per layer kind) the evaluation twins emulate (B200: "
            "NVFP4/MXFP4 as W4A4, FP8 as W8A8; H100: NVFP4 weight-only, MXFP4 dense W4A8; A100: "
            "everything weight-only; `quantscope doctor` lists them). One GPU per --out folder."
        ),
    ] = "B200",
    verbose: Annotated[
        bool, typer.Option(help="Show AutoRound's and transformers' own logs and bars.")
    ] = False,
) -> None:
    """The whole loop offline on the bundled tiny reasoner: plan, quantize, evaluate, report, recommend.

    Rerunning with the same --out resumes: finished checkpoints and stored generations are reused.
    """
    if not verbose:
        quiet_libraries()
    from quantscope.cli.views.demo import demo_paths, demo_views
    from quantscope.demo import run_demo

    out = out if out is not None else Path("quantscope-demo-quick" if quick else "quantscope-demo")
    with progress_bars(TextColumn("{task.fields[note]}")) as bars:
        result = run_demo(
            out, quick=quick, progress=_DemoBars(bars), budget_bytes=size_or_none(budget), gpu=gpu
        )
    for part in demo_views(result, width=console.width):
        console.print(part)
    # Paths are printed unwrapped so they can be copied whatever the terminal's width.
    console.print(demo_paths(result), soft_wrap=True, highlight=False)
