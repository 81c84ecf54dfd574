"""The recipe a quantized checkpoint used, derived from what it stores, and that recipe on another model.

`derive_recipe` reads the stored format of every linear weight (`contents.read_contents`) and writes
the shortest quantscope `Recipe` that reproduces it on the checkpoint's unquantized anatomy: the
main scheme (most parameters), the groups kept 16-bit whole, then overrides for what is left:
first by module *kind* across layers (`layers\\.\\d+\\.mlp\\.shared_expert\\.up_proj$`), then by
layer, then by exact name. The result is checked: resolving it with `recipe.assign_schemes` must
give the stored map back, module for module; what no quantscope format stores (GGUF types, odd
group sizes) is reported, not guessed.

`transfer_recipe` applies a derived recipe to another model (NVIDIA's 122B recipe on the 35B):
rules that name nothing there (a layer the smaller model lacks) are dropped and listed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from quantscope.checkpoint.anatomy import Anatomy
from quantscope.checkpoint.contents import Contents, logical_anatomy, read_contents
from quantscope.errors import QuantscopeError
from quantscope.formats import can_quantize, get_format, rtn_writer
from quantscope.plan.recipe import (
    ALWAYS_KEPT_GROUPS,
    KEPT,
    VISION_WRITER,
    Footprint,
    Override,
    Recipe,
    assign_schemes,
    predict_footprint,
)

_TEXT_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.", "model.")
_NUMBER = re.compile(r"\.\d+(?=\.|$)")


@dataclass(frozen=True)
class DerivedRecipe:
    """A recipe read off a checkpoint. `stored`: module -> quantscope format name as stored (KEPT for
    16-bit). `unrepresentable`: module -> stored format label for weights no quantscope format holds
    (counted as kept in the recipe). `mismatched`: modules the recipe resolves to another format
    than stored. `approximate`: modules stored like their scheme but with other scales or
    activations (what differs). `reproduces`: nothing mismatched."""

    recipe: Recipe
    logical: Anatomy
    stored: Mapping[str, str]
    unrepresentable: Mapping[str, str] = field(default_factory=dict)
    mismatched: tuple[str, ...] = ()
    approximate: Mapping[str, str] = field(default_factory=dict)

    @property
    def reproduces(self) -> bool:
        """True when the recipe gives every module its stored format."""
        return not self.mismatched


@dataclass(frozen=True)
class TransferredRecipe:
    """A derived recipe made to fit another model: the recipe, and the rules dropped because they
    match no linear module there."""

    recipe: Recipe
    dropped: tuple[str, ...]


def derive_recipe(checkpoint: Anatomy, name: str | None = None) -> DerivedRecipe:
    """The recipe that stores `checkpoint` as it is stored (see the module docstring)."""
    contents = read_contents(checkpoint)
    if not any(weight.is_quantized for weight in contents.weights.values()):
        raise QuantscopeError(f"{checkpoint.source}: no quantized linear weights; nothing to derive")
    logical = logical_anatomy(contents)
    stored, odd, approximate = _stored_schemes(contents, logical)
    # A producer may quantize shapes AutoRound leaves 16-bit (e.g. llm-compressor's 4-row
    # in_proj_a), or store a vLLM fused set split; no recipe brings those back, so the rules aim
    # at what a recipe can express and those modules are reported as mismatched instead of
    # piling up useless overrides.
    reachable = _reachable(logical, stored)
    if all(scheme == KEPT for scheme in reachable.values()):
        sample = ", ".join(sorted({*odd.values(), *(stored[m] for m in stored if stored[m] != KEPT)})[:4])
        raise QuantscopeError(
            f"{checkpoint.source}: its weights are stored as {sample}, which no quantscope recipe can "
            "reproduce (a format no scheme stores, or shapes AutoRound keeps 16-bit); "
            "inspect shows what it holds"
        )
    base = _base_recipe(logical, reachable, name or _default_name(checkpoint.source))
    recipe = _with_overrides(logical, base, reachable)
    assigned = assign_schemes(logical, recipe)
    mismatched = tuple(m for m, scheme in stored.items() if assigned.get(m) != scheme)
    if mismatched:  # rules aimed at modules AutoRound's fixed rules keep 16-bit (e.g. mtp.fc) do nothing
        recipe = _without_idle_rules(logical, recipe, assigned)
    return DerivedRecipe(recipe, logical, stored, odd, mismatched, approximate)


def _default_name(source: str) -> str:
    return "like-" + source.rstrip("/").rsplit("/", 1)[-1]


def _stored_schemes(
    contents: Contents, logical: Anatomy
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Linear module -> its quantscope scheme as stored; the modules no scheme stores (their
    format); and those a scheme stores with other scales or activations (what differs). Quantized
    tensors outside the linear layers a recipe covers (e.g. an embedding) count as unrepresentable."""
    stored, odd, approximate = {}, {}, {}
    for module, weight in contents.weights.items():
        if module not in logical.linear_weights:
            if weight.is_quantized:
                odd[module] = f"{weight.format} (not a linear layer a recipe quantizes)"
            continue
        if not weight.is_quantized:
            stored[module] = KEPT
        elif weight.scheme is None:
            stored[module], odd[module] = KEPT, weight.format
        else:
            stored[module] = weight.scheme
            canonical = _canonical(weight.scheme)
            if canonical and weight.format != canonical:
                approximate[module] = f"{weight.format} as {weight.scheme} ({canonical})"
    return stored, odd, approximate


def _canonical(scheme: str) -> str:
    """How AutoRound's export of `scheme` is labelled (`Format.label`), or "" for any label; a
    stored weight with another label maps onto the scheme with the same bytes give or take a
    scale, but other scales or activations (e.g. ModelOpt's weight-only NVFP4 is W4A16,
    quantscope's nvfp4 W4A4; per-tensor FP8 against per-channel)."""
    return get_format(scheme).label


def _reachable(logical: Anatomy, stored: Mapping[str, str]) -> dict[str, str]:
    """`stored`, with KEPT for each format AutoRound cannot hold at that module's shape, and for
    every member of a vLLM fused set stored in more than one format (no recipe splits a set)."""
    weights = logical.linear_weights
    reachable = {
        module: scheme
        if scheme == KEPT or can_quantize(logical.weight_shape(weights[module]), get_format(scheme))
        else KEPT
        for module, scheme in stored.items()
    }
    for fused in logical.fused_sets:
        if len({reachable.get(member) for member in fused.members}) > 1:
            reachable.update(dict.fromkeys(fused.members, KEPT))
    return reachable


def _base_recipe(logical: Anatomy, stored: Mapping[str, str], name: str) -> Recipe:
    """Main scheme by parameters, lm_head as stored, and the groups stored wholly 16-bit."""
    weights = logical.linear_weights
    params: dict[str, int] = {}
    for module, scheme in stored.items():
        if scheme != KEPT:
            params[scheme] = params.get(scheme, 0) + weights[module].numel
    scheme = max(params, key=params.__getitem__)
    lm_head = any(weights[m].group == "lm_head" and s != KEPT for m, s in stored.items())
    vision = any(weights[m].group == "vision" and s != KEPT for m, s in stored.items()) and (
        rtn_writer(get_format(scheme)) == VISION_WRITER
    )
    trial = Recipe(name, scheme, quantize_lm_head=lm_head, quantize_vision=vision)
    predicted = assign_schemes(logical, trial)
    groups = {weights[m].group for m in stored} - set(ALWAYS_KEPT_GROUPS) - {"lm_head"}
    keep = tuple(
        group
        for group in sorted(groups)
        if all(s == KEPT for m, s in stored.items() if weights[m].group == group)
        and any(predicted[m] != KEPT for m in stored if weights[m].group == group)
    )
    return Recipe(
        name,
        scheme,
        keep_groups=keep,
        quantize_lm_head=lm_head,
        quantize_vision=vision,
        description=f"derived from the stored formats of {logical.source}",
    )


def _with_overrides(logical: Anatomy, base: Recipe, stored: Mapping[str, str]) -> Recipe:
    """Add overrides, most general first, until the recipe resolves to `stored` (or no rule helps)."""
    recipe = base
    for generalise in (_kind_key, _layer_key, _exact_key):
        wanted = _wanted(logical, recipe)
        wrong = [m for m, scheme in stored.items() if wanted[m] != scheme]
        if not wrong:
            break
        recipe = _add_rules(recipe, _rules(stored, wrong, generalise))
    return recipe


def _wanted(logical: Anatomy, recipe: Recipe) -> dict[str, str]:
    """What the recipe resolves each module to; a split fused set counts as wrong everywhere."""
    try:
        return assign_schemes(logical, recipe)
    except QuantscopeError:
        return dict.fromkeys(logical.linear_weights, "")


def _rules(stored: Mapping[str, str], wrong: list[str], key: Callable[[str], str]) -> list[Override]:
    """One rule per key whose every module (right or wrong) is stored in one format."""
    by_key: dict[str, set[str]] = {}
    for module, scheme in stored.items():
        by_key.setdefault(key(module), set()).add(scheme)
    rules: dict[str, str] = {}
    for module in wrong:
        pattern = key(module)
        schemes = by_key[pattern]
        if len(schemes) == 1:
            rules[pattern] = next(iter(schemes))
    return [Override(pattern, scheme) for pattern, scheme in rules.items()]


def _without_idle_rules(logical: Anatomy, recipe: Recipe, assigned: Mapping[str, str]) -> Recipe:
    """`recipe` minus each override whose removal leaves every module's format as it is."""
    for override in reversed(recipe.overrides):
        fields = recipe.to_dict()
        fields.pop("version", None)
        fields["overrides"] = [o for o in recipe.overrides if o is not override]
        trial = Recipe(**fields)
        if _wanted(logical, trial) == assigned:
            recipe = trial
    return recipe


def _add_rules(recipe: Recipe, rules: list[Override]) -> Recipe:
    rules = [rule for rule in rules if rule not in recipe.overrides]
    if not rules:
        return recipe
    fields = recipe.to_dict()
    fields["overrides"] = [*recipe.overrides, *rules]
    fields.pop("version", None)
    return Recipe(**fields)


def _text_part(module: str) -> str:
    for prefix in _TEXT_PREFIXES:
        if module.startswith(prefix):
            return module[len(prefix) :]
    return module


# Patterns name modules after the text-model prefix, so a recipe moves between the multimodal
# (`model.language_model.layers…`) and text-only (`model.layers…`) layouts, but no further:
# `layers\.\d+\.mlp` must not reach `mtp.layers.0.mlp` or a vision tower's `encoder.layers`.
_ANCHOR = r"^(?:model\.language_model\.|language_model\.model\.|language_model\.|model\.)?"


def _generalised(text: str) -> str:
    parts = re.split(r"(\.\d+(?=\.|$))", text)
    return "".join(r"\.\d+" if _NUMBER.fullmatch(p) else re.escape(p) for p in parts if p)


def _kind_key(module: str) -> str:
    r"""`model.layers.3.mlp.experts.7.up_proj` -> `^(?:model\.…)?layers\.\d+\.mlp\.experts\.\d+\.up_proj$`."""
    return f"{_ANCHOR}{_generalised(_text_part(module))}$"


def _layer_key(module: str) -> str:
    """Like `_kind_key`, but the decoder layer's index stays (experts still generalised)."""
    match = re.match(r"((?:mtp\.)?layers\.\d+)\.(.*)$", _text_part(module))
    if not match:
        return _exact_key(module)
    head, rest = match.groups()
    return f"{_ANCHOR}{re.escape(head)}\\.{_generalised(rest)}$"


def _exact_key(module: str) -> str:
    return f"{_ANCHOR}{re.escape(_text_part(module))}$"


def transfer_recipe(derived: DerivedRecipe | Recipe, target: Anatomy) -> TransferredRecipe:
    """The recipe with the rules that match no linear module of `target` dropped (and named)."""
    recipe = derived.recipe if isinstance(derived, DerivedRecipe) else derived
    modules = list(target.linear_weights)
    keep, dropped = [], []
    for override in recipe.overrides:
        regex = re.compile(override.pattern)
        (keep if any(regex.search(m) for m in modules) else dropped).append(override)
    patterns = [p for p in recipe.keep_patterns if any(re.search(p, m) for m in modules)]
    fields = recipe.to_dict()
    fields.pop("version", None)
    fields["overrides"], fields["keep_patterns"] = keep, patterns
    dropped_names = [f"{o.pattern} -> {o.scheme}" for o in dropped]
    dropped_names += [f"{p} -> {KEPT}" for p in recipe.keep_patterns if p not in patterns]
    return TransferredRecipe(Recipe(**fields), tuple(dropped_names))


@dataclass(frozen=True)
class LikePlan:
    """`plan MODEL --like CHECKPOINT`: the checkpoint's recipe, its footprint on MODEL, and a
    self-check (the same recipe predicted on the checkpoint's own unquantized anatomy, against the
    bytes the checkpoint really stores: the gap is the producer's packing against AutoRound's)."""

    derived: DerivedRecipe
    transferred: TransferredRecipe
    footprint: Footprint
    self_footprint: Footprint
    checkpoint_bytes: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready data (what `plan --like --json` prints)."""
        return {
            "recipe": self.transferred.recipe.to_dict(),
            "reproduces_checkpoint": self.derived.reproduces,
            "mismatched_modules": list(self.derived.mismatched),
            "unrepresentable": dict(self.derived.unrepresentable),
            "approximate": dict(self.derived.approximate),
            "dropped_rules": list(self.transferred.dropped),
            "model": self.footprint.source,
            "predicted_bytes": self.footprint.total_bytes,
            "bytes_by_group": dict(self.footprint.bytes_by_group),
            "checkpoint": self.self_footprint.source,
            "checkpoint_bytes": self.checkpoint_bytes,
            "checkpoint_predicted_bytes": self.self_footprint.total_bytes,
        }


def plan_like(model: Anatomy, checkpoint: Anatomy) -> LikePlan:
    """The recipe `checkpoint` was made with, and what it weighs on `model` (see `LikePlan`)."""
    derived = derive_recipe(checkpoint)
    target = logical_anatomy(read_contents(model)) if model.is_quantized else model
    transferred = transfer_recipe(derived, target)
    return LikePlan(
        derived,
        transferred,
        predict_footprint(target, transferred.recipe),
        predict_footprint(derived.logical, derived.recipe),
        checkpoint.total_bytes,
    )
