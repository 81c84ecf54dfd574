"""The one exception type quantscope raises for bad input or a failed stage, and the one way a
pydantic `ValidationError` (a run spec, recipe, manifest or profile that does not parse) becomes it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class QuantscopeError(Exception):
    """A user-facing error: the message names the input (file, field, model) and what to do.

    The CLI prints it without a traceback and exits with status 2.
    """


def invalid(error: ValidationError, where: str, allowed: Iterable[str] = ()) -> QuantscopeError:
    """A QuantscopeError for a record that failed validation: `where` (the file, or what was
    parsed), then every problem as `field: message`.

    Unknown keys are listed first with the `allowed` field names, so a typo is fixed at a glance;
    the rest are pydantic's own messages, with the fix spelled out for a missing field or a
    non-boolean.
    """
    problems = [_problem(e) for e in error.errors(include_url=False)]
    extra = [_location(e) for e in error.errors(include_url=False) if e["type"] in _UNKNOWN_KEY]
    if extra:
        hint = f"; allowed: {', '.join(sorted(allowed))}" if allowed else ""
        problems.insert(0, f"unknown keys {extra}{hint}")
    return QuantscopeError(f"{where}: {'; '.join(problems)}")


# pydantic's error types for a key the record does not have (models / dataclasses).
_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")


def _location(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def _problem(error: Any) -> str:
    where, kind = _location(error), error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        return f"{where}: {message} ('{where}' is required)"
    if kind in ("bool_type", "bool_parsing"):
        return f"{where}: {message} (write true or false)"
    if kind in _UNKNOWN_KEY:
        return f"{where}: Extra inputs are not permitted"
    return f"{where}: {message}"
