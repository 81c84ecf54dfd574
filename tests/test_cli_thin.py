"""The thin CLI (ARCHITECTURE.md, issue 30): every command body is argument handling, one library
call and a view, at most 25 lines after its signature (docstring included).

The commands are the ones typer registered on the app and its sub-apps, so a new command is
measured without being listed here.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import typer

from quantscope.cli import app

MAX_BODY_LINES = 25


def _callbacks(group: typer.Typer) -> Iterator[Callable[..., Any]]:
    for info in group.registered_commands:
        yield inspect.unwrap(info.callback)  # past `friendly_errors` (functools.wraps)
    for sub in group.registered_groups:
        yield from _callbacks(sub.typer_instance)


def _body_lines(function: Callable[..., Any]) -> int:
    """Lines from the first statement (the docstring) to the end of `function`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    definition = tree.body[0]
    assert isinstance(definition, ast.FunctionDef)
    return definition.end_lineno - definition.body[0].lineno + 1


def test_every_command_body_is_at_most_25_lines() -> None:
    lengths = {f"{f.__module__}.{f.__name__}": _body_lines(f) for f in _callbacks(app)}
    assert len(lengths) >= 15, lengths  # every stage's module registered its commands
    over = {name: n for name, n in lengths.items() if n > MAX_BODY_LINES}
    assert not over, (
        f"bodies over {MAX_BODY_LINES} lines (logic to its stage, rendering to cli/views): {over}"
    )


def test_the_cli_margin_default_is_the_library_default() -> None:
    # The CLI keeps the margin in points without importing numpy at --help; it must not drift.
    from quantscope.analysis.decide import DEFAULT_MARGIN
    from quantscope.cli.app import DEFAULT_MARGIN_POINTS

    assert DEFAULT_MARGIN_POINTS == DEFAULT_MARGIN * 100
