"""The typer application and what every command module shares: consoles, the error wrapper,
options declared once, and progress bars.

No logic lives in the CLI: every command is argument parsing, one library call and rendering
(`quantscope.cli.views.analysis`). Each stage's commands live in their own module of this package
and register themselves on `app` (`quantscope.cli.main` imports them all); a `QuantscopeError`
prints as one red line (exit status 2) instead of a traceback.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    from quantscope.analysis.traces import TraceRules
    from quantscope.plan.serving import GpuBudget

app = typer.Typer(
    name="quantscope",
    help=(
        "Which quantized model and recipe should I run, and what does quantization cost my "
        "reasoning model in accuracy, memory and extra thinking?"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def reflowed(text: str) -> str:
    """`text` with the line breaks inside each paragraph (blank-line separated) joined by spaces.

    Docstrings are wrapped by hand at the source's width; Typer's rich mode keeps those breaks in the
    command list and in every paragraph after the first (typer/rich_utils.py, `_make_command_help`,
    `_fix_linebreaks`), so at any other terminal width a sentence breaks where the source did. Joined,
    the terminal wraps it. A paragraph of list items ("- ", "* ") or marked `\\b` keeps its lines.
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        paragraph if _keeps_lines(paragraph) else " ".join(paragraph.split()) for paragraph in paragraphs
    )


def _keeps_lines(paragraph: str) -> bool:
    lines = paragraph.splitlines()
    return paragraph.startswith("\b") or any(line.lstrip().startswith(("- ", "* ")) for line in lines)


def reflow_help(group: typer.Typer) -> None:
    """Reflow the help of `group`, its commands and its sub-groups (see `reflowed`), in place."""
    if isinstance(group.info.help, str):
        group.info.help = reflowed(group.info.help)
    for command in group.registered_commands:
        text = command.help if command.help is not None else inspect.getdoc(command.callback)
        if text:
            command.help = reflowed(text)
    for sub in group.registered_groups:
        if isinstance(sub.help, str):
            sub.help = reflowed(sub.help)
        if sub.typer_instance is not None:
            reflow_help(sub.typer_instance)


err_console = Console(stderr=True)

# ---- options shared by several commands -------------------------------------------------------

ModelArg = Annotated[str, typer.Argument(help="Local checkpoint dir / .safetensors file, or a hub model id.")]
RevisionOpt = Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        help="Project directory holding quantscope.db (default: $QUANTSCOPE_STORE or the current directory)."
    ),
]
BaselineOpt = Annotated[
    str | None,
    typer.Option(help="Variant to compare against (default: the one marked baseline, else a bf16 recipe)."),
]
DEFAULT_MARGIN_POINTS = 2.0
"""`analysis.decide.DEFAULT_MARGIN` in accuracy points, the margin options' default. Kept here so
`--help` imports no numpy; tests/test_cli_thin.py checks the two agree."""
MarginOpt = Annotated[
    float,
    typer.Option(
        help="Equivalence margin in accuracy points: equivalent means the paired 90% CI of the difference "
        "lies within ±margin."
    ),
]
MarkersOpt = Annotated[
    str | None,
    typer.Option(
        help="Hesitation markers counted in the thinking where they open a sentence or clause, "
        "comma-separated words or phrases (any case), for another language or model. Default: wait, "
        "hmm, alternatively, hold on, on second thought ('But wait' counts once)."
    ),
]
AllowMismatchOpt = Annotated[
    bool,
    typer.Option(
        help="Compare variants generated under different caps, thinking modes, sampling, chat templates or "
        "items anyway (the output says so)."
    ),
]
BudgetOpt = Annotated[
    str | None, typer.Option(help="Weight-memory budget, e.g. 24GB, 24GiB, 80e9 (default: no limit).")
]

GpuOpt = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        help="A GPU from the table (H200, B200, A100, L4, ...; more via the YAML file $QUANTSCOPE_GPUS "
        "names): its memory and bandwidth size the KV cache, the concurrency and the throughput.",
    ),
]
GpuMemoryOpt = Annotated[
    str | None,
    typer.Option(
        help="GPU memory per GPU instead of a --gpu from the table, e.g. 24GB, 24GiB (overrides --gpu's)."
    ),
]
ContextOpt = Annotated[
    int, typer.Option(help="Tokens per sequence (vLLM's max_model_len) the KV cache must hold.")
]
KvDtypeOpt = Annotated[str, typer.Option(help="KV cache dtype: auto (the model's), fp8, bfloat16, float16.")]
TpOpt = Annotated[int, typer.Option("--tp", help="GPUs per model replica (tensor parallel).")]
PromptTokensOpt = Annotated[
    int, typer.Option(help="Prompt tokens assumed per sequence (the store records completions only).")
]
PriceOpt = Annotated[
    float | None, typer.Option(help="Price per GPU-hour: adds the cost of 1,000 correct answers.")
]
ModelConfigOpt = Annotated[
    str | None,
    typer.Option(help="The model's config.json (default: from the variants' local checkpoints)."),
]


def gpu_budget(
    gpu: str | None, gpu_memory: str | None, tp: int, kv_dtype: str, prompt_tokens: int, price: float | None
) -> GpuBudget | None:
    """The GPU budget of `recommend` / `report` (None without --gpu). --gpu-memory overrides the
    table's memory; the bandwidth always comes from --gpu."""
    from quantscope.gpus import get_gpu
    from quantscope.plan.serving import GpuBudget, ServingOptions

    if gpu is None:
        if gpu_memory is not None:
            raise QuantscopeError("--gpu-memory needs --gpu (its bandwidth drives the throughput)")
        return None
    options = ServingOptions(kv_dtype=kv_dtype, tp=tp)
    return GpuBudget.on(get_gpu(gpu), size_or_none(gpu_memory), options, prompt_tokens, price)


def store_dir(store: Path | None) -> Path:
    """The store directory a command uses: `--store`, else `$QUANTSCOPE_STORE`, else the current one."""
    from quantscope.store.database import default_store_dir

    return store if store is not None else default_store_dir()


def trace_rules(markers: str | None) -> TraceRules:
    """The trace rules for `--markers` (None: the defaults)."""
    from quantscope.analysis.traces import TraceRules

    if markers is None:
        return TraceRules()
    words = tuple(word.strip() for word in markers.split(",") if word.strip())
    if not words:
        raise QuantscopeError(f"--markers {markers!r} names no marker: give comma-separated words")
    return TraceRules(markers=words)


def size_or_none(text: str | None) -> int | None:
    """Bytes from a size flag (24GB, 24GiB, 80e9), or None when the flag was not given."""
    from quantscope.util import parse_size

    return None if text is None else parse_size(text)


def quiet_libraries() -> None:
    """Keep quantscope's own progress bars readable (demo, sweep): AutoRound logs only errors, and
    the libraries' tqdm bars and transformers' info messages are off (a user's own settings win)."""
    import os

    os.environ.setdefault("AR_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def progress_bars(*extra: ProgressColumn) -> Progress:
    """A progress display (description, bar, done/total, `extra` columns, elapsed) on the console."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *extra)
    return Progress(*columns, TimeElapsedColumn(), console=console)


class SignalProgress:
    """The progress of a pass computing stored trace signals (`analysis.signal_table.Progress`),
    on stderr (stdout may carry --json): its one-line reason, then a bar until it is done."""

    def __init__(self) -> None:
        self._bar: Progress | None = None

    def __call__(self, done: int, total: int, note: str) -> None:
        if self._bar is None:
            err_console.print(note, highlight=False, soft_wrap=True)
            self._bar = Progress(
                TextColumn("[bold]trace signals"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=err_console, transient=True,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task("signals", total=total)
        self._bar.update(self._task, completed=done)
        if done >= total:
            self._bar.stop()


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a CLI command so a QuantscopeError prints one clear line and exits 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except QuantscopeError as error:
            # escaped: a message may hold brackets (pip install 'quantscope[inspect]') rich would eat
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
            raise typer.Exit(code=2) from None

    return wrapper


@app.callback()
def main() -> None:
    """Plan, quantize, evaluate and compare quantized reasoning models."""


@app.command()
def version() -> None:
    """Print the quantscope version."""
    from quantscope import __version__

    console.print(__version__)
