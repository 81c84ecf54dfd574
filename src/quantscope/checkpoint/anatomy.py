"""A checkpoint's anatomy: every tensor, its shape, dtype, bytes and role, from headers only.

`load.load_anatomy` reads `config.json` and the safetensors headers (the 8-byte length plus the JSON
header at the start of each shard) of a local directory or a Hugging Face model id, and never a
byte of weight data, so it answers in seconds for a 400B-parameter model. Each tensor lands in one
of `GROUPS`; names the rules do not recognise land in `other` and are reported, never dropped.

It also records the *fused sets*: modules vLLM loads into one fused layer (q/k/v, gate/up,
Gated DeltaNet in_proj_qkv+in_proj_z and in_proj_b+in_proj_a, all experts of one MoE layer).
vLLM gives a fused layer one quantization scheme, so a recipe must not split a set.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    import torch

GROUPS: tuple[str, ...] = (
    "embed",
    "lm_head",
    "full_attn",
    "linear_attn",
    "dense_mlp",
    "routed_experts",
    "shared_expert",
    "shared_expert_gate",
    "router",
    "mtp",
    "vision",
    "norm",
    "other",
)

# Bytes per element of each safetensors dtype; sub-byte dtypes are stored packed.
DTYPE_BITS: dict[str, int] = {
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "F32": 32,
    "I32": 32,
    "U32": 32,
    "F16": 16,
    "BF16": 16,
    "I16": 16,
    "U16": 16,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "I8": 8,
    "U8": 8,
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

# Suffixes naming a parameter (or a quantization artifact) of a module rather than a module.
# torch dtype name -> safetensors dtype string (safetensors' own names).
_SAFETENSORS_DTYPES: dict[str, str] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}

PARAM_SUFFIXES: tuple[str, ...] = (
    "weight",
    "bias",
    "qweight",
    "qzeros",
    "scales",
    "g_idx",
    "weight_packed",
    "weight_scale",
    "weight_scale_inv",
    "weight_scale_2",
    "weight_global_scale",
    "weight_zero_point",
    "weight_shape",
    "input_scale",
    "input_global_scale",
    "input_scale_inv",
    "input_zero_point",
    "pre_quant_scale",
    "k_scale",
    "v_scale",
)

# Tensors a quantizer writes next to a weight; a plan counts the logical weight only.
QUANT_ARTIFACT_SUFFIXES: frozenset[str] = frozenset(PARAM_SUFFIXES) - {"weight", "bias"}

# The largest header we accept: real headers of 400B models are a few MB.
_MAX_HEADER_BYTES = 256 * 1024 * 1024

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_INDEX_RE = re.compile(r"\.\d+\.")
_VISION_RE = re.compile(
    r"(^|\.)(visual|vision_tower|vision_model|vision_encoder|multi_modal_projector|mm_projector|"
    r"image_newline|patch_embed|merger)\."
)
# Leaf modules vLLM fuses into one layer, and the name of the fused layer.
_FUSION_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("q_proj", "k_proj", "v_proj"), "qkv_proj"),
    (("gate_proj", "up_proj"), "gate_up_proj"),
    (("in_proj_qkv", "in_proj_z"), "in_proj_qkvz"),
    (("in_proj_b", "in_proj_a"), "in_proj_ba"),
)


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor: its checkpoint name, shape, safetensors dtype, role and bytes on disk.

    `linear` caches `is_linear_weight` (filled by `load_anatomy`; computed when left None).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    group: str
    nbytes: int
    linear: bool | None = field(default=None, compare=False, repr=False)

    @property
    def module(self) -> str:
        """The module the tensor belongs to: the name minus a parameter suffix like `.weight`."""
        return module_name(self.name)

    @property
    def param(self) -> str:
        """The parameter suffix (`weight`, `bias`, `qweight`…), or "" for a bare parameter."""
        head, _, tail = self.name.rpartition(".")
        return tail if head and tail in PARAM_SUFFIXES else ""

    @property
    def numel(self) -> int:
        """Number of elements (parameters)."""
        return math.prod(self.shape)

    @property
    def layer(self) -> int | None:
        """The decoder layer index (`layers.N.`), or None outside the layer stack."""
        match = _LAYER_RE.search(self.name)
        return int(match.group(1)) if match else None

    @property
    def is_linear_weight(self) -> bool:
        """True for the weight of a linear layer a weight quantizer can compress.

        That is a 2-D `.weight` outside embeddings, norms and convolutions, or a fused 3-D expert
        tensor `[experts, out, in]` (transformers v5 `mlp.experts.gate_up_proj` / `down_proj`).
        """
        if self.linear is not None:
            return self.linear
        return _is_linear(self.dtype, len(self.shape), self.group, *_linear_name_rule(self.name))

    @property
    def is_quant_artifact(self) -> bool:
        """True for scales, zeros, packed weights and other tensors a quantizer added."""
        return self.param in QUANT_ARTIFACT_SUFFIXES


_LINEAR_DTYPES = frozenset({"BF16", "F16", "F32", "F8_E4M3"})


def _linear_name_rule(name: str) -> tuple[bool, bool]:
    """Whether a tensor with this name is a linear weight if it is 2-D, and if it is 3-D."""
    module, _, param = name.rpartition(".")
    if param not in PARAM_SUFFIXES:
        module, param = name, ""
    leaf = module.rpartition(".")[2]
    if "norm" in leaf or "conv" in leaf or "embed" in leaf:
        return False, False
    return param == "weight", param == "" and ".experts." in f"{name}."


def _is_linear(dtype: str, ndim: int, group: str, as_2d: bool, as_3d: bool) -> bool:
    if group in ("embed", "norm") or dtype not in _LINEAR_DTYPES:
        return False
    return (ndim == 2 and as_2d) or (ndim == 3 and as_3d)


@dataclass(frozen=True)
class FusedSet:
    """Modules vLLM loads as one fused layer; they must share one quantization scheme."""

    name: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Anatomy:
    """Every tensor of a checkpoint, classified, plus its config and fused sets."""

    source: str
    model_type: str
    config: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...]
    fused_sets: tuple[FusedSet, ...]
    files: tuple[str, ...] = field(default=())

    def by_group(self) -> dict[str, list[TensorInfo]]:
        """Tensors per group, in `GROUPS` order; every group is present (possibly empty)."""
        groups: dict[str, list[TensorInfo]] = {group: [] for group in GROUPS}
        for tensor in self.tensors:
            groups[tensor.group].append(tensor)
        return groups

    @property
    def total_bytes(self) -> int:
        """Bytes of all tensors on disk (headers excluded)."""
        return sum(tensor.nbytes for tensor in self.tensors)

    @property
    def total_params(self) -> int:
        """Number of stored elements across all tensors."""
        return sum(tensor.numel for tensor in self.tensors)

    @property
    def unknown(self) -> tuple[TensorInfo, ...]:
        """Tensors no rule recognised (group `other`)."""
        return tuple(tensor for tensor in self.tensors if tensor.group == "other")

    @property
    def is_quantized(self) -> bool:
        """True when the checkpoint already holds quantized weights (a quantization_config or artifacts)."""
        return (
            "quantization_config" in self.config
            or "hf_quant_config" in self.config
            or any(t.is_quant_artifact or t.dtype not in DTYPE_BITS for t in self.tensors)
        )

    @cached_property
    def linear_weights(self) -> dict[str, TensorInfo]:
        """Module name -> weight tensor of every linear layer (see `TensorInfo.is_linear_weight`)."""
        return {module_name(t.name): t for t in self.tensors if t.is_linear_weight}

    @cached_property
    def params_by_group(self) -> dict[str, int]:
        """Parameters per group, quantization artifacts (scales, zeros…) excluded."""
        params = dict.fromkeys(GROUPS, 0)
        for tensor in self.tensors:
            if not tensor.is_quant_artifact:
                params[tensor.group] += tensor.numel
        return params

    @cached_property
    def fixed_bytes_by_group(self) -> dict[str, int]:
        """Bytes per group of the tensors no weight quantizer changes: all but linear weights
        and quantization artifacts (norms, embeddings, biases, convolutions, A_log…)."""
        fixed = dict.fromkeys(GROUPS, 0)
        for tensor in self.tensors:
            if not tensor.is_linear_weight and not tensor.is_quant_artifact:
                fixed[tensor.group] += tensor.nbytes
        return fixed

    @cached_property
    def _index(self) -> dict[str, TensorInfo]:
        return {tensor.name: tensor for tensor in self.tensors}

    def tensor(self, name: str) -> TensorInfo:
        """The tensor stored under `name`; raises QuantscopeError naming the checkpoint if absent."""
        try:
            return self._index[name]
        except KeyError:
            raise QuantscopeError(f"{self.source}: no tensor named {name!r}") from None

    def weight_shape(self, tensor: TensorInfo) -> tuple[int, ...]:
        """A linear weight's shape as `[out, in]`, or `[experts, out, in]` for fused experts.

        Fused expert tensors come in two layouts: transformers v5 `gate_up_proj [E, 2I, H]` /
        `down_proj [E, H, I]`, and the transposed `[E, H, 2I]` / `[E, I, H]` of some checkpoints
        (e.g. Qwen3-VL-MoE). The hidden size tells them apart: gate/up read it, down writes it.
        """
        if len(tensor.shape) != 3:
            return tensor.shape
        experts, rows, cols = tensor.shape
        hidden = text_config(self.config).get("hidden_size")
        leaf = tensor.module.rsplit(".", 1)[-1]
        reads_hidden = "down" not in leaf
        transposed = (
            (rows == hidden and cols != hidden) if reads_hidden else (cols == hidden and rows != hidden)
        )
        return (experts, cols, rows) if transposed else tensor.shape

    @property
    def layer_types(self) -> dict[str, int]:
        """How many decoder layers of each kind the config lists (`layer_types`), in order of
        first appearance, e.g. {"linear_attention": 48, "full_attention": 16}; {} when unlisted."""
        kinds = text_config(self.config).get("layer_types")
        if not isinstance(kinds, list):
            return {}
        return {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}

    def to_dict(self, with_tensors: bool = False) -> dict[str, Any]:
        """JSON-ready data (what `quantscope inspect --json` prints): totals, per-group tensor
        counts, parameters and bytes, unknown tensors and fused sets; every tensor when asked."""
        groups = {
            group: {
                "tensors": len(members),
                "params": sum(t.numel for t in members),
                "bytes": sum(t.nbytes for t in members),
            }
            for group, members in self.by_group().items()
        }
        data: dict[str, Any] = {
            "source": self.source,
            "model_type": self.model_type,
            "total_bytes": self.total_bytes,
            "total_params": self.total_params,
            "groups": groups,
            "unknown": [t.name for t in self.unknown],
            "fused_sets": [{"name": f.name, "members": list(f.members)} for f in self.fused_sets],
        }
        if with_tensors:
            data["tensors"] = [
                {
                    "name": t.name,
                    "group": t.group,
                    "dtype": t.dtype,
                    "shape": list(t.shape),
                    "bytes": t.nbytes,
                }
                for t in self.tensors
            ]
        return data

    def fused_set_of(self, module: str) -> FusedSet | None:
        """The fused set containing `module`, or None."""
        return self._fused_index.get(module)

    @cached_property
    def _fused_index(self) -> dict[str, FusedSet]:
        return {member: fused for fused in self.fused_sets for member in fused.members}


def safetensors_dtype(dtype: torch.dtype, name: str = "a tensor") -> str:
    """The safetensors dtype string ("BF16", "F8_E4M3"…) of a torch dtype."""
    dtype_name = str(dtype).removeprefix("torch.")
    if dtype_name not in _SAFETENSORS_DTYPES:
        raise QuantscopeError(f"tensor {name!r}: dtype {dtype_name} has no safetensors name")
    return _SAFETENSORS_DTYPES[dtype_name]


def torch_dtype(safetensors: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype string (the inverse of `safetensors_dtype`)."""
    import torch

    names = {value: key for key, value in _SAFETENSORS_DTYPES.items()}
    return getattr(torch, names[safetensors])


def module_name(tensor_name: str) -> str:
    """The module a tensor belongs to: `a.b.weight` -> `a.b`; names without a known suffix stay whole."""
    head, _, tail = tensor_name.rpartition(".")
    return head if head and tail in PARAM_SUFFIXES else tensor_name


def _text_name(name: str) -> str:
    """Strip the text-model prefixes so rules see `layers.N.…`, `embed_tokens…`, `lm_head…`."""
    for prefix in ("model.language_model.", "language_model.model.", "language_model.", "model."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _is_mtp(name: str, config: Mapping[str, Any]) -> bool:
    if name.startswith(("mtp.", "mtp_", "model.mtp")) or ".mtp." in name:
        return True
    first_mtp_layer = _mtp_in_stack_from(config)
    return first_mtp_layer is not None and _beyond_stack(name, first_mtp_layer)


def classify_tensor(name: str, config: Mapping[str, Any] | None = None) -> str:
    """The group (one of `GROUPS`) of a tensor, from its checkpoint name and the model config."""
    if _VISION_RE.search(f".{name}") or name.startswith(("visual.", "vision_")):
        return "vision"
    if _is_mtp(name, config or {}):
        return "mtp"
    # Names differ mostly by layer and expert index: classify each name shape once.
    return _classify_text(_INDEX_RE.sub(".0.", _text_name(name)))


@lru_cache(maxsize=4096)
def _classify_text(text: str) -> str:
    module = module_name(text)
    leaf = module.rsplit(".", 1)[-1]
    if leaf in ("embed_tokens", "wte", "word_embeddings", "tok_embeddings", "embeddings"):
        return "embed"
    if leaf in ("lm_head", "output") and "layers." not in module:
        return "lm_head"
    return _classify_layer_module(module, leaf)


def _classify_layer_module(module: str, leaf: str) -> str:
    parts = module.split(".")
    if "linear_attn" in parts:
        return "linear_attn"
    if {"self_attn", "attention", "attn"} & set(parts):
        return "full_attn"
    if "shared_expert_gate" in parts:
        return "shared_expert_gate"
    if {"shared_expert", "shared_experts", "shared_mlp"} & set(parts):
        return "shared_expert"
    if "experts" in parts:
        return "routed_experts"
    if {"mlp", "block_sparse_moe", "feed_forward", "moe"} & set(parts):
        if leaf in ("gate", "router", "e_score_correction_bias") or parts[-2:] == [
            "gate",
            "e_score_correction_bias",
        ]:
            return "router"
        if leaf in ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "w1", "w2", "w3"):
            return "dense_mlp"
    if "norm" in leaf or leaf.endswith("layernorm"):
        return "norm"
    return "other"


def find_fused_sets(modules: Iterable[str]) -> tuple[FusedSet, ...]:
    """Fused sets among linear module names: q/k/v, gate/up, in_proj_qkv+z, in_proj_b+a, experts.

    All routed experts of one MoE layer form one set, because vLLM's FusedMoE layer holds them
    in one quantization method. Only sets with at least two present members are returned.
    """
    experts: dict[str, list[str]] = {}
    siblings: dict[str, set[str]] = {}
    for module in dict.fromkeys(modules):
        head, found, _ = module.partition(".experts.")
        if found:
            experts.setdefault(f"{head}.experts", []).append(module)
        else:
            parent, _, leaf = module.rpartition(".")
            siblings.setdefault(parent, set()).add(leaf)
    sets = [FusedSet(name, tuple(members)) for name, members in experts.items() if len(members) > 1]
    for parent, leaves in siblings.items():
        for members, fused in _FUSION_RULES:
            present = tuple(f"{parent}.{leaf}" for leaf in members if leaf in leaves)
            if len(present) > 1:
                sets.append(FusedSet(f"{parent}.{fused}", present))
    return tuple(sorted(sets, key=lambda s: s.name))


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def build_anatomy(
    source: str,
    config: Mapping[str, Any],
    headers: Iterable[tuple[str, str, tuple[int, ...], int]],
    files: Iterable[str] = (),
) -> Anatomy:
    """Build an Anatomy from `(name, dtype, shape, nbytes)` header entries and a config dict.

    Tensor names differ mostly by layer and expert index, so each name *shape* (indices replaced)
    is classified once; a 400B MoE's ~95k tensors collapse to about a hundred shapes.
    """
    first_mtp_layer = _mtp_in_stack_from(config)
    rules: dict[str, tuple[str, bool, bool]] = {}
    tensors = []
    for name, dtype, shape, nbytes in headers:
        key = _INDEX_RE.sub(".0.", name)
        rule = rules.get(key)
        if rule is None:
            rule = rules[key] = (classify_tensor(key, {}), *_linear_name_rule(key))
        group = rule[0]
        if (
            first_mtp_layer is not None
            and group not in ("vision", "mtp")
            and _beyond_stack(name, first_mtp_layer)
        ):
            group = "mtp"
        linear = _is_linear(dtype, len(shape), group, rule[1], rule[2])
        tensors.append(TensorInfo(name, shape, dtype, group, nbytes, linear))
    return Anatomy(
        source=source,
        model_type=_model_type(config),
        config=config,
        tensors=tuple(tensors),
        fused_sets=find_fused_sets(module_name(t.name) for t in tensors if t.linear),
        files=tuple(files),
    )


def _mtp_in_stack_from(config: Mapping[str, Any]) -> int | None:
    """The first layer index that is an MTP block in DeepSeek-style checkpoints, else None.

    DeepSeek V3 stores its `num_nextn_predict_layers` MTP blocks as `model.layers.N` right after
    the last decoder layer.
    """
    text = text_config(config)
    num_layers = text.get("num_hidden_layers")
    if isinstance(num_layers, int) and text.get("num_nextn_predict_layers"):
        return num_layers
    return None


def _beyond_stack(name: str, num_layers: int) -> bool:
    match = _LAYER_RE.search(name)
    return bool(match and int(match.group(1)) >= num_layers)


def text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A multimodal config's `text_config`, else the config itself."""
    text = config.get("text_config")
    return text if isinstance(text, Mapping) else config


def _model_type(config: Mapping[str, Any]) -> str:
    return str(config.get("model_type") or text_config(config).get("model_type") or "unknown")


def checkpoint_shards(directory: Path) -> list[Path]:
    """The safetensors shards of a checkpoint directory: those its index names, else every
    `*.safetensors` file. QuantscopeError when there are none or the index names missing files."""
    return _local_shards(directory)


def _local_shards(directory: Path) -> list[Path]:
    index_path = directory / "model.safetensors.index.json"
    if index_path.exists():
        weight_map = read_json_object(index_path).get("weight_map")
        if not isinstance(weight_map, Mapping) or not weight_map:
            raise QuantscopeError(f"{index_path}: missing or empty 'weight_map'")
        shards = [directory / name for name in dict.fromkeys(weight_map.values())]
        missing = [shard.name for shard in shards if not shard.exists()]
        if missing:
            raise QuantscopeError(f"{index_path}: shard files missing: {', '.join(missing[:5])}")
        return shards
    shards = sorted(directory.glob("*.safetensors"))
    if not shards:
        raise QuantscopeError(
            f"{directory}: no *.safetensors files "
            "(give a safetensors checkpoint dir, a .gguf file or a config.json)"
        )
    return shards


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; QuantscopeError naming the file otherwise."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise QuantscopeError(f"{path}: cannot read JSON ({error})") from None
    if not isinstance(data, dict):
        raise QuantscopeError(f"{path}: expected a JSON object")
    return data


def read_safetensors_header(path: Path) -> list[tuple[str, str, tuple[int, ...], int]]:
    """`(name, dtype, shape, nbytes)` for each tensor in one safetensors file, from its header only.

    Reads the 8-byte little-endian header length and the JSON header; never the data section,
    so a shard that holds only a header (declared sizes, no data) reads the same as a full one.
    """
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise QuantscopeError(f"{path}: too short to be a safetensors file")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise QuantscopeError(f"{path}: header length {length} is implausible; not safetensors?")
            raw = handle.read(length)
    except OSError as error:
        raise QuantscopeError(f"{path}: cannot read ({error})") from None
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise QuantscopeError(f"{path}: the safetensors header is not valid JSON ({error})") from None
    return _header_entries(header, str(path))


def _header_entries(header: Mapping[str, Any], where: str) -> list[tuple[str, str, tuple[int, ...], int]]:
    entries = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = meta["data_offsets"]
            dtype = meta["dtype"]
            if type(dtype) is not str:
                raise TypeError(dtype)
            entries.append((name, dtype, tuple(meta["shape"]), end - start))
        except (KeyError, TypeError, ValueError):
            raise QuantscopeError(f"{where}: malformed header entry for tensor {name!r}") from None
    return entries


def check_unique(headers: list[tuple[str, str, tuple[int, ...], int]], where: Path | str) -> None:
    """QuantscopeError naming the first tensor that more than one shard of `where` holds."""
    names = [entry[0] for entry in headers]
    if len(set(names)) == len(names):
        return
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise QuantscopeError(f"{where}: tensor {name!r} appears in more than one shard")
        seen.add(name)
