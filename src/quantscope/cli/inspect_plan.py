"""`quantscope inspect` and `quantscope plan`: a checkpoint's anatomy and every recipe's footprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from quantscope.cli.app import JsonOpt, ModelArg, RevisionOpt, app, console, friendly_errors, size_or_none
from quantscope.errors import QuantscopeError

ModelsArg = Annotated[
    list[str],
    typer.Argument(
        help="One or more checkpoints: a local dir, .safetensors or .gguf file, a bare config.json, "
        "or a hub model id. Several are shown side by side."
    ),
]


@app.command()
@friendly_errors
def inspect(
    models: ModelsArg,
    revision: RevisionOpt = None,
    as_json: JsonOpt = False,
    tensors: Annotated[bool, typer.Option("--tensors", help="Also list every tensor.")] = False,
) -> None:
    """What a checkpoint really stores, from its headers only: per group the stored formats, logical
    parameters, bytes and bits per weight, and its label set against the contents."""
    from quantscope.anatomy import load_anatomy
    from quantscope.report.terminal import anatomy_view, contents_side_by_side
    from quantscope.storage import read_contents

    checkpoints = [read_contents(load_anatomy(model, revision=revision)) for model in models]
    if as_json:
        data = [{**c.anatomy.to_dict(with_tensors=tensors), "contents": c.to_dict()} for c in checkpoints]
        console.print_json(json.dumps(data[0] if len(data) == 1 else {"checkpoints": data}))
    elif len(checkpoints) == 1:
        console.print(anatomy_view(checkpoints[0], with_tensors=tensors), highlight=False)
    else:
        console.print(contents_side_by_side(checkpoints), highlight=False)


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
    like: Annotated[
        str | None,
        typer.Option(
            "--like",
            help="A quantized checkpoint: derive the recipe it used and predict its footprint on MODEL.",
        ),
    ] = None,
    revision: RevisionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict every preset's (and your recipes') checkpoint size, what stays 16-bit, and the budget
    fit; MODEL may be a bare config.json. With --like, the footprint of another checkpoint's recipe."""
    from quantscope.anatomy import load_anatomy
    from quantscope.recipe import load_recipe, plan_recipes
    from quantscope.report.terminal import like_plan_view, plan_table

    budget_bytes = size_or_none(budget)
    anatomy = load_anatomy(model, revision=revision)
    if like is not None:
        from quantscope.derive import plan_like

        if budget_bytes is not None or recipe:
            raise QuantscopeError("--like plans the checkpoint's own recipe: drop --budget and --recipe")

        planned_like = plan_like(anatomy, load_anatomy(like))
        console.print_json(json.dumps(planned_like.to_dict())) if as_json else console.print(
            like_plan_view(planned_like), highlight=False
        )
        return
    planned = plan_recipes(anatomy, tuple(load_recipe(path) for path in recipe or []), budget_bytes)
    if as_json:
        console.print_json(json.dumps(planned.to_dict()))
    else:
        console.print(plan_table(planned))


recipe_app = typer.Typer(help="Recipes: derive one from a quantized checkpoint.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("from-checkpoint")
@friendly_errors
def recipe_from_checkpoint(
    checkpoint: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="Where to write the recipe YAML.")],
    name: Annotated[str | None, typer.Option(help="Recipe name (default: like-<checkpoint name>).")] = None,
    revision: RevisionOpt = None,
) -> None:
    """Write the recipe a quantized checkpoint used (group and pattern -> format), for `quantize`."""
    from quantscope.anatomy import load_anatomy
    from quantscope.derive import derive_recipe
    from quantscope.recipe import save_recipe
    from quantscope.report.terminal import derived_recipe_line

    derived = derive_recipe(load_anatomy(checkpoint, revision=revision), name=name)
    save_recipe(derived.recipe, out)
    console.print(derived_recipe_line(derived, out), highlight=False)
