"""The typer application and the helpers every command module shares.

No logic lives in the CLI: every command is one library call plus rendering. Each stage's
commands live in their own module of this package (`inspect_plan`, `quantize`, `evaluate`,
`report`, `profile`) and register themselves on `app`; a `QuantscopeError` prints as one red
line (exit status 2) instead of a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from quantscope.errors import QuantscopeError

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
err_console = Console(stderr=True)


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a CLI command so a QuantscopeError prints one clear line and exits 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except QuantscopeError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False)
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
