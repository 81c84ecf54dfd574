"""`quantscope inspect` and `quantscope plan`: a checkpoint's anatomy and every recipe's footprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from quantscope.cli.app import (
    ContextOpt,
    GpuMemoryOpt,
    GpuOpt,
    JsonOpt,
    KvDtypeOpt,
    ModelArg,
    RevisionOpt,
    TpOpt,
    app,
    console,
    friendly_errors,
    size_or_none,
)
from quantscope.engines.base import DEFAULT_MAX_TOKENS
from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    from quantscope.checkpoint.anatomy import Anatomy

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
    parameters, bytes and bits per weight, and its label set against the contents; for a quantized
    checkpoint, whether vLLM's own classes build every layer (when vLLM is installed)."""
    from quantscope.checkpoint.contents import read_contents
    from quantscope.checkpoint.load import load_anatomy
    from quantscope.cli.views.inspect_plan import anatomy_view, contents_side_by_side

    checkpoints = [read_contents(load_anatomy(model, revision=revision)) for model in models]
    loadable = [_vllm_line(c.anatomy) for c in checkpoints]
    if as_json:
        data = [
            {**c.anatomy.to_dict(with_tensors=tensors), "contents": c.to_dict(), "vllm": line}
            for c, line in zip(checkpoints, loadable, strict=True)
        ]
        console.print_json(json.dumps(data[0] if len(data) == 1 else {"checkpoints": data}))
        return
    if len(checkpoints) == 1:
        console.print(anatomy_view(checkpoints[0], with_tensors=tensors), highlight=False)
    else:
        console.print(contents_side_by_side(checkpoints), highlight=False)
    for model, line in zip(models, loadable, strict=True):
        if line is not None:
            console.print(f"vLLM ({model}): {line}", highlight=False, markup=False)


def _vllm_line(anatomy: Any) -> str | None:
    """`quantize.vllm_check`'s one line for a quantized checkpoint; None for a 16-bit one."""
    from quantscope.checkpoint.declared import quantization_section
    from quantscope.quantize.vllm_check import vllm_loadable

    if quantization_section(anatomy.config) is None:
        return None
    return vllm_loadable(anatomy).line()


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
    gpu: GpuOpt = None,
    gpu_memory: GpuMemoryOpt = None,
    context: ContextOpt = DEFAULT_MAX_TOKENS,
    kv_dtype: KvDtypeOpt = "auto",
    tp: TpOpt = 1,
    revision: RevisionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict every preset's (and your recipes') checkpoint size, what stays 16-bit, and the budget
    fit; MODEL may be a bare config.json. With --like, the footprint of another checkpoint's recipe.

    With --gpu (or --gpu-memory), what the GPU holds once vLLM has paged the KV cache and the
    linear-attention state: the KV pool, bytes per token and per sequence, how many sequences of
    --context tokens fit at once, and a decode-throughput upper bound from the GPU's bandwidth."""
    from quantscope.checkpoint.load import load_anatomy
    from quantscope.cli.views.inspect_plan import plan_json, plan_table, serving_table
    from quantscope.plan.recipe import load_recipe, plan_recipes
    from quantscope.plan.serving import serving_plan

    budget_bytes = size_or_none(budget)
    anatomy = load_anatomy(model, revision=revision)
    if like is not None:
        if budget_bytes is not None or recipe:
            raise QuantscopeError("--like plans the checkpoint's own recipe: drop --budget and --recipe")
        _show_like(anatomy, like, as_json)
        return
    planned = plan_recipes(anatomy, tuple(load_recipe(path) for path in recipe or []), budget_bytes)
    serving = serving_plan(planned, gpu, gpu_memory, context, kv_dtype, tp)
    if as_json:
        console.print_json(plan_json(planned, serving))
    else:
        console.print(plan_table(planned) if serving is None else serving_table(planned, serving))


def _show_like(anatomy: Anatomy, like: str, as_json: bool) -> None:
    """`plan --like`: the recipe the checkpoint `like` used, planned on `anatomy`, as JSON or a view."""
    from quantscope.checkpoint.load import load_anatomy
    from quantscope.cli.views.inspect_plan import like_plan_view
    from quantscope.plan.derive import plan_like

    planned_like = plan_like(anatomy, load_anatomy(like))
    if as_json:
        console.print_json(json.dumps(planned_like.to_dict()))
    else:
        console.print(like_plan_view(planned_like), highlight=False)


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
    from quantscope.checkpoint.load import load_anatomy
    from quantscope.cli.views.inspect_plan import derived_recipe_line
    from quantscope.plan.derive import derive_recipe
    from quantscope.plan.recipe import save_recipe

    derived = derive_recipe(load_anatomy(checkpoint, revision=revision), name=name)
    save_recipe(derived.recipe, out)
    console.print(derived_recipe_line(derived, out), highlight=False)
