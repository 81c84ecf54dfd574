"""`quantscope compare`, `recommend` and `report`: read the store, decide, show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from quantscope.cli.app import (
    DEFAULT_MARGIN_POINTS,
    AllowMismatchOpt,
    BaselineOpt,
    BudgetOpt,
    GpuMemoryOpt,
    GpuOpt,
    JsonOpt,
    KvDtypeOpt,
    MarginOpt,
    MarkersOpt,
    ModelConfigOpt,
    PriceOpt,
    PromptTokensOpt,
    SignalProgress,
    StoreOpt,
    TpOpt,
    app,
    console,
    friendly_errors,
    gpu_budget,
    size_or_none,
    store_dir,
    trace_rules,
)
from quantscope.plan.serving import DEFAULT_PROMPT_TOKENS


@app.command()
@friendly_errors
def compare(
    store: StoreOpt = None,
    baseline: BaselineOpt = None,
    task: Annotated[
        list[str] | None, typer.Option("--task", "-t", help="Only these tasks; repeatable.")
    ] = None,
    margin: MarginOpt = DEFAULT_MARGIN_POINTS,
    allow_mismatch: AllowMismatchOpt = False,
    settings_study: Annotated[
        bool,
        typer.Option(
            help="Compare runs of one model under different settings (one variant name per setting, e.g. "
            "9b-t0.6 and 9b-t1.0 with --baseline 9b-t0.6): sampling, cap and thinking may differ."
        ),
    ] = False,
    markers: MarkersOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare each variant with the baseline, paired on the items both ran: the accuracy delta with
    its CI and verdict (better / worse / equivalent within --margin / undecided, with the samples
    that would decide it), truncation and thinking; for a task with levels, the same by level;
    then why thinking differs, read from the stored text (loops, hesitations, answers found and not
    given). Refuses variants generated under other settings."""
    from quantscope.analysis.study import read_study
    from quantscope.cli.views.analysis import comparison_json, comparison_views
    from quantscope.store.database import Store

    with Store.existing(store_dir(store)) as opened:
        study = read_study(
            opened, baseline, tasks=task or None, margin=margin / 100, allow_mismatch=allow_mismatch,
            settings_study=settings_study, rules=trace_rules(markers), progress=SignalProgress(),
        )  # fmt: skip
    if as_json:
        console.print_json(comparison_json(study))
        return
    for part in comparison_views(study, width=console.width):
        console.print(part)


@app.command()
@friendly_errors
def recommend(
    budget: BudgetOpt = None,
    store: StoreOpt = None,
    baseline: BaselineOpt = None,
    margin: MarginOpt = DEFAULT_MARGIN_POINTS,
    allow_mismatch: AllowMismatchOpt = False,
    gpu: GpuOpt = None,
    gpu_memory: GpuMemoryOpt = None,
    tp: TpOpt = 1,
    kv_dtype: KvDtypeOpt = "auto",
    prompt_tokens: PromptTokensOpt = DEFAULT_PROMPT_TOKENS,
    price: PriceOpt = None,
    model_config: ModelConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The best variant that fits a memory budget, the runners-up and why they lost; when the data
    cannot decide, says so and names the evaluation that would.

    With --gpu the budget is a GPU: a variant must serve one sequence of prompt + cap tokens once
    vLLM has paged its KV cache and linear-attention state, and every variant shows how many of its
    measured answers fit at once, a decode-throughput upper bound, correct answers per GPU-hour and,
    with --price, the cost of 1,000 correct answers."""
    from quantscope.analysis.capacity import read_config
    from quantscope.analysis.compare import analyze
    from quantscope.analysis.recommend import recommend as choose
    from quantscope.cli.views.analysis import recommendation_panel
    from quantscope.store.database import Store

    with Store.existing(store_dir(store)) as opened:
        analysis = analyze(opened, baseline, margin=margin / 100, allow_mismatch=allow_mismatch)
    on_gpu = gpu_budget(gpu, gpu_memory, tp, kv_dtype, prompt_tokens, price)
    config = read_config(model_config) if model_config else None
    picked = choose(analysis, size_or_none(budget), gpu=on_gpu, config=config)
    if as_json:
        console.print_json(json.dumps(picked.to_dict()))
    else:
        console.print(recommendation_panel(picked, width=console.width))


@app.command()
@friendly_errors
def report(
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
    store: StoreOpt = None,
    baseline: BaselineOpt = None,
    budget: BudgetOpt = None,
    examples: Annotated[int, typer.Option(help="Example generations shown per variant.")] = 3,
    title: Annotated[str, typer.Option(help="Report title.")] = "quantscope report",
    margin: MarginOpt = DEFAULT_MARGIN_POINTS,
    allow_mismatch: AllowMismatchOpt = False,
    gpu: GpuOpt = None,
    gpu_memory: GpuMemoryOpt = None,
    tp: TpOpt = 1,
    kv_dtype: KvDtypeOpt = "auto",
    prompt_tokens: PromptTokensOpt = DEFAULT_PROMPT_TOKENS,
    price: PriceOpt = None,
    model_config: ModelConfigOpt = None,
) -> None:
    """Write one self-contained HTML report (works offline) and print the summary; with --gpu the
    recommendation is for that GPU, with each variant's capacity and throughput there."""
    from quantscope.analysis.capacity import read_config
    from quantscope.cli.views.analysis import comparison_table, recommendation_panel
    from quantscope.report import build_report

    on_gpu = gpu_budget(gpu, gpu_memory, tp, kv_dtype, prompt_tokens, price)
    written = build_report(
        store_dir(store), out, baseline=baseline, budget_bytes=size_or_none(budget),
        examples_per_variant=examples, title=title, margin=margin / 100, allow_mismatch=allow_mismatch,
        gpu=on_gpu, model_config=read_config(model_config) if model_config else None,
        progress=SignalProgress(),
    )  # fmt: skip
    console.print(comparison_table(written.analysis, width=console.width))
    console.print(recommendation_panel(written.recommendation, width=console.width))
    console.print(f"wrote {written.path} ({written.nbytes / 1e6:.1f} MB)", soft_wrap=True, highlight=False)
