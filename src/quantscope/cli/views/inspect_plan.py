"""Rich views of inspect and plan: a checkpoint's contents, plans, serving tables, `--like` plans."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Column, Table
from rich.text import Text

from quantscope.checkpoint.anatomy import DTYPE_BITS
from quantscope.util import format_count, format_size, short_size

if TYPE_CHECKING:
    from pathlib import Path

    from quantscope.checkpoint.anatomy import Anatomy
    from quantscope.checkpoint.contents import Contents
    from quantscope.plan.derive import DerivedRecipe, LikePlan
    from quantscope.plan.recipe import Footprint, Plan, Recipe
    from quantscope.plan.serving import ServingPlan


def anatomy_view(contents: Contents, with_tensors: bool = False) -> Group:
    """A checkpoint's anatomy: a header line, the label set against the contents, the layer kinds,
    the groups table (stored formats, logical params, bytes, bits per weight), every tensor when
    asked, and the tensors no rule recognised."""
    anatomy = contents.anatomy
    parts: list[RenderableType] = [
        Text.from_markup(
            f"[bold]{anatomy.source}[/]  model_type={anatomy.model_type}  tensors={len(anatomy.tensors)}  "
            f"params={format_count(contents.params)}  size={format_size(anatomy.total_bytes)}  "
            f"fused sets={len(anatomy.fused_sets)}"
        ),
        Text(contents.summary()),
    ]
    if contents.unrecognised:
        parts.append(
            Text(
                f"{len(contents.unrecognised)} modules in no layout quantscope reads (counted as stored): "
                + "; ".join(contents.unrecognised[:3]),
                "yellow",
            )
        )
    derived = anatomy.config.get("quantscope_derived")
    if isinstance(derived, dict):
        parts.append(
            Text(f"derived from the config alone (no weights read): {_derived_note(derived)}", "yellow")
        )
    kinds = anatomy.layer_types
    if kinds:
        layers = sum(kinds.values())
        parts.append(Text(f"{layers} layers: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())))
    parts.append(_groups_table(contents))
    if with_tensors:
        parts.append(_tensors_table(anatomy))
    if anatomy.unknown:
        parts.append(
            Text(f"{len(anatomy.unknown)} tensors match no group (counted under 'other'):", "yellow")
        )
        parts += [Text(f"  {t.name}  {t.dtype} {list(t.shape)}") for t in anatomy.unknown[:50]]
    return Group(*parts)


def _derived_note(derived: dict) -> str:
    defaults = derived.get("defaults") or {}
    listed = ", ".join(f"{key}={value}" for key, value in defaults.items())
    note = f"defaults used for keys the config lacks: {listed}" if listed else "every key was in the config"
    differ = (derived.get("quantization") or {}).get("hf_quant_config_disagrees")
    if differ is not None:
        note += (
            "; the hf_quant_config.json beside it declares the same formats"
            if not differ
            else "; the hf_quant_config.json beside it declares otherwise (vLLM reads config.json): "
            + "; ".join(differ)
        )
    return note


def _stored_as(contents: Contents, group: str) -> str:
    """Format labels by share of the group's linear parameters, e.g. "INT4 g128 97%, BF16 3%";
    the dtypes for groups without linear weights (norms, embeddings)."""
    formats = contents.groups[group].formats
    total = sum(p for p, _ in formats.values())
    if not total:
        dtypes = {t.dtype for t in contents.anatomy.tensors if t.group == group}
        return ", ".join(sorted(d if d in DTYPE_BITS else f"GGUF {d}" for d in dtypes))
    ranked = sorted(formats.items(), key=lambda item: -item[1][0])
    return ", ".join(
        label if len(ranked) == 1 else f"{label} {_share(p / total)}" for label, (p, _) in ranked
    )


def _share(fraction: float) -> str:
    return "<1%" if 0 < fraction < 0.005 else f"{fraction:.0%}"


def _groups_table(contents: Contents) -> Table:
    # Group names never wrap (scripts grep for them); the formats column wraps instead.
    table = Table(
        Column("group", no_wrap=True),
        "tensors",
        "params",
        "bytes",
        "bits/weight",
        "declared as" if contents.declared_in else "stored as",
        title="Anatomy by group",
    )
    members = contents.anatomy.by_group()
    for group, stored in contents.groups.items():
        table.add_row(
            group,
            str(len(members[group])),
            f"{stored.params:,}",
            format_size(stored.nbytes),
            f"{stored.bits_per_weight:.2f}",
            _stored_as(contents, group),
        )
    table.add_row(
        "total",
        str(len(contents.anatomy.tensors)),
        f"{contents.params:,}",
        format_size(contents.nbytes),
        f"{contents.bits_per_weight:.2f}",
        contents.label,
        style="bold",
    )
    return table


def contents_side_by_side(checkpoints: Sequence[Contents]) -> Group:
    """`inspect A B …`: per group each checkpoint's size, bits per weight and stored formats, then
    each checkpoint's label line."""
    table = Table(Column("group", no_wrap=True), title="Side by side")
    for index in range(1, len(checkpoints) + 1):
        table.add_column(f"[{index}] size", justify="right")
        table.add_column(f"[{index}] bits/w", justify="right")
        table.add_column(f"[{index}] stored as")
    groups = list(dict.fromkeys(g for c in checkpoints for g in c.groups))
    for group in groups:
        row = [group]
        for contents in checkpoints:
            stored = contents.groups.get(group)
            row += (
                [format_size(stored.nbytes), f"{stored.bits_per_weight:.2f}", _stored_as(contents, group)]
                if stored
                else ["-", "-", "-"]
            )
        table.add_row(*row)
    total = ["total"]
    for contents in checkpoints:
        total += [format_size(contents.nbytes), f"{contents.bits_per_weight:.2f}", contents.label]
    table.add_row(*total, style="bold")
    lines = [Text(f"[{i}] {c.anatomy.source}: {c.summary()}") for i, c in enumerate(checkpoints, start=1)]
    return Group(table, *lines)


def _tensors_table(anatomy: Anatomy) -> Table:
    table = Table("tensor", "group", "dtype", "shape", "bytes", title="Tensors")
    for tensor in anatomy.tensors:
        table.add_row(tensor.name, tensor.group, tensor.dtype, str(list(tensor.shape)), f"{tensor.nbytes:,}")
    return table


def plan_table(plan: Plan) -> Table:
    """Every recipe's predicted size, its ratio to the original, what stays 16-bit, and the budget fit."""
    anatomy, budget = plan.anatomy, plan.budget_bytes
    title = f"Predicted size of {anatomy.source} (original {format_size(anatomy.total_bytes)})"
    if plan.source is not None:
        held = plan.source
        how = f"declared in {held.declared_in}" if held.declared_in else "as stored"
        title = (
            f"Predicted size of {anatomy.source}, planned as its unquantized model "
            f"({format_size(anatomy.total_bytes)}); the checkpoint itself: labelled {held.label}, "
            f"{format_size(held.nbytes)} {how}"
        )
    columns = ["recipe", "scheme", "size", "vs original", "linear layers kept 16-bit"]
    table = Table(*columns, *(["fits " + format_size(budget)] if budget is not None else []), title=title)
    for recipe, footprint in zip(plan.recipes, plan.footprints, strict=True):
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


SERVING_KEYS = ("kv_bytes_per_token", "state_bytes_per_sequence", "max_concurrency")
"""What `plan --gpu --json` also puts at the top of each recipe's row (the rest is under "serving")."""


def plan_json(plan: Plan, serving: ServingPlan | None) -> str:
    """`plan --json`: the plan, and with --gpu the serving plan, also per recipe (`SERVING_KEYS`
    at the top of each row)."""
    data = plan.to_dict()
    if serving is not None:
        data["serving"] = serving.to_dict()
        for row, served in zip(data["recipes"], serving.recipes, strict=True):
            row["serving"] = served.to_dict()
            row.update({key: row["serving"][key] for key in SERVING_KEYS})
    return json.dumps(data)


def serving_table(plan: Plan, serving: ServingPlan) -> Table:
    """`plan --gpu`: per recipe, the weights per GPU, the KV pool left, bytes per token and per
    sequence, the sequences that fit at the context, and the decode roofline."""
    options = serving.options
    kv = "KV" if options.kv_dtype == "auto" else f"{options.kv_dtype} KV"
    title = (
        f"{plan.anatomy.source} on {serving.gpu_name} ({format_size(serving.gpu_bytes)} per GPU, "
        f"tp={options.tp}, {options.context:,}-token context, {kv}, "
        f"{options.gpu_memory_utilization:.0%} for vLLM)"
    )
    columns = [
        "recipe",
        "weights/GPU",
        "KV pool",
        "KV/token",
        "state/seq",
        "seqs at context",
        "decode ≤ tok/s",
    ]
    table = Table(*columns, title=title, caption=_serving_caption(serving))
    for row in serving.recipes:
        held = row.capacity
        fits = f"{held.max_concurrency:.1f}" if held.fits else "[red]does not fit[/]"
        table.add_row(
            row.recipe,
            format_size(held.weight_bytes),
            format_size(held.kv_pool_bytes) if held.kv_pool_bytes > 0 else "[red]none[/]",
            short_size(held.layout.kv_bytes_per_token),
            short_size(held.layout.state_bytes_per_sequence) if held.layout.state_bytes_per_sequence else "–",
            fits,
            f"{row.roofline.tokens_per_s:,.0f} @{row.roofline.batch}" if row.roofline else "–",
        )
    return table


def _serving_caption(serving: ServingPlan) -> str:
    if not serving.recipes:
        return ""
    first = serving.recipes[0].capacity
    return (
        f"engine reserve ≈ {format_size(first.reserve.total_bytes)} (estimated); KV paging as vLLM 0.32 "
        f"computes it (block {first.layout.block_size} tokens); "
        "decode tok/s @batch: memory-bandwidth upper bound at the batch that fits (≤ 256), sequences half "
        "the context long"
    )


def _weights_warning(count: int, what: str, example: str) -> Text:
    """A yellow line: how many weights `what`, with one example."""
    return Text(f"{count} weights {what} (e.g. {example})", "yellow")


def like_plan_view(like: LikePlan) -> Group:
    """`plan MODEL --like CHECKPOINT`: the derived recipe, its footprint on MODEL, and the self-check."""
    recipe = like.transferred.recipe
    rules = ", ".join(f"{o.pattern} -> {o.scheme}" for o in recipe.overrides[:8])
    more = f" (+{len(recipe.overrides) - 8} more)" if len(recipe.overrides) > 8 else ""
    lines: list[RenderableType] = [
        Text.from_markup(
            f"[bold]recipe of {like.self_footprint.source}[/]: scheme {recipe.scheme}; kept 16-bit: "
            f"{', '.join(recipe.keep_groups) or 'nothing beyond the fixed rules'}; "
            f"quantize_lm_head={recipe.quantize_lm_head}"
            + ("; quantize_vision=True" if recipe.quantize_vision else "")
        ),
        Text(f"overrides: {rules}{more}" if rules else "overrides: none"),
    ]
    derived = like.derived
    if derived.reproduces:
        lines.append(Text("the recipe reproduces the checkpoint's stored format, module for module", "green"))
    else:
        lines.append(Text(f"{len(derived.mismatched)} modules differ, e.g. {derived.mismatched[0]}", "red"))
    if derived.unrepresentable:
        name, stored = next(iter(derived.unrepresentable.items()))
        what = "are in formats no quantscope scheme stores"
        lines.append(
            _weights_warning(len(derived.unrepresentable), what, f"{name}: {stored}; counted as 16-bit")
        )
    if derived.approximate:
        what = "map onto a scheme with other scales or activations"
        lines.append(
            _weights_warning(len(derived.approximate), what, next(iter(derived.approximate.values())))
        )
    if like.transferred.dropped:
        lines.append(
            Text(
                f"rules that match nothing in {like.footprint.source}, dropped: "
                + "; ".join(like.transferred.dropped[:5]),
                "yellow",
            )
        )
    gap = like.self_footprint.total_bytes / like.checkpoint_bytes - 1 if like.checkpoint_bytes else 0.0
    why = (
        "packing, scales and the differences above"
        if not derived.reproduces or derived.unrepresentable
        else "the producer's packing and scales against AutoRound's"
    )
    lines.append(
        Text(
            f"self-check: on the checkpoint's own shapes the recipe predicts "
            f"{format_size(like.self_footprint.total_bytes)}; it stores {format_size(like.checkpoint_bytes)} "
            f"({gap:+.2%}: {why})"
        )
    )
    footprint = like.footprint
    table = Table("group", "bytes", "of which 16-bit", title=f"{recipe.name} on {footprint.source}")
    for group, nbytes in footprint.bytes_by_group.items():
        if nbytes:
            table.add_row(group, format_size(nbytes), format_size(footprint.kept_bytes_by_group[group]))
    table.add_row(
        "total", format_size(footprint.total_bytes), format_size(footprint.kept_bytes), style="bold"
    )
    return Group(
        *lines, table, Text(f"{footprint.ratio:.1%} of the original {format_size(footprint.original_bytes)}")
    )


def derived_recipe_line(derived: DerivedRecipe, out: Path) -> str:
    """`recipe from-checkpoint`: where the recipe went and whether it reproduces the checkpoint."""
    verdict = (
        "reproduces it module for module"
        if derived.reproduces
        else f"differs on {len(derived.mismatched)} modules (e.g. {derived.mismatched[0]})"
    )
    extra = (
        f"; {len(derived.unrepresentable)} weights in formats no scheme stores"
        if derived.unrepresentable
        else ""
    )
    rules = f"scheme {derived.recipe.scheme}, {len(derived.recipe.overrides)} overrides"
    return f"wrote {out}: {rules}; {verdict}{extra}"


def _kept_summary(recipe: Recipe, footprint: Footprint) -> str:
    if not recipe.format.is_quantized:
        return "all (unquantized)"
    kept = [(g, b) for g, b in footprint.kept_bytes_by_group.items() if b]
    return ", ".join(f"{group} {format_size(nbytes)}" for group, nbytes in kept) or "-"
