"""Units of a profile: the weights quantized together when measuring, and what they cost.

A unit is an anatomy group, or a group within one decoder layer (`per_layer`); units a vLLM
fused set would straddle are merged, so no recipe built from units can split a set. The same
assignment rules as `quantscope quantize` decide which weights a scheme quantizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from quantscope.checkpoint.anatomy import GROUPS, Anatomy, TensorInfo
from quantscope.formats import get_format, stored_bytes
from quantscope.numerics.fakequant import QdqTarget, checkpoint_dtype, loaded_tensors, resolve_targets


@dataclass(frozen=True)
class Unit:
    """Weights quantized together when measuring: a group, or a group within one layer.

    `formats` maps each checkpoint tensor name to the format the recipe stores it in.
    """

    name: str
    group: str
    layer: int | None
    tensors: tuple[TensorInfo, ...]
    formats: Mapping[str, str]


def quantized_assignment(anatomy: Anatomy, scheme: str) -> dict[str, str]:
    """Checkpoint weight name -> format for `scheme` applied to every group it can quantize.

    Uses the recipe rules (`quantscope.plan.recipe.assign_schemes`, lm_head included) so the profile
    quantizes exactly what `quantscope quantize` would; weights the rules leave 16-bit are absent.
    """
    from quantscope.plan.recipe import Recipe, assign_schemes

    recipe = Recipe(name=f"profile-{scheme}", scheme=scheme, quantize_lm_head=True)
    assigned = assign_schemes(anatomy, recipe)
    out = {}
    for tensor in anatomy.tensors:
        fmt = assigned.get(tensor.module)
        if fmt is not None and tensor.is_linear_weight and get_format(fmt).is_quantized:
            out[tensor.name] = fmt
    return out


def build_units(
    anatomy: Anatomy,
    assignment: Mapping[str, str],
    per_layer: bool = False,
    present: Iterable[str] | None = None,
) -> list[Unit]:
    """Group the quantized weights of `assignment` into units (per group, or per group and layer).

    Units that a fused set would straddle are merged (a recipe can never split one). `present`
    restricts to tensors the loaded model holds. Order: anatomy group order, then layer.
    """
    keep = set(assignment) if present is None else set(assignment) & set(present)
    members: dict[tuple[str, int | None], list[TensorInfo]] = {}
    for tensor in anatomy.tensors:
        if tensor.name in keep:
            key = (tensor.group, tensor.layer if per_layer else None)
            members.setdefault(key, []).append(tensor)
    keys = _merge_fused(anatomy, members)
    units = []
    for merged in keys:
        tensors = tuple(t for key in merged for t in members[key])
        group = "+".join(dict.fromkeys(key[0] for key in merged))
        layers = {key[1] for key in merged}
        layer = layers.pop() if len(layers) == 1 else None
        name = group if layer is None else f"{group}:{layer}"
        units.append(Unit(name, group, layer, tensors, {t.name: assignment[t.name] for t in tensors}))
    return sorted(
        units, key=lambda u: (GROUPS.index(u.group.split("+")[0]), -1 if u.layer is None else u.layer)
    )


def _merge_fused(
    anatomy: Anatomy, members: Mapping[tuple[str, int | None], list[TensorInfo]]
) -> list[list[tuple[str, int | None]]]:
    """Union units whose tensors share a fused set; keeps first-seen order."""
    parent = {key: key for key in members}

    def root(key: tuple[str, int | None]) -> tuple[str, int | None]:
        while parent[key] != key:
            key = parent[key]
        return key

    key_of = {t.module: key for key, tensors in members.items() for t in tensors}
    for fused in anatomy.fused_sets:
        keys = [key_of[m] for m in fused.members if m in key_of]
        for other in keys[1:]:
            parent[root(other)] = root(keys[0])
    merged: dict[tuple[str, int | None], list[tuple[str, int | None]]] = {}
    for key in members:
        merged.setdefault(root(key), []).append(key)
    return list(merged.values())


def unit_targets(
    model: torch.nn.Module, unit: Unit, assignment: Mapping[str, str] | None = None
) -> list[QdqTarget]:
    """QdqTargets quantizing `unit` in its own formats, or in those of `assignment`.

    `assignment` (checkpoint tensor name -> format, e.g. `quantized_assignment` of another
    scheme) leaves the unit's tensors it does not list in 16-bit, as that recipe would.
    """
    formats = unit.formats if assignment is None else assignment
    slices = resolve_targets(model, [(t.name, t.shape) for t in unit.tensors])
    return [
        QdqTarget(where, formats.get(tensor.name, "bf16"), checkpoint_dtype(tensor.dtype))
        for tensor, where in zip(unit.tensors, slices, strict=True)
    ]


def unit_bytes(unit: Unit, assignment: Mapping[str, str] | None = None) -> int:
    """Bytes of the unit's weights in their own formats, or in `assignment`'s ({}: all kept).

    A weight left unquantized counts as `recipe.predict_footprint` counts it: its bytes on disk,
    or 2 bytes per element for an FP8 source (rewritten in 16-bit).
    """
    formats = unit.formats if assignment is None else assignment
    total = 0
    for tensor in unit.tensors:
        fmt = get_format(formats.get(tensor.name, "bf16"))
        if fmt.is_quantized:
            total += stored_bytes(tensor.shape, fmt)
        else:
            total += tensor.numel * 2 if tensor.dtype.startswith("F8") else tensor.nbytes
    return total


def assignment_targets(
    model: torch.nn.Module, anatomy: Anatomy, formats: Mapping[str, str]
) -> list[QdqTarget]:
    """QdqTargets for a module-name -> format mapping (`assign_schemes` output, a manifest's
    assignment, or a per-layer config from another tool); modules absent, 16-bit or not held by
    the loaded model are skipped."""
    tensors = [
        t
        for t in anatomy.tensors
        if t.is_linear_weight and get_format(formats.get(t.module, "bf16")).is_quantized
    ]
    present = loaded_tensors(model, [t.name for t in tensors])
    tensors = [t for t in tensors if t.name in present]
    slices = resolve_targets(model, [(t.name, t.shape) for t in tensors])
    return [
        QdqTarget(where, formats[t.module], checkpoint_dtype(t.dtype))
        for t, where in zip(tensors, slices, strict=True)
    ]
