"""The `quantscope` command line: one module per stage, all registering on one typer app.

Importing a stage module registers its commands; a module that does not exist yet is simply
absent from the command list. Heavy libraries (torch, transformers, vllm) are imported inside
the commands, so `quantscope --help` stays fast.
"""

from __future__ import annotations

import importlib

from quantscope.cli.app import app

_STAGE_MODULES = ("inspect_plan", "quantize", "evaluate", "report", "profile")

for _module in _STAGE_MODULES:
    try:
        importlib.import_module(f"quantscope.cli.{_module}")
    except ModuleNotFoundError as error:
        if error.name != f"quantscope.cli.{_module}":
            raise

__all__ = ["app"]
