"""Recipe search: the least-damage recipe that fits a memory budget.

A multiple-choice knapsack over the profile's units: each unit is stored in bf16 (no damage),
in the profile's 4-bit scheme, or in another measured scheme such as FP8, at the byte cost
`quantscope.formats.stored_bytes` gives; the search minimises the summed measured damage
subject to the checkpoint's total bytes (everything else included) staying within the budget.
Fused sets never straddle units (the profiler merges them), so no recipe can split one, and the
emitted Recipe is checked against `assign_schemes` and `predict_footprint` before it is returned.

Damage is additive only approximately (quantizing two units at once interacts); the summed
value ranks recipes, and `Profiler.measure_recipe` measures the chosen one for real.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from quantscope.checkpoint.anatomy import Anatomy
from quantscope.errors import QuantscopeError
from quantscope.formats import get_format
from quantscope.sensitivity.records import SensitivityProfile, UnitProfile
from quantscope.sensitivity.units import quantized_assignment

OBJECTIVES = ("mean", "late", "worst")
_MAX_BINS = 20_000  # byte resolution of the knapsack: budget / 20k (1 MB at 20 GB)


@dataclass(frozen=True)
class Choice:
    """The storage chosen for one unit: `scheme` is a format name ("bf16" = kept 16-bit)."""

    unit: str
    group: str
    layer: int | None
    scheme: str
    bytes: int
    damage: float


@dataclass(frozen=True)
class SearchResult:
    """A searched recipe with its choices, exact footprint and predicted (summed) damage.

    `total_bytes` is `predict_footprint(anatomy, recipe).total_bytes`; `predicted_damage` is the
    sum of the chosen units' damage under `objective` (nats per token).
    """

    recipe: object  # quantscope.plan.recipe.Recipe
    choices: tuple[Choice, ...]
    budget_bytes: int
    total_bytes: int
    predicted_damage: float
    objective: str


def unit_damage(unit: UnitProfile, scheme: str, objective: str = "mean") -> float:
    """The damage of storing `unit` in `scheme` under `objective` (0 for 16-bit).

    "mean": KL over all positions; "late": KL in the last (longest) position bucket, where
    long-generation drift shows; "worst": the largest bucket KL.
    """
    if objective not in OBJECTIVES:
        raise QuantscopeError(f"--objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    if scheme == "bf16":
        return 0.0
    damage = unit.damage_for(scheme)
    if objective == "mean":
        return damage.kl
    if objective == "late":
        return damage.kl_by_bucket[-1]
    return max(damage.kl_by_bucket)


def _options(unit: UnitProfile, schemes: Sequence[str], objective: str) -> list[tuple[str, int, float]]:
    options = [("bf16", unit.bytes_kept, 0.0)]
    options += [(s, unit.bytes_by_scheme[s], unit_damage(unit, s, objective)) for s in schemes]
    return options


def solve_knapsack(options: Sequence[Sequence[tuple[int, float]]], capacity: int) -> list[int]:
    """Pick one option `(bytes, damage)` per item minimising total damage with bytes <= capacity.

    Bytes are rounded *up* to a resolution of capacity / 20k, so the answer always fits; returns
    the chosen option index per item. Raises QuantscopeError when even the cheapest options do not fit.
    """
    cheapest = sum(min(cost for cost, _ in item) for item in options)
    if cheapest > capacity:
        raise QuantscopeError(f"no choice fits: the smallest needs {cheapest} bytes, {capacity} available")
    resolution = max(1, math.ceil(capacity / _MAX_BINS))
    bins = capacity // resolution
    best = np.zeros(bins + 1)
    picks = np.zeros((len(options), bins + 1), dtype=np.int16)
    for index, item in enumerate(options):
        new = np.full(bins + 1, np.inf)
        for choice, (cost, damage) in enumerate(item):
            width = math.ceil(cost / resolution)
            if width > bins:
                continue
            candidate = np.full(bins + 1, np.inf)
            candidate[width:] = best[: bins + 1 - width] + damage
            better = candidate < new
            new[better], picks[index, better] = candidate[better], choice
        best = new
    if not np.isfinite(best[bins]):
        # Rounding up left no room at this resolution; the exact cheapest choice still fits.
        return [min(range(len(item)), key=lambda i, item=item: item[i][0]) for item in options]
    chosen, room = [], bins
    for index in range(len(options) - 1, -1, -1):
        choice = int(picks[index, room])
        chosen.append(choice)
        room -= math.ceil(options[index][choice][0] / resolution)
    return _polish(options, chosen[::-1], capacity)


def _polish(options: Sequence[Sequence[tuple[int, float]]], chosen: list[int], capacity: int) -> list[int]:
    """Use exact bytes after the rounded DP: take cheaper options that cost no damage, then spend
    any remaining room on the upgrades that remove the most damage per byte."""
    chosen = list(chosen)
    for index, item in enumerate(options):
        cost, damage = item[chosen[index]]
        for alt, (alt_cost, alt_damage) in enumerate(item):
            if alt_damage <= damage and alt_cost < cost:
                chosen[index], cost, damage = alt, alt_cost, alt_damage
    used = sum(options[i][c][0] for i, c in enumerate(chosen))
    while True:
        upgrades = [
            ((item[chosen[i]][1] - alt_damage) / max(1, alt_cost - item[chosen[i]][0]), i, alt)
            for i, item in enumerate(options)
            for alt, (alt_cost, alt_damage) in enumerate(item)
            if alt_damage < item[chosen[i]][1] and used - item[chosen[i]][0] + alt_cost <= capacity
        ]
        if not upgrades:
            return chosen
        _, index, alt = max(upgrades)
        used += options[index][alt][0] - options[index][chosen[index]][0]
        chosen[index] = alt


def search_recipe(
    profile: SensitivityProfile,
    anatomy: Anatomy,
    budget_bytes: int | None = None,
    avg_bits: float | None = None,
    objective: str = "mean",
    schemes: Sequence[str] | None = None,
    name: str | None = None,
) -> SearchResult:
    """The least-damage recipe for `anatomy` within `budget_bytes` (or `avg_bits` per parameter).

    `schemes` limits the non-16-bit options to some of the profile's schemes (default: all).
    Groups the profile could not measure (vision tower, MTP) stay 16-bit. Raises QuantscopeError
    when the budget is below the smallest recipe the options allow, naming that size.
    """
    if (budget_bytes is None) == (avg_bits is None):
        raise QuantscopeError("give exactly one of --budget (GB) or --avg-bits")
    if budget_bytes is None:
        budget_bytes = int(avg_bits * anatomy.total_params / 8)
    schemes = tuple(schemes or profile.schemes)
    unknown = [s for s in schemes if s not in profile.schemes]
    if unknown:
        raise QuantscopeError(
            f"scheme(s) {unknown} not in the profile (profiled: {', '.join(profile.schemes)})"
        )
    units = list(profile.units)
    options = [_options(unit, schemes, objective) for unit in units]
    fixed = _fixed_bytes(profile, anatomy)
    capacity = budget_bytes - fixed
    smallest = fixed + sum(min(cost for _, cost, _ in item) for item in options)
    if capacity < 0 or smallest > budget_bytes:
        raise QuantscopeError(
            f"a budget of {budget_bytes / 1e9:.3f} GB is below the smallest recipe this profile allows "
            f"({smallest / 1e9:.3f} GB: every unit in its smallest scheme, the rest as stored)"
        )
    for _ in range(3):
        chosen = solve_knapsack([[(cost, damage) for _, cost, damage in item] for item in options], capacity)
        choices = tuple(
            Choice(unit.name, unit.group, unit.layer, *options[i][chosen[i]]) for i, unit in enumerate(units)
        )
        recipe = choices_to_recipe(profile, anatomy, choices, name or _default_name(profile, budget_bytes))
        total = _footprint(anatomy, recipe)
        if total <= budget_bytes:
            damage = sum(choice.damage for choice in choices)
            return SearchResult(recipe, choices, budget_bytes, total, damage, objective)
        capacity -= total - budget_bytes  # the footprint counts something the unit costs missed
    raise QuantscopeError(
        f"the searched recipe's footprint ({total / 1e9:.3f} GB) stays above the budget "
        f"({budget_bytes / 1e9:.3f} GB); this is a bug in the byte accounting, please report it"
    )


def _default_name(profile: SensitivityProfile, budget_bytes: int) -> str:
    model = profile.model.rstrip("/").rsplit("/", 1)[-1]
    unit, scale = next(
        (u, s)
        for u, s in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1))
        if budget_bytes >= s
    )
    return f"{model}-{profile.scheme}-{budget_bytes / scale:.3g}{unit}"


def _footprint(anatomy: Anatomy, recipe: object) -> int:
    from quantscope.plan.recipe import predict_footprint

    return int(predict_footprint(anatomy, recipe).total_bytes)


def _fixed_bytes(profile: SensitivityProfile, anatomy: Anatomy) -> int:
    """Bytes of everything outside the profile's units (norms, embeddings, kept groups…)."""
    from quantscope.plan.recipe import Recipe

    groups = tuple(dict.fromkeys([*(u.group for u in profile.units), *profile.unmeasured]))
    keep_all = Recipe(name="keep-all", scheme=profile.scheme, keep_groups=_split_groups(groups))
    return _footprint(anatomy, keep_all) - sum(u.bytes_kept for u in profile.units)


def _split_groups(groups: Sequence[str]) -> tuple[str, ...]:
    """Anatomy groups named by unit groups (merged units are named "a+b")."""
    return tuple(dict.fromkeys(part for group in groups for part in group.split("+")))


# ---------------------------------------------------------------- choices -> Recipe


def choices_to_recipe(
    profile: SensitivityProfile, anatomy: Anatomy, choices: Sequence[Choice], name: str
) -> object:
    """Express per-unit choices as a Recipe (keep_groups, keep_patterns, overrides) and verify it.

    Whole groups become `keep_groups` / group-wide overrides; per-layer choices become anchored
    regexes on module names. The result is checked with `assign_schemes`: every unit weight gets
    exactly the chosen format and nothing else changes, else QuantscopeError.
    """
    from quantscope.plan.recipe import Override, Recipe

    by_unit = {u.name: u for u in profile.units}
    per_scheme: dict[str, list[str]] = {}
    for choice in choices:
        per_scheme.setdefault(choice.scheme, []).append(choice.unit)
    keep_groups = list(_split_groups(profile.unmeasured))
    keep_modules: list[str] = []
    overrides = []
    for scheme, unit_names in per_scheme.items():
        if scheme == profile.scheme:
            continue
        whole, partial = _whole_groups(profile, unit_names)
        modules = [_module(t) for u in partial for t in by_unit[u].tensors]
        if scheme == "bf16":
            keep_groups += _split_groups(whole)
            keep_modules += modules
        else:
            modules += [_module(t) for g in whole for u in profile.units if u.group == g for t in u.tensors]
            overrides.append(Override(pattern=modules_pattern(anatomy, modules), scheme=scheme))
    lm_head_quantized = any(c.group == "lm_head" and c.scheme != "bf16" for c in choices)
    recipe = Recipe(
        name=name,
        scheme=profile.scheme,
        keep_groups=tuple(dict.fromkeys(keep_groups)),
        keep_patterns=(modules_pattern(anatomy, keep_modules),) if keep_modules else (),
        overrides=tuple(overrides),
        quantize_lm_head=lm_head_quantized,
        description=_describe(profile, choices),
    )
    verify_recipe(profile, anatomy, choices, recipe)
    return recipe


def _module(tensor_name: str) -> str:
    from quantscope.checkpoint.anatomy import module_name

    return module_name(tensor_name)


def _whole_groups(profile: SensitivityProfile, unit_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split chosen units into unit groups chosen entirely and units of partially chosen groups."""
    chosen = set(unit_names)
    groups = dict.fromkeys(u.group for u in profile.units if u.name in chosen)
    whole = [g for g in groups if all(u.name in chosen for u in profile.units if u.group == g)]
    partial = [u.name for u in profile.units if u.name in chosen and u.group not in whole]
    return whole, partial


def modules_pattern(anatomy: Anatomy, modules: Sequence[str]) -> str:
    """An anchored regex matching exactly `modules` among the anatomy's module names.

    Layer indices collapse to `\\d+` when every layer holding that module is included, else to
    an alternation of the chosen layers; expert indices always collapse (units never split a
    layer's experts). Falls back to the literal names when the compact form over-matches.
    """
    wanted = set(modules)
    templates: dict[str, set[str]] = {}
    for module in wanted:
        template, layer = _template(module)
        templates.setdefault(template, set()).add(layer)
    everywhere: dict[str, set[str]] = {}
    for tensor in anatomy.tensors:
        template, layer = _template(tensor.module)
        if template in templates:
            everywhere.setdefault(template, set()).add(layer)
    leaves: dict[str, list[str]] = {}
    for template, layers in sorted(templates.items()):
        ordered = sorted(layers, key=_num)
        chosen = ordered[0] if len(ordered) == 1 else "(?:" + "|".join(ordered) + ")"
        layer_re = r"\d+" if layers == everywhere[template] else chosen
        prefix, dot, leaf = template.replace("<L>", layer_re).rpartition(r"\.")
        leaves.setdefault(prefix + dot, []).append(leaf)
    parts = [
        prefix + (names[0] if len(names) == 1 else f"(?:{'|'.join(names)})")
        for prefix, names in leaves.items()
    ]
    pattern = "^(?:" + "|".join(parts) + ")$"
    compiled = re.compile(pattern)
    matched = {t.module for t in anatomy.tensors if compiled.match(t.module)}
    if matched != wanted:
        pattern = "^(?:" + "|".join(re.escape(m) for m in sorted(wanted)) + ")$"
    return pattern


def _num(text: str) -> int:
    return int(text) if text.isdigit() else -1


def _template(module: str) -> tuple[str, str]:
    """(regex template with `<L>` for the layer index and `\\d+` for expert indices, layer)."""
    match = re.search(r"(?:^|\.)layers\.(\d+)\.", module)
    layer = match.group(1) if match else ""
    escaped = re.escape(module)
    if match:
        start, end = match.span(1)
        escaped = re.escape(module[:start]) + "<L>" + re.escape(module[end:])
    escaped = re.sub(r"experts\\\.\d+\\\.", r"experts\\.\\d+\\.", escaped)
    return escaped, layer


def intended_formats(
    profile: SensitivityProfile, anatomy: Anatomy, choices: Sequence[Choice]
) -> dict[str, str]:
    """Module name -> format each unit weight must get under `choices`.

    A unit stored in a scheme gets what that scheme's recipe gives its weights (`bf16` where a
    shape rule keeps one), exactly as the profiler measured it.
    """
    by_unit = {u.name: u for u in profile.units}
    schemes = {c.scheme for c in choices} - {"bf16"}
    assignments = {scheme: quantized_assignment(anatomy, scheme) for scheme in schemes}
    intended = {}
    for choice in choices:
        formats = assignments.get(choice.scheme, {})
        for tensor_name in by_unit[choice.unit].tensors:
            intended[anatomy.tensor(tensor_name).module] = formats.get(tensor_name, "bf16")
    return intended


def verify_recipe(
    profile: SensitivityProfile, anatomy: Anatomy, choices: Sequence[Choice], recipe: object
) -> Mapping[str, str]:
    """Check `recipe` assigns every unit weight its chosen format and splits no fused set.

    Returns the full assignment; raises QuantscopeError naming the first mismatching module.
    """
    from quantscope.plan.recipe import assign_schemes

    assigned = assign_schemes(anatomy, recipe)  # raises on a split fused set
    for module, fmt in intended_formats(profile, anatomy, choices).items():
        got = assigned.get(module, "bf16")
        if _canonical(got) != _canonical(fmt):
            raise QuantscopeError(f"searched recipe {recipe.name}: {module} would be {got}, intended {fmt}")
    for fused in anatomy.fused_sets:
        formats = {_canonical(assigned.get(m, "bf16")) for m in fused.members}
        if len(formats) > 1:
            raise QuantscopeError(f"searched recipe {recipe.name} splits fused set {fused.name}: {formats}")
    return assigned


def _canonical(fmt: str) -> str:
    return "bf16" if not get_format(fmt).is_quantized else get_format(fmt).name


def _describe(profile: SensitivityProfile, choices: Sequence[Choice]) -> str:
    kept = [c.unit for c in choices if c.scheme == "bf16"]
    other = [f"{c.unit}={c.scheme}" for c in choices if c.scheme not in ("bf16", profile.scheme)]
    text = (
        f"searched by quantscope profile on {profile.data} ({profile.n_sequences}x{profile.seq_len} tokens)"
    )
    if kept:
        text += "; 16-bit: " + ", ".join(kept)
    if other:
        text += "; " + ", ".join(other)
    return text


__all__ = [
    "OBJECTIVES",
    "Choice",
    "SearchResult",
    "choices_to_recipe",
    "intended_formats",
    "modules_pattern",
    "search_recipe",
    "solve_knapsack",
    "unit_damage",
    "verify_recipe",
]
