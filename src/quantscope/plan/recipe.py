"""Recipes: which format each linear layer is stored in, presets, YAML I/O and the footprint.

A `Recipe` is a scheme (a `formats` name) plus what stays 16-bit (anatomy groups and module
regexes) plus per-pattern overrides. `assign_schemes` resolves it against an `Anatomy` the way
AutoRound 0.16 will apply it, and `predict_footprint` turns that into exact bytes per group.

Precedence, lowest to highest: `scheme`, `keep_groups`, `keep_patterns`, `overrides` (a later
override beats an earlier one). On top of any recipe, AutoRound's (and vLLM's) fixed rules hold:
only linear layers inside the decoder stack are quantized (lm_head only with `quantize_lm_head`
and untied embeddings); the MoE router and shared-expert gate stay 16-bit (vLLM builds them
unquantized); the vision tower stays 16-bit unless `quantize_vision` (then in the formats
`formats.rtn_writer` names, as MTP layers are); MTP layers (not `mtp.fc`) are quantized only in
formats whose activations need no calibration (`formats.rtn_writer`: transformers never runs the
MTP head); a shape the format cannot hold stays 16-bit; and a vLLM fused set (q/k/v, gate/up, …)
whose members would end in different formats because of a shape rule stays 16-bit as a whole,
while a recipe that splits one is rejected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, StrictBool, model_validator
from pydantic.dataclasses import dataclass as record

from quantscope.checkpoint.anatomy import GROUPS, Anatomy, TensorInfo
from quantscope.errors import QuantscopeError
from quantscope.formats import (
    FORMAT_NAMES,
    Format,
    can_quantize,
    get_format,
    rtn_writer,
    stored_bytes,
    vllm_builds,
)
from quantscope.records import RECORD_CONFIG, FieldAccess, dump_record, parse_record, read_yaml
from quantscope.util import write_atomic

KEPT = "bf16"  # the scheme name assigned to layers left unquantized
RECIPE_VERSION = 1

# Groups whose linear layers no recipe quantizes: vLLM builds the router and the shared-expert
# gate as unquantized layers; the vision tower only with `quantize_vision` (see `_eligible`).
ALWAYS_KEPT_GROUPS: tuple[str, ...] = ("embed", "norm", "router", "shared_expert_gate")
VISION_WRITER = "compressed-tensors"  # the vision tower is written by `quantize.rtn_layers` only

# MTP layers (not loaded by transformers) are quantized after the export by whoever
# `formats.rtn_writer` names: AutoRound's RTN for integer formats, quantscope's compressed-tensors
# writer for FP formats whose activations need no calibration; never these modules (AutoRound's
# BLOCK_NAME_TO_IGNORE list; vLLM builds `mtp.fc` quantized only if the config says so).
_MTP_IGNORED = (".shared_expert_gate.", ".gate.", ".g_proj.", "mtp.fc.")


@record(frozen=True, config=RECORD_CONFIG)
class Override(FieldAccess):
    """Store the linear modules whose name matches `pattern` (a regex, searched) in `scheme`."""

    pattern: str
    scheme: str

    @model_validator(mode="before")
    @classmethod
    def _exactly_two_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and set(data) != {"pattern", "scheme"}:
            raise ValueError("each override is a mapping with exactly 'pattern' and 'scheme'")
        return data


@record(frozen=True, config=RECORD_CONFIG)
class Recipe(FieldAccess):
    """A named quantization recipe (the YAML file's fields). See the module docstring for how the
    fields combine; `version` is the file format's (files without one are version 1)."""

    name: str = Field(min_length=1)
    scheme: str = Field(min_length=1)
    keep_groups: tuple[str, ...] = ()
    keep_patterns: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()
    quantize_lm_head: StrictBool = False
    quantize_vision: StrictBool = False
    description: str = ""
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        where = f"recipe {self.name!r}"
        if self.version != RECIPE_VERSION:
            raise QuantscopeError(
                f"{where}: recipe version {self.version}, this quantscope reads {RECIPE_VERSION}"
            )
        get_format(self.scheme)
        unknown = [group for group in self.keep_groups if group not in GROUPS]
        if unknown:
            raise QuantscopeError(f"{where}: unknown keep_groups {unknown}; groups are: {', '.join(GROUPS)}")
        for pattern in (*self.keep_patterns, *(o.pattern for o in self.overrides)):
            _compile(pattern, where)
        for override in self.overrides:
            get_format(override.scheme)
        if self.quantize_vision and rtn_writer(self.format) != VISION_WRITER:
            writable = [name for name in FORMAT_NAMES if rtn_writer(get_format(name)) == VISION_WRITER]
            raise QuantscopeError(
                f"{where}: quantize_vision needs a scheme quantscope writes without calibration data "
                f"({', '.join(writable)}), not {self.scheme!r}: AutoRound never sees the vision tower"
            )

    @property
    def format(self) -> Format:
        """The recipe's main storage format."""
        return get_format(self.scheme)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML: the fields, overrides as `{pattern, scheme}` mappings."""
        return dump_record(self)


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise QuantscopeError(f"{where}: pattern {pattern!r} is not a valid regex ({error})") from None


# ---------------------------------------------------------------------------------------------
# Presets: the seed study's lessons. Linear attention (Gated DeltaNet) hurts long generations
# when quantized; the MoE shared expert costs accuracy and saves little memory.
# ---------------------------------------------------------------------------------------------

_SAFE_KEEP = ("shared_expert", "linear_attn", "router", "mtp", "vision")


def _family(scheme: str, label: str) -> list[Recipe]:
    return [
        Recipe(scheme.replace("_", "-"), scheme, description=f"{label} on every eligible linear layer"),
        Recipe(
            f"{scheme}-keep-shared",
            scheme,
            keep_groups=("shared_expert",),
            description=f"{label}; MoE shared expert kept 16-bit (small, and accuracy-sensitive)",
        ),
        Recipe(
            f"{scheme}-keep-linear-attn",
            scheme,
            keep_groups=("linear_attn",),
            description=f"{label}; Gated DeltaNet linear attention kept 16-bit (long-generation damage)",
        ),
        Recipe(
            f"{scheme}-safe",
            scheme,
            keep_groups=_SAFE_KEEP,
            description=f"{label}; shared expert, linear attention, router, MTP and vision kept 16-bit",
        ),
    ]


PRESETS: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("bf16", "bf16", description="the original 16-bit weights"),
        Recipe(
            "fp8",
            "fp8_dynamic",
            description="FP8 E4M3, per-channel weight scales, dynamic per-token FP8 activations, every "
            "eligible linear layer",
        ),
        Recipe(
            "fp8-block", "fp8_block", description="FP8 E4M3, 128×128 block scales (DeepSeek/Qwen FP8 style)"
        ),
        Recipe("w8a16", "w8a16", description="INT8 weight-only, group 128"),
        *_family("w4a16", "INT4 weight-only, group 128"),
        Recipe(
            "w3a16",
            "w3a16",
            description="INT3 weight-only, group 128: harsher than what is deployed, to show the mechanism",
        ),
        *_family("nvfp4", "NVFP4 (FP4 + FP8 scale per 16)"),
        *_family("nvfp4a16", "NVFP4 weights, 16-bit activations (NVIDIA's Qwen3.6 NVFP4 format)"),
        *_family("mxfp4", "MXFP4 (FP4 + E8M0 scale per 32)"),
    )
}

# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A preset by name, or a recipe read from a YAML file; unknown keys are errors. A preset's
    name given as a path (a CLI option typed `Path`) is the preset unless such a file exists."""
    path = Path(name_or_path).expanduser()
    if str(name_or_path) in PRESETS and not path.is_file():
        return PRESETS[str(name_or_path)]
    if not path.is_file():
        raise QuantscopeError(
            f"{name_or_path}: neither a preset nor a recipe file; presets: {', '.join(PRESETS)}"
        )
    return recipe_from_dict(read_yaml(path, "recipe"), where=str(path))


def recipe_from_dict(data: Any, where: str = "recipe") -> Recipe:
    """Build a Recipe from parsed YAML/JSON data, with errors naming `where` and the field."""
    return parse_record(Recipe, data, where)


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write `recipe` as YAML to `path` atomically (temp file in the same dir, then rename)."""
    import yaml

    write_atomic(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True))


# ---------------------------------------------------------------------------------------------
# Resolution against an anatomy
# ---------------------------------------------------------------------------------------------


def linear_modules(anatomy: Anatomy) -> dict[str, TensorInfo]:
    """Module name -> weight tensor, for every linear layer in the checkpoint (in order)."""
    return anatomy.linear_weights


def _tied(anatomy: Anatomy) -> bool:
    text = anatomy.config.get("text_config")
    configs = [anatomy.config, text] if isinstance(text, Mapping) else [anatomy.config]
    return any(bool(config.get("tie_word_embeddings")) for config in configs)


def _eligible(tensor: TensorInfo, fmt: Format, recipe: Recipe, tied: bool) -> bool:
    """Whether AutoRound would quantize this layer at all, before shape rules and recipe keeps."""
    if tensor.group in ALWAYS_KEPT_GROUPS:
        return False
    if tensor.group == "vision":
        return recipe.quantize_vision and rtn_writer(fmt) == VISION_WRITER
    if tensor.group == "lm_head":
        return recipe.quantize_lm_head and not tied
    if tensor.group == "mtp":
        return (
            bool(rtn_writer(fmt))
            and ".layers." in tensor.name
            and not any(ignored in tensor.name for ignored in _MTP_IGNORED)
        )
    return "layers." in tensor.name  # inside the decoder stack AutoRound quantizes block by block


def assign_schemes(anatomy: Anatomy, recipe: Recipe) -> dict[str, str]:
    """Every linear module name -> the format name it will be stored in (`"bf16"` when kept).

    Raises QuantscopeError when a keep pattern or override matches no linear module, or when the
    recipe would put members of one vLLM fused set in different formats (the message names the set).
    """
    modules = linear_modules(anatomy)
    wanted = _wanted_schemes(modules, recipe, anatomy.source)
    _check_fused_sets(anatomy, wanted, recipe)
    tied = _tied(anatomy)
    fits: dict[tuple[tuple[int, ...], str], bool] = {}  # many layers share a shape
    assigned: dict[str, str] = {}
    for module, tensor in modules.items():
        fmt = get_format(wanted[module])
        ok = fmt.is_quantized and _eligible(tensor, fmt, recipe, tied)
        if ok:
            key = (tensor.shape, fmt.name)
            if key not in fits:
                shape = anatomy.weight_shape(tensor)
                fits[key] = can_quantize(shape, fmt) and vllm_builds(shape, fmt)
            ok = fits[key]
        assigned[module] = fmt.name if ok else KEPT
    return _unsplit_fused_sets(anatomy, assigned)


def _wanted_schemes(modules: Mapping[str, TensorInfo], recipe: Recipe, source: str) -> dict[str, str]:
    """The format the recipe asks for, per module, before AutoRound's fixed and shape rules."""
    where = f"recipe {recipe.name!r} on {source}"
    wanted = {
        module: KEPT if tensor.group in recipe.keep_groups else recipe.scheme
        for module, tensor in modules.items()
    }
    rules = [(pattern, KEPT) for pattern in recipe.keep_patterns]
    rules += [(override.pattern, get_format(override.scheme).name) for override in recipe.overrides]
    for pattern, scheme in rules:
        regex = _compile(pattern, where)
        matched = [module for module in modules if regex.search(module)]
        if not matched:
            raise QuantscopeError(
                f"{where}: pattern {pattern!r} matches no linear module "
                f"(names look like {next(iter(modules), '?')!r})"
            )
        for module in matched:
            wanted[module] = scheme
    return {module: get_format(scheme).name for module, scheme in wanted.items()}


def _check_fused_sets(anatomy: Anatomy, wanted: Mapping[str, str], recipe: Recipe) -> None:
    for fused in anatomy.fused_sets:
        parent = fused.name.rpartition(".")[0] + "."
        by_scheme: dict[str, list[str]] = {}
        for member in fused.members:
            by_scheme.setdefault(wanted[member], []).append(member.removeprefix(parent))
        if len(by_scheme) > 1:
            detail = "; ".join(
                f"{scheme}: {', '.join(names[:2])}{f' +{len(names) - 2} more' if len(names) > 2 else ''}"
                for scheme, names in by_scheme.items()
            )
            raise QuantscopeError(
                f"recipe {recipe.name!r} splits the fused set {fused.name} ({detail}): vLLM loads it as one "
                "layer with one scheme; keep or override all of its members together"
            )


def _unsplit_fused_sets(anatomy: Anatomy, assigned: dict[str, str]) -> dict[str, str]:
    # A shape rule (e.g. one member's rows not a multiple of 32) can leave one member 16-bit;
    # vLLM cannot load such a set, so the whole set stays 16-bit.
    for fused in anatomy.fused_sets:
        if len({assigned[member] for member in fused.members}) > 1:
            for member in fused.members:
                assigned[member] = KEPT
    return assigned


# ---------------------------------------------------------------------------------------------
# Footprint
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """Predicted checkpoint size of a recipe applied to an anatomy (bytes on disk ≈ weight memory).

    `bytes_by_group`: all tensors per anatomy group. `kept_bytes_by_group`: bytes of linear layers
    left 16-bit per group. `modules_by_scheme`: number of linear modules per format name.
    """

    recipe: str
    source: str
    bytes_by_group: Mapping[str, int]
    kept_bytes_by_group: Mapping[str, int]
    params_by_group: Mapping[str, int]
    modules_by_scheme: Mapping[str, int]
    total_bytes: int
    original_bytes: int
    schemes: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def kept_bytes(self) -> int:
        """Bytes of linear layers left 16-bit."""
        return sum(self.kept_bytes_by_group.values())

    @property
    def ratio(self) -> float:
        """Predicted size / original checkpoint size."""
        return self.total_bytes / self.original_bytes if self.original_bytes else 0.0

    def fits(self, budget_bytes: int) -> bool:
        """Whether the weights fit in `budget_bytes` (weights only: no KV cache or activations)."""
        return self.total_bytes <= budget_bytes


def _kept_nbytes(tensor: TensorInfo) -> int:
    # An FP8 source layer left unquantized is written back dequantized to 16-bit.
    return tensor.numel * 2 if tensor.dtype.startswith("F8") else tensor.nbytes


def predict_footprint(anatomy: Anatomy, recipe: Recipe) -> Footprint:
    """Bytes per group and in total of `anatomy` stored with `recipe`, as AutoRound exports it.

    Quantized linear weights count every exported tensor (`formats.stored_bytes`); everything else
    (kept layers, norms, embeddings, biases, convolutions) counts its bytes on disk. Scales and
    other artifacts of an already-quantized source are dropped, since the weight is re-exported.
    """
    packed = [t.name for t in anatomy.tensors if t.param in ("qweight", "weight_packed")]
    if packed:
        raise QuantscopeError(
            f"{anatomy.source}: already holds packed quantized weights ({packed[0]}); "
            "plan from the original (unquantized) checkpoint"
        )
    schemes = assign_schemes(anatomy, recipe)
    by_group = dict.fromkeys(GROUPS, 0)
    kept = dict.fromkeys(GROUPS, 0)
    sizes: dict[tuple[tuple[int, ...], str], int] = {}  # many layers share a shape
    for module, tensor in anatomy.linear_weights.items():
        scheme = schemes[module]
        if scheme == KEPT:
            kept[tensor.group] += _kept_nbytes(tensor)
            by_group[tensor.group] += _kept_nbytes(tensor)
            continue
        key = (tensor.shape, scheme)
        if key not in sizes:
            sizes[key] = stored_bytes(anatomy.weight_shape(tensor), get_format(scheme))
        by_group[tensor.group] += sizes[key]
    for group, nbytes in anatomy.fixed_bytes_by_group.items():
        by_group[group] += nbytes
    counts: dict[str, int] = {}
    for scheme in schemes.values():
        counts[scheme] = counts.get(scheme, 0) + 1
    return Footprint(
        recipe=recipe.name,
        source=anatomy.source,
        bytes_by_group=by_group,
        kept_bytes_by_group=kept,
        params_by_group=anatomy.params_by_group,
        modules_by_scheme=counts,
        total_bytes=sum(by_group.values()),
        original_bytes=anatomy.total_bytes,
        schemes=schemes,
    )


@dataclass(frozen=True)
class SourceCheckpoint:
    """The quantized checkpoint a plan was asked about: its label, its bytes, and for a bare config
    the file that declares its formats (`declared_in`; the bytes are then as declared, not read)."""

    label: str
    nbytes: int
    declared_in: str | None = None


@dataclass(frozen=True)
class Plan:
    """Every recipe's predicted footprint on one checkpoint, and whether it fits `budget_bytes`
    (bytes of weights; None = no budget). `anatomy` is the unquantized model the recipes apply
    to; `source` describes the quantized checkpoint it was derived from (None when unquantized)."""

    anatomy: Anatomy
    recipes: tuple[Recipe, ...]
    footprints: tuple[Footprint, ...]
    budget_bytes: int | None = None
    source: SourceCheckpoint | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (what `quantscope plan --json` prints)."""
        rows = [
            {
                "recipe": recipe.name,
                "scheme": recipe.scheme,
                "description": recipe.description,
                "total_bytes": footprint.total_bytes,
                "ratio": footprint.ratio,
                "bytes_by_group": dict(footprint.bytes_by_group),
                "kept_bytes_by_group": dict(footprint.kept_bytes_by_group),
                "modules_by_scheme": dict(footprint.modules_by_scheme),
                "fits": footprint.fits(self.budget_bytes) if self.budget_bytes is not None else None,
            }
            for recipe, footprint in zip(self.recipes, self.footprints, strict=True)
        ]
        return {
            "source": self.anatomy.source,
            "original_bytes": self.anatomy.total_bytes,
            "quantized_source": asdict(self.source) if self.source else None,
            "budget_bytes": self.budget_bytes,
            "recipes": rows,
        }


def plan_recipes(
    anatomy: Anatomy, recipes: tuple[Recipe, ...] | None = None, budget_bytes: int | None = None
) -> Plan:
    """The footprint of every preset (and of `recipes`, when given, after them) on `anatomy`.

    A quantized checkpoint (its headers, or a bare config that declares a quantization) is planned
    as the unquantized model behind it (`storage.logical_anatomy`); `Plan.source` says what it is.
    """
    from quantscope.checkpoint.contents import logical_anatomy, read_contents

    source = None
    if anatomy.is_quantized:
        contents = read_contents(anatomy)
        source = SourceCheckpoint(contents.label, contents.nbytes, contents.declared_in)
        anatomy = logical_anatomy(contents)
    chosen = (*PRESETS.values(), *(recipes or ()))
    footprints = tuple(predict_footprint(anatomy, r) for r in chosen)
    return Plan(anatomy, chosen, footprints, budget_bytes, source)
