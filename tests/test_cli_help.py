"""`--help` reflows to the terminal: no line breaks inside a sentence that the terminal did not make.

Docstrings are wrapped by hand at the source's width; rendered as they are, a sentence breaks at the
source's line ends whatever the terminal width. The check: wherever a sentence continues on the next
line of the same cell, the next word could not have fitted on the line before (the terminal had to
break there). It runs on `quantscope --help` and every command's and sub-command's `--help` at 80
and 120 columns, on the text typer and rich really print.
"""

from __future__ import annotations

import itertools
import re

import pytest
from typer.testing import CliRunner

from quantscope.cli import app
from quantscope.cli.app import console

COMMANDS = [
    [],
    *([info.name or info.callback.__name__.replace("_", "-")] for info in app.registered_commands),
    *([group.name] for group in app.registered_groups),
    *(
        [group.name, info.name or info.callback.__name__.replace("_", "-")]
        for group in app.registered_groups
        for info in group.typer_instance.registered_commands
    ),
]
_PANEL_ROW = re.compile(r"^│ (?P<cell>.*?) ?│$")


def _help(command: list[str], width: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(console, "width", width)  # the shared console fixed its width when created
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def _unforced_breaks(lines: list[str], width: int) -> list[tuple[str, str]]:
    """Pairs of lines (same cell, the sentence going on) where the next word would have fitted."""
    found = []
    for above, below in itertools.pairwise(lines):
        cell = _continuation(above, below, width)
        if cell is None:
            continue
        text_above, text_below, room = cell
        first_word = text_below.split()[0]
        if len(text_above) + 1 + len(first_word) <= room:
            found.append((above, below))
    return found


def _continuation(above: str, below: str, width: int) -> tuple[str, str, int] | None:
    """(text above, text below, cell width) when `below` continues `above`'s cell, else None."""
    row_above, row_below = _PANEL_ROW.match(above), _PANEL_ROW.match(below)
    if row_above and row_below:  # a panel: the continuation starts where the description column does
        cell_above, cell_below = row_above["cell"], row_below["cell"]
        start = len(cell_below) - len(cell_below.lstrip())
        if not cell_below.strip() or start == 0 or not cell_above[start - 1 : start].isspace():
            return None
        text_above = cell_above[start:].rstrip()
        if not text_above or text_above.endswith((".", ":", "?", "]")):
            return None
        return text_above, cell_below.strip(), len(cell_above) - start
    if above.startswith(" ") and below.startswith(" ") and "│" not in above + below:
        text_above, text_below = above.strip(), below.strip()
        if not text_above or not text_below or text_above.endswith((".", ":", "?")):
            return None
        if text_above.startswith("Usage:") or text_below.startswith("- "):
            return None
        return text_above, text_below, width - 2  # rich pads the help text by one column a side
    return None


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command) or "quantscope")
def test_help_breaks_lines_only_where_the_terminal_must(
    command: list[str], width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _help(command, width, monkeypatch)
    assert max(map(len, lines)) <= width
    assert _unforced_breaks(lines, width) == []


def test_the_check_finds_a_hand_wrapped_docstring(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check fails on help printed as the source wraps it (typer's rich mode unchanged)."""
    from quantscope.cli.app import reflowed

    compare = next(info for info in app.registered_commands if info.callback.__name__ == "compare")
    monkeypatch.setattr(compare, "help", None)  # typer falls back to the hand-wrapped docstring
    lines = _help([], 120, monkeypatch)
    assert _unforced_breaks(lines, 120)
    monkeypatch.setattr(compare, "help", reflowed(compare.callback.__doc__ or ""))
    assert _unforced_breaks(_help([], 120, monkeypatch), 120) == []
