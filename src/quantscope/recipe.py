"""Recipes: which format each linear layer is stored in, presets, YAML I/O and the footprint.

A `Recipe` is a scheme (a `formats` name) plus what stays 16-bit (anatomy groups and module
regexes) plus per-pattern overrides. `assign_schemes` resolves it against an `Anatomy` the way
AutoRound 0.16 will apply it, and `predict_footprint` turns that into exact bytes per group.

Precedence, lowest to highest: `scheme`, `keep_groups`, `keep_patterns`, `overrides` (a later
override beats an earlier one). On top of any recipe, AutoRound's (and vLLM's) fixed rules hold:
only linear layers inside the decoder stack are quantized (lm_head only with `quantize_lm_head`
and untied embeddings); the MoE router and shared-expert gate stay 16-bit (vLLM builds them
unquantized); the vision tower stays 16-bit; a shape the format cannot hold stays 16-bit; and a
vLLM fused set (q/k/v, gate/up, …) whose members would end in different formats because of a
shape rule stays 16-bit as a whole, while a recipe that splits one is rejected.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quantscope.anatomy import GROUPS, Anatomy, TensorInfo
from quantscope.errors import QuantscopeError
from quantscope.formats import Format, can_quantize, get_format, stored_bytes

KEPT = "bf16"  # the scheme name assigned to layers left unquantized

# Groups whose linear layers no recipe quantizes: vLLM builds the router and the shared-expert
# gate as unquantized layers, and AutoRound leaves non-text modules alone by default.
ALWAYS_KEPT_GROUPS: tuple[str, ...] = ("embed", "norm", "router", "shared_expert_gate", "vision")

# AutoRound re-quantizes MTP layers (not loaded by transformers) with RTN only for integer
# formats, and never these modules (its BLOCK_NAME_TO_IGNORE list).
_MTP_IGNORED = (".shared_expert_gate.", ".gate.", ".g_proj.", "mtp.fc.")


@dataclass(frozen=True)
class Override:
    """Store the linear modules whose name matches `pattern` (a regex, searched) in `scheme`."""

    pattern: str
    scheme: str


@dataclass(frozen=True)
class Recipe:
    """A named quantization recipe. See the module docstring for how the fields combine."""

    name: str
    scheme: str
    keep_groups: tuple[str, ...] = ()
    keep_patterns: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()
    quantize_lm_head: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        where = f"recipe {self.name!r}"
        get_format(self.scheme)
        unknown = [group for group in self.keep_groups if group not in GROUPS]
        if unknown:
            raise QuantscopeError(f"{where}: unknown keep_groups {unknown}; groups are: {', '.join(GROUPS)}")
        for pattern in (*self.keep_patterns, *(o.pattern for o in self.overrides)):
            _compile(pattern, where)
        for override in self.overrides:
            get_format(override.scheme)

    @property
    def format(self) -> Format:
        """The recipe's main storage format."""
        return get_format(self.scheme)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML: the fields, overrides as `{pattern, scheme}` mappings."""
        return {
            "name": self.name,
            "scheme": self.scheme,
            "keep_groups": list(self.keep_groups),
            "keep_patterns": list(self.keep_patterns),
            "overrides": [{"pattern": o.pattern, "scheme": o.scheme} for o in self.overrides],
            "quantize_lm_head": self.quantize_lm_head,
            "description": self.description,
        }


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
        Recipe("fp8", "fp8", description="FP8 E4M3, per-channel scales, every eligible linear layer"),
        Recipe(
            "fp8-block", "fp8_block", description="FP8 E4M3, 128×128 block scales (DeepSeek/Qwen FP8 style)"
        ),
        Recipe("w8a16", "w8a16", description="INT8 weight-only, group 128"),
        *_family("w4a16", "INT4 weight-only, group 128"),
        *_family("nvfp4", "NVFP4 (FP4 + FP8 scale per 16)"),
        *_family("mxfp4", "MXFP4 (FP4 + E8M0 scale per 32)"),
    )
}

_RECIPE_KEYS = frozenset(Recipe.__dataclass_fields__)
_OVERRIDE_KEYS = frozenset(Override.__dataclass_fields__)


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A preset by name, or a recipe read from a YAML file; unknown keys are errors."""
    if isinstance(name_or_path, str) and name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise QuantscopeError(
            f"{name_or_path}: neither a preset nor a recipe file; presets: {', '.join(PRESETS)}"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise QuantscopeError(f"{path}: cannot read YAML ({error})") from None
    return recipe_from_dict(data, where=str(path))


def recipe_from_dict(data: Any, where: str = "recipe") -> Recipe:
    """Build a Recipe from parsed YAML/JSON data, with errors naming `where` and the field."""
    if not isinstance(data, Mapping):
        raise QuantscopeError(f"{where}: a recipe is a mapping with at least 'name' and 'scheme'")
    unknown = sorted(set(data) - _RECIPE_KEYS)
    if unknown:
        raise QuantscopeError(f"{where}: unknown keys {unknown}; allowed: {', '.join(sorted(_RECIPE_KEYS))}")
    for key in ("name", "scheme"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise QuantscopeError(f"{where}: '{key}' is required and must be a string")
    if not isinstance(data.get("quantize_lm_head", False), bool):
        raise QuantscopeError(f"{where}: 'quantize_lm_head' must be true or false")
    try:
        return Recipe(
            name=data["name"],
            scheme=data["scheme"],
            keep_groups=_str_tuple(data.get("keep_groups"), "keep_groups", where),
            keep_patterns=_str_tuple(data.get("keep_patterns"), "keep_patterns", where),
            overrides=tuple(
                _override(item, where) for item in _list(data.get("overrides"), "overrides", where)
            ),
            quantize_lm_head=data.get("quantize_lm_head", False),
            description=str(data.get("description") or ""),
        )
    except QuantscopeError as error:
        raise QuantscopeError(f"{where}: {error}") from None


def _list(value: Any, key: str, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise QuantscopeError(f"{where}: '{key}' must be a list")
    return value


def _str_tuple(value: Any, key: str, where: str) -> tuple[str, ...]:
    items = _list(value, key, where)
    if not all(isinstance(item, str) for item in items):
        raise QuantscopeError(f"{where}: every entry of '{key}' must be a string")
    return tuple(items)


def _override(item: Any, where: str) -> Override:
    if not isinstance(item, Mapping) or set(item) != _OVERRIDE_KEYS:
        raise QuantscopeError(f"{where}: each override is a mapping with exactly 'pattern' and 'scheme'")
    if not all(isinstance(item[key], str) for key in _OVERRIDE_KEYS):
        raise QuantscopeError(f"{where}: override 'pattern' and 'scheme' must be strings")
    return Override(pattern=item["pattern"], scheme=item["scheme"])


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write `recipe` as YAML to `path` atomically (temp file in the same dir, then rename)."""
    path = Path(path)
    text = yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    if tensor.group == "lm_head":
        return recipe.quantize_lm_head and not tied
    if tensor.group == "mtp":
        return (
            fmt.data_type == "int"
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
                fits[key] = can_quantize(anatomy.weight_shape(tensor), fmt)
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


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)\s*(?P<unit>[a-zA-Z]*)\s*$")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str | int | float) -> int:
    """Bytes from a size like "24GB" (10^9), "24GiB" (2^30), "512MiB", "24e9" or a plain number."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text)
    match = _SIZE_RE.match(str(text))
    unit = match.group("unit").lower() if match else None
    if match is None or unit not in _UNITS:
        raise QuantscopeError(f"cannot read size {text!r}; write e.g. 24GB, 24GiB, 80e9 or 512MiB")
    return int(float(match.group("number")) * _UNITS[unit])


def format_size(nbytes: int) -> str:
    """A human size in decimal units (GB = 10^9 bytes, as GPU memory is usually quoted)."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} B"
