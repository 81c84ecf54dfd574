"""The whole command line: the app with every stage's commands registered, in pipeline order
(importing a stage module registers its commands). Heavy libraries (torch, transformers, vllm)
are imported inside the commands, so `quantscope --help` stays fast."""

import importlib

from quantscope.cli.app import app, reflow_help

STAGES = ("inspect_plan", "quantize", "evaluate", "ingest", "report", "demo", "profile", "sweep", "doctor")

for _stage in STAGES:
    importlib.import_module(f"quantscope.cli.{_stage}")
reflow_help(app)

__all__ = ["app"]
