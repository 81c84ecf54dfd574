"""`quantscope sweep`: a matrix of quantize and eval jobs, here or on Ray, resumable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, TaskID, TextColumn

from quantscope.cli.app import JsonOpt, app, console, friendly_errors, progress_bars, quiet_libraries

if TYPE_CHECKING:
    from quantscope.sweep import Jobs, Sweep, SweepEvent, SweepResult
    from quantscope.sweep.estimate import SweepEstimate


class _SweepBars:
    """A bar for the whole sweep (jobs done / running / failed, tokens/s) and one per running job."""

    def __init__(self, progress: Progress, jobs: int) -> None:
        self.progress, self.started = progress, time.perf_counter()
        self.overall = progress.add_task("sweep", total=jobs, note="")
        self.bars: dict[str, TaskID] = {}
        self.ended: dict[str, str] = {}
        self.tokens: dict[str, int] = {}

    def __call__(self, event: SweepEvent) -> None:
        if event.state == "running":
            self._running(event)
        else:
            self.ended[event.job] = event.state
            if event.job in self.bars:
                self.progress.remove_task(self.bars.pop(event.job))
        self._overall()

    def _running(self, event: SweepEvent) -> None:
        if event.job not in self.bars:
            self.bars[event.job] = self.progress.add_task(event.job, total=None, note="")
        update = event.update
        if update is not None:
            self.tokens[f"{event.job} {update.task}"] = update.tokens
            note = f"{update.task} {update.tokens_per_second:,.0f} tok/s"
            self.progress.update(self.bars[event.job], completed=update.done, total=update.total, note=note)

    def _overall(self) -> None:
        states = list(self.ended.values())
        failed = sum(s in ("failed", "blocked") for s in states)
        rate = sum(self.tokens.values()) / max(time.perf_counter() - self.started, 1e-9)
        note = f"{len(self.bars)} running, {failed} failed, {rate:,.0f} tok/s"
        self.progress.update(self.overall, completed=len(states), note=note)


@app.command()
@friendly_errors
def sweep(
    spec: Annotated[
        Path, typer.Argument(help="The sweep YAML (models, recipes, tasks, settings; see examples/).")
    ],
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="auto|local|ADDRESS",
            help="Run the jobs on Ray: `auto` joins the cluster `ray start` or RAY_ADDRESS names on this "
            "machine (else starts a local instance); `local` always starts one (sized by the file's `ray:` "
            "block); ADDRESS joins that cluster (e.g. ray://head:10001).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List the jobs, what is stored, and their GPU-hours; run nothing."),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: the file's `out`, else ./NAME).")
    ] = None,
    json_output: JsonOpt = False,
    verbose: Annotated[
        bool, typer.Option(help="Show AutoRound's and transformers' own logs and bars.")
    ] = False,
) -> None:
    """Run a sweep: quantize every (model, recipe), evaluate every variant under every setting on
    every task, then write one report per (model, setting) store.

    Resumable: finished exports and stored generations are kept, so rerunning after a crash, a
    killed driver or a failed job does only what is left. Without --ray, jobs run here one after
    another; with it, on a Ray cluster, each with its own GPUs (see the README for a GPU node).
    """
    from quantscope.sweep import load_sweep, plan_jobs
    from quantscope.sweep.estimate import estimate_sweep

    if not verbose:
        quiet_libraries()
    loaded = load_sweep(spec, out=out)
    jobs = plan_jobs(loaded)
    if dry_run:
        _show_estimate(estimate_sweep(loaded, jobs), json_output)
        return
    result = _run(loaded, jobs, ray)
    _show_result(result)
    if result.failed:
        raise typer.Exit(1)


def _show_estimate(estimate: SweepEstimate, as_json: bool) -> None:
    """`sweep --dry-run`: the estimate as JSON or as a table."""
    from quantscope.cli.views.sweep import sweep_estimate_table
    from quantscope.sweep.estimate import estimate_json

    if as_json:
        console.print_json(estimate_json(estimate))
    else:
        console.print(sweep_estimate_table(estimate))


def _run(loaded: Sweep, jobs: Jobs, ray: str | None) -> SweepResult:
    """Run `jobs` here or on the Ray cluster `ray` names, a progress bar for the sweep and one per
    running job."""
    from quantscope.sweep import run_sweep

    if ray is None and loaded.eval.replicas > 1:
        console.print(
            f"[yellow]replicas {loaded.eval.replicas} apply on Ray (--ray); here one engine runs[/]"
        )
    with progress_bars(TextColumn("{task.fields[note]}")) as bars:
        return run_sweep(
            loaded, ray_address=ray, progress=_SweepBars(bars, len(jobs.quantize) + len(jobs.evals))
        )


def _show_result(result: SweepResult) -> None:
    """A finished sweep: the jobs' table, each report written, and why a store has none."""
    from quantscope.cli.views.sweep import sweep_result_table

    console.print(sweep_result_table(result))
    for path in result.reports:
        console.print(f"report: {path}", soft_wrap=True, highlight=False)
    for store, why in result.report_errors.items():
        console.print(f"[yellow]no report for {store}[/]: {why}", soft_wrap=True)
