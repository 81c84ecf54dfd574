"""`quantscope inspect` and `quantscope plan`: a checkpoint's anatomy and every recipe's footprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from quantscope.anatomy import Anatomy, load_anatomy
from quantscope.cli.app import app, console, friendly_errors
from quantscope.recipe import (
    PRESETS,
    Footprint,
    Recipe,
    format_size,
    load_recipe,
    parse_size,
    predict_footprint,
)

ModelArg = Annotated[str, typer.Argument(help="Local checkpoint dir / .safetensors file, or a hub model id.")]
RevisionOpt = Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


@app.command()
@friendly_errors
def inspect(
    model: ModelArg,
    revision: RevisionOpt = None,
    as_json: JsonOpt = False,
    tensors: Annotated[bool, typer.Option("--tensors", help="Also list every tensor.")] = False,
) -> None:
    """Show a checkpoint's anatomy from its headers only: groups, parameters, bytes, unknown tensors."""
    anatomy = load_anatomy(model, revision=revision)
    if as_json:
        console.print_json(json.dumps(_anatomy_json(anatomy, tensors)))
        return
    console.print(
        f"[bold]{anatomy.source}[/]  model_type={anatomy.model_type}  tensors={len(anatomy.tensors)}  "
        f"params={_count(anatomy.total_params)}  size={format_size(anatomy.total_bytes)}  "
        f"fused sets={len(anatomy.fused_sets)}"
    )
    layers = _layer_summary(anatomy)
    if layers:
        console.print(layers, highlight=False)
    console.print(_groups_table(anatomy))
    if tensors:
        console.print(_tensors_table(anatomy))
    if anatomy.unknown:
        console.print(f"[yellow]{len(anatomy.unknown)} tensors match no group (counted under 'other'):[/]")
        for tensor in anatomy.unknown[:50]:
            console.print(f"  {tensor.name}  {tensor.dtype} {list(tensor.shape)}", highlight=False)


def _count(n: int) -> str:
    for unit, scale in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _layer_summary(anatomy: Anatomy) -> str:
    text = anatomy.config.get("text_config", anatomy.config)
    kinds = text.get("layer_types") if isinstance(text, dict) else None
    if not isinstance(kinds, list) or not kinds:
        return ""
    counts = {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}
    return f"{len(kinds)} layers: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())


def _groups_table(anatomy: Anatomy) -> Table:
    table = Table("group", "tensors", "params", "bytes", "dtypes", title="Anatomy by group")
    for group, members in anatomy.by_group().items():
        if not members:
            continue
        params = sum(t.numel for t in members)
        dtypes = ", ".join(sorted({t.dtype for t in members}))
        table.add_row(
            group, str(len(members)), f"{params:,}", format_size(sum(t.nbytes for t in members)), dtypes
        )
    return table


def _tensors_table(anatomy: Anatomy) -> Table:
    table = Table("tensor", "group", "dtype", "shape", "bytes", title="Tensors")
    for tensor in anatomy.tensors:
        table.add_row(tensor.name, tensor.group, tensor.dtype, str(list(tensor.shape)), f"{tensor.nbytes:,}")
    return table


def _anatomy_json(anatomy: Anatomy, with_tensors: bool) -> dict[str, object]:
    groups = {
        group: {
            "tensors": len(members),
            "params": sum(t.numel for t in members),
            "bytes": sum(t.nbytes for t in members),
        }
        for group, members in anatomy.by_group().items()
    }
    data: dict[str, object] = {
        "source": anatomy.source,
        "model_type": anatomy.model_type,
        "total_bytes": anatomy.total_bytes,
        "total_params": anatomy.total_params,
        "groups": groups,
        "unknown": [t.name for t in anatomy.unknown],
        "fused_sets": [{"name": f.name, "members": list(f.members)} for f in anatomy.fused_sets],
    }
    if with_tensors:
        data["tensors"] = [
            {"name": t.name, "group": t.group, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes}
            for t in anatomy.tensors
        ]
    return data


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
    budget_bytes = parse_size(budget) if budget is not None else None
    anatomy = load_anatomy(model, revision=revision)
    recipes: list[Recipe] = [*PRESETS.values(), *(load_recipe(path) for path in recipe or [])]
    footprints = [predict_footprint(anatomy, r) for r in recipes]
    if as_json:
        console.print_json(json.dumps(_plan_json(anatomy, recipes, footprints, budget_bytes)))
        return
    console.print(_plan_table(anatomy, recipes, footprints, budget_bytes))


def _kept_summary(recipe: Recipe, footprint: Footprint) -> str:
    if not recipe.format.is_quantized:
        return "all (unquantized)"
    kept = [(g, b) for g, b in footprint.kept_bytes_by_group.items() if b]
    return ", ".join(f"{group} {format_size(nbytes)}" for group, nbytes in kept) or "-"


def _plan_table(
    anatomy: Anatomy, recipes: list[Recipe], footprints: list[Footprint], budget: int | None
) -> Table:
    title = f"Predicted size of {anatomy.source} (original {format_size(anatomy.total_bytes)})"
    columns = ["recipe", "scheme", "size", "vs original", "linear layers kept 16-bit"]
    table = Table(*columns, *(["fits " + format_size(budget)] if budget is not None else []), title=title)
    for recipe, footprint in zip(recipes, footprints, strict=True):
        row = [
            recipe.name,
            recipe.scheme,
            format_size(footprint.total_bytes),
            f"{footprint.ratio:.1%}",
            _kept_summary(recipe, footprint),
        ]
        if budget is not None:
            row.append("[green]yes[/]" if footprint.fits(budget) else "[red]no[/]")
        table.add_row(*row)
    return table


def _plan_json(
    anatomy: Anatomy, recipes: list[Recipe], footprints: list[Footprint], budget: int | None
) -> dict[str, object]:
    rows = []
    for recipe, footprint in zip(recipes, footprints, strict=True):
        rows.append(
            {
                "recipe": recipe.name,
                "scheme": recipe.scheme,
                "description": recipe.description,
                "total_bytes": footprint.total_bytes,
                "ratio": footprint.ratio,
                "bytes_by_group": dict(footprint.bytes_by_group),
                "kept_bytes_by_group": dict(footprint.kept_bytes_by_group),
                "modules_by_scheme": dict(footprint.modules_by_scheme),
                "fits": footprint.fits(budget) if budget is not None else None,
            }
        )
    return {
        "source": anatomy.source,
        "original_bytes": anatomy.total_bytes,
        "budget_bytes": budget,
        "recipes": rows,
    }
