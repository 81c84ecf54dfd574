"""`quantscope inspect` and `quantscope plan`: a checkpoint's anatomy and every recipe's footprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from quantscope.cli.app import JsonOpt, ModelArg, RevisionOpt, app, console, friendly_errors, size_or_none


@app.command()
@friendly_errors
def inspect(
    model: ModelArg,
    revision: RevisionOpt = None,
    as_json: JsonOpt = False,
    tensors: Annotated[bool, typer.Option("--tensors", help="Also list every tensor.")] = False,
) -> None:
    """Show a checkpoint's anatomy from its headers only: groups, parameters, bytes, unknown tensors."""
    from quantscope.anatomy import load_anatomy
    from quantscope.report.terminal import anatomy_view

    anatomy = load_anatomy(model, revision=revision)
    if as_json:
        console.print_json(json.dumps(anatomy.to_dict(with_tensors=tensors)))
    else:
        console.print(anatomy_view(anatomy, with_tensors=tensors), highlight=False)


@app.command()
@friendly_errors
def plan(
    model: ModelArg,
    budget: Annotated[
        str | None,
        typer.Option(
            help="GPU memory for the weights (KV cache not included): 24GB (10^9 B), 24GiB (2^30 B), 80e9."
        ),
    ] = None,
    recipe: Annotated[
        list[Path] | None,
        typer.Option("--recipe", help="A recipe YAML file to add to the presets (repeatable)."),
    ] = None,
    revision: RevisionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict every preset's (and your recipes') checkpoint size, what stays 16-bit, and the budget fit."""
    from quantscope.anatomy import load_anatomy
    from quantscope.recipe import load_recipe, plan_recipes
    from quantscope.report.terminal import plan_table

    budget_bytes = size_or_none(budget)
    anatomy = load_anatomy(model, revision=revision)
    planned = plan_recipes(anatomy, tuple(load_recipe(path) for path in recipe or []), budget_bytes)
    if as_json:
        console.print_json(json.dumps(planned.to_dict()))
    else:
        console.print(plan_table(planned))
