"""A GGUF file's anatomy from its header alone: every tensor's name, logical shape, GGML type,
stored bytes and group, without reading a byte of tensor data.

A GGUF file is the magic `GGUF`, a version, tensor and key/value counts, the key/value metadata,
one record per tensor (name, dims innermost-first, GGML type, offset into the data section),
padding to `general.alignment`, then the data. `_read_header` follows the layout as
`gguf.GGUFReader` reads it (gguf 0.19, `gguf/gguf_reader.py`: `__init__`, `_build_fields`,
`_get_field_parts`, `_get_tensor_info_field`, `_build_tensors`).

Why not `GGUFReader` itself: it never reads tensor data either (`__init__` maps the file with
`np.memmap`, and `_build_tensors` only slices and reshapes views of that map), but
`_get_field_parts` builds numpy views for every element of every metadata array, so the
tokenizer's vocabulary and merges (49k + 49k strings for SmolLM2) take 1.8 s, growing with the
vocabulary. This reader skips the arrays it does not keep (SmolLM2: about 40 ms); the tests
check that it agrees with `GGUFReader` tensor for tensor.

Groups come from llama.cpp's tensor names, read from gguf's own tables (`TENSOR_NAMES`,
`MODEL_TENSOR`). A tensor lands where `anatomy.classify_tensor` puts the Hugging Face tensor it
was converted from: attention q/k norms with attention, the Gated DeltaNet's `ssm_norm` with the
linear attention, every other norm in `norm` (the tests check this on llama and Qwen3.5 names).
`gguf` is imported on first use (~0.5 s, mostly `gguf.vocab` importing `mistral_common`), so
`is_gguf_type` on a safetensors dtype costs nothing.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantscope.checkpoint.anatomy import DTYPE_BITS, Anatomy, TensorInfo
from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    from gguf import MODEL_TENSOR

# Longer metadata arrays (vocabularies, merges, scores) are skipped, not parsed.
_KEPT_ARRAY_LENGTH = 4096
_INDEX = re.compile(r"\.\d+(?=\.|$)")
_BLOCK = re.compile(r"^blk\.(\d+)\.")
_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-\d{5}-of-\d{5}\.gguf$")


# ---------------------------------------------------------------------------------------------
# GGML types
# ---------------------------------------------------------------------------------------------


def gguf_bits_per_weight(type_name: str) -> float:
    """Stored bits per weight of a GGML type, scales and minimums included: 8 × type_size /
    block_size from `gguf.GGML_QUANT_SIZES` (Q4_1: 32 weights in 20 bytes -> 5.0; F32 -> 32).

    Raises QuantscopeError for a name that is no GGML type.
    """
    sizes = _type_sizes()
    if type_name not in sizes:
        raise QuantscopeError(f"{type_name!r} is not a GGML type (known: {', '.join(sizes)})")
    block_size, type_size = sizes[type_name]
    return 8 * type_size / block_size


def is_gguf_type(dtype: str) -> bool:
    """True for GGML's block types (Q4_1, Q8_0, Q4_K, IQ4_XS, MXFP4…), the types only GGUF stores.

    GGML's element types (F32, F16, BF16, F64, I8…I64) share their names with safetensors dtypes
    and store the same bytes, so they return False: a BF16 weight reads the same from either file.
    """
    return dtype not in DTYPE_BITS and dtype in _type_sizes()


@lru_cache(maxsize=1)
def _type_sizes() -> dict[str, tuple[int, int]]:
    from gguf import GGML_QUANT_SIZES

    return {ggml_type.name: sizes for ggml_type, sizes in GGML_QUANT_SIZES.items()}


# ---------------------------------------------------------------------------------------------
# The header
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    """One GGUF file's header: `tensors` are (name, dims innermost-first, GGML type id, offset
    into the data section); `data_offset` and `size` are bytes from the start of the file."""

    version: int
    metadata: dict[str, Any]
    tensors: list[tuple[str, tuple[int, ...], int, int]]
    data_offset: int
    size: int


class _Cursor:
    """Reads GGUF values from a memory map at a moving offset, in the file's byte order."""

    def __init__(self, buffer: mmap.mmap, order: str, offset: int) -> None:
        from gguf import GGUFValueType

        self.buffer, self.order, self.offset = buffer, order, offset
        self.scalars = _scalar_codes()
        self.string_kind, self.array_kind = GGUFValueType.STRING, GGUFValueType.ARRAY

    def unpack(self, code: str, count: int = 1) -> tuple[Any, ...]:
        values = struct.unpack_from(f"{self.order}{count}{code}", self.buffer, self.offset)
        self.offset += struct.calcsize(f"{self.order}{count}{code}")
        return values

    def string(self, keep: bool = True) -> str | None:
        (length,) = self.unpack("Q")
        start, self.offset = self.offset, self.offset + length
        if self.offset > len(self.buffer):
            raise ValueError(f"a string of {length} bytes runs past the end of the file")
        return self.buffer[start : self.offset].decode("utf-8", errors="replace") if keep else None

    def value(self, kind: int, keep: bool = True) -> Any:
        """The value of GGUF value type `kind`; arrays longer than `_KEPT_ARRAY_LENGTH` are
        skipped and read as None."""
        if kind == self.string_kind:
            return self.string(keep)
        if kind in self.scalars:
            return self.unpack(self.scalars[kind])[0]
        if kind != self.array_kind:
            raise ValueError(f"unknown metadata value type {kind}")
        item_kind, count = self.unpack("I")[0], self.unpack("Q")[0]
        keep = keep and count <= _KEPT_ARRAY_LENGTH
        if item_kind in self.scalars:
            code = self.scalars[item_kind]
            if keep:
                return list(self.unpack(code, count))
            self.offset += count * struct.calcsize(code)
            return None
        if item_kind == self.string_kind:
            items = [self.string(keep) for _ in range(count)]
        else:
            items = [self.value(item_kind, keep) for _ in range(count)]
        return items if keep else None


@lru_cache(maxsize=1)
def _scalar_codes() -> dict[int, str]:
    from gguf import GGUFValueType as V

    return {
        **{V.UINT8: "B", V.INT8: "b", V.UINT16: "H", V.INT16: "h", V.UINT32: "I", V.INT32: "i"},
        **{V.UINT64: "Q", V.INT64: "q", V.FLOAT32: "f", V.FLOAT64: "d", V.BOOL: "?"},
    }


def _read_header(path: Path) -> _Header:
    """The header of one GGUF file, through a read-only memory map (only header pages are read)."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
            if magic != b"GGUF":
                raise QuantscopeError(
                    f"{path}: not a GGUF file (it starts with {magic!r}, not b'GGUF'); give a .gguf "
                    "model file, or a safetensors checkpoint directory to load_anatomy"
                )
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                return _parse_header(buffer)
    except OSError as error:
        raise QuantscopeError(f"{path}: cannot read ({error})") from None
    except (struct.error, ValueError, UnicodeDecodeError) as error:
        raise QuantscopeError(f"{path}: the GGUF header is truncated or corrupt ({error})") from None


def _parse_header(buffer: mmap.mmap) -> _Header:
    from gguf import GGUF_DEFAULT_ALIGNMENT, Keys

    # Like GGUFReader: a version whose low 16 bits are zero was written in the other byte order.
    (version,) = struct.unpack_from("<I", buffer, 4)
    order = ">" if version & 0xFFFF == 0 else "<"
    cursor = _Cursor(buffer, order, 4)
    version, tensor_count, kv_count = cursor.unpack("I")[0], *cursor.unpack("Q", 2)
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} (this reader, like gguf's, reads versions 2 and 3)")
    if (tensor_count + kv_count) * 12 > len(buffer):
        raise ValueError(f"{tensor_count} tensors and {kv_count} keys cannot fit in {len(buffer)} bytes")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[str(key)] = cursor.value(cursor.unpack("I")[0])
    tensors = []
    for _ in range(tensor_count):
        name = str(cursor.string())
        dims = cursor.unpack("Q", cursor.unpack("I")[0])
        ggml_type, offset = cursor.unpack("I")[0], cursor.unpack("Q")[0]
        tensors.append((name, tuple(dims), ggml_type, offset))
    alignment = metadata.get(Keys.General.ALIGNMENT, GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"general.alignment {alignment!r} is not a power of two")
    data_offset = -(-cursor.offset // alignment) * alignment
    return _Header(version, metadata, tensors, data_offset, len(buffer))


def _shards(path: Path, header: _Header) -> list[tuple[Path, _Header]]:
    """Every file of a split GGUF (llama.cpp's `<name>-00001-of-0000N.gguf`), or just `path`."""
    from gguf import SHARD_NAME_FORMAT, Keys

    count = header.metadata.get(Keys.Split.LLM_KV_SPLIT_COUNT)
    if not isinstance(count, int) or count <= 1:
        return [(path, header)]
    match = _SPLIT_NAME.match(path.name)
    if match is None:
        raise QuantscopeError(
            f"{path}: one of {count} split files, but not named <name>-00001-of-{count:05d}.gguf; "
            "give the shards their llama.cpp names"
        )
    paths = [path.with_name(SHARD_NAME_FORMAT.format(match["prefix"], i, count)) for i in range(1, count + 1)]
    missing = [shard.name for shard in paths if not shard.is_file()]
    if missing:
        raise QuantscopeError(
            f"{path}: split into {count} files; missing {', '.join(missing[:5])} (put every shard in "
            f"{path.parent})"
        )
    return [(shard, header if shard == path else _read_header(shard)) for shard in paths]


# ---------------------------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------------------------


def gguf_tensor_kind(name: str) -> MODEL_TENSOR | None:
    """The `gguf.MODEL_TENSOR` a llama.cpp tensor name instantiates (`blk.3.attn_q.weight` ->
    `ATTN_Q`), from `gguf.TENSOR_NAMES`; None for a name the table does not have."""
    template = _INDEX.sub(".{bid}", name, count=1)
    templates = _templates()
    return templates.get(template) or templates.get(template.rpartition(".")[0])


def classify_gguf_tensor(
    name: str, linear_attn_blocks: Container[int] = frozenset(), first_mtp_block: int | None = None
) -> str:
    """The group (one of `anatomy.GROUPS`) of a GGUF tensor, from its llama.cpp name.

    `linear_attn_blocks`: the blocks holding `ssm_*` tensors, whose `attn_qkv` / `attn_gate` are
    the Gated DeltaNet's projections (qwen3next / qwen35), not softmax attention. Blocks from
    `first_mtp_block` on are MTP layers (llama.cpp appends `nextn_predict_layers` blocks).
    """
    from gguf import MODEL_TENSOR

    kind = gguf_tensor_kind(name)
    block = _block_of(name)
    if block is not None and first_mtp_block is not None and block >= first_mtp_block:
        return "mtp"
    if kind in (MODEL_TENSOR.ATTN_QKV, MODEL_TENSOR.ATTN_GATE) and block in linear_attn_blocks:
        return "linear_attn"
    return _groups_by_kind()[kind] if kind is not None else _group_of_unlisted(name)


# Groups of `gguf.MODEL_TENSOR` kinds the prefix and suffix rules of `_group_of_kind` do not give.
_FIXED_GROUPS: dict[str, str] = {
    "TOKEN_EMBD": "embed",
    "OUTPUT": "lm_head",
    "FFN_GATE": "dense_mlp",
    "FFN_UP": "dense_mlp",
    "FFN_DOWN": "dense_mlp",
    "FFN_GATE_INP": "router",
    "FFN_EXP_PROBS_B": "router",
    "FFN_GATE_INP_SHEXP": "shared_expert_gate",
}
# Norms inside the attention module (per-head q/k norms, MLA's latent norms), as HF names them.
_ATTENTION_NORMS = frozenset({"ATTN_Q_NORM", "ATTN_K_NORM", "ATTN_Q_A_NORM", "ATTN_KV_A_NORM"})


def _group_of_kind(kind: MODEL_TENSOR) -> str:
    name = kind.name.removeprefix("ENC_").removeprefix("DEC_")
    for prefix, group in (("NEXTN_", "mtp"), ("V_", "vision"), ("SSM_", "linear_attn")):
        if name.startswith(prefix):
            return group
    if name in _FIXED_GROUPS:
        return _FIXED_GROUPS[name]
    if name.endswith("_SHEXP"):
        return "shared_expert"
    if name.endswith(("_EXP", "_CHEXP")):
        return "routed_experts"
    if name in _ATTENTION_NORMS or name.startswith("INDEXER_"):  # DSA's indexer sits in self_attn
        return "full_attn"
    if "NORM" in name:
        return "norm"
    return "full_attn" if name.startswith(("ATTN_", "CROSS_ATTN_")) else "other"


def _group_of_unlisted(name: str) -> str:
    """Names newer than the installed gguf's table: the same rules on the name itself."""
    if name.startswith(("v.", "mm.")) and not name.startswith("mm.a."):
        return "vision"
    if ".nextn." in name:
        return "mtp"
    if ".ssm_" in name:
        return "linear_attn"
    return "norm" if "norm" in name.rpartition(".")[0].rsplit(".", 1)[-1] else "other"


@lru_cache(maxsize=1)
def _templates() -> dict[str, MODEL_TENSOR]:
    from gguf import TENSOR_NAMES

    templates: dict[str, MODEL_TENSOR] = {}
    for kind, template in TENSOR_NAMES.items():
        templates.setdefault(template, kind)  # FFN_NORM and FFN_PRE_NORM share one name
    return templates


@lru_cache(maxsize=1)
def _groups_by_kind() -> dict[MODEL_TENSOR, str]:
    from gguf import MODEL_TENSOR

    return {kind: _group_of_kind(kind) for kind in MODEL_TENSOR}


def _block_of(name: str) -> int | None:
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def _is_linear(name: str, ndim: int, group: str) -> bool:
    """A 2-D `.weight` of a linear layer, or a 3-D `[experts, out, in]` expert weight; not
    embeddings, norms or convolutions (`ssm_a` / `ssm_d` carry no `.weight` suffix)."""
    module, _, param = name.rpartition(".")
    leaf = module.rsplit(".", 1)[-1]
    if param != "weight" or group in ("embed", "norm"):
        return False
    if any(word in leaf for word in ("norm", "conv", "embd", "embed")):
        return False
    return ndim == 2 or (ndim == 3 and leaf.endswith(("_exps", "_chexps")))


# ---------------------------------------------------------------------------------------------
# The anatomy
# ---------------------------------------------------------------------------------------------


def load_gguf_anatomy(path: Path) -> Anatomy:
    """Read a GGUF file's anatomy from its header alone (all shards of a split file).

    Each tensor keeps its GGUF name; `shape` is the logical shape in PyTorch order (GGUF lists
    dims innermost-first, so a linear weight reads `[out, in]`, experts `[experts, out, in]`);
    `dtype` is the GGML type name ("Q4_1", "Q4_K", "F32"…); `nbytes` its stored bytes,
    numel / block_size × type_size. `config` carries the GGUF metadata under `gguf` and the
    Hugging Face names it maps to (`num_hidden_layers`, `hidden_size`, `tie_word_embeddings`…).
    Raises QuantscopeError for a file that is not GGUF, a truncated one, or an unknown type.
    """
    path = Path(path).expanduser()
    header = _read_header(path)
    shards = _shards(path, header)
    entries = [entry for shard, head in shards for entry in _tensor_entries(shard, head)]
    names = [name for name, *_ in entries]
    linear_attn_blocks = _linear_attn_blocks(names)
    metadata = shards[0][1].metadata  # llama.cpp writes the model's metadata into the first shard
    config = _config(metadata, header.version, set(names), linear_attn_blocks)
    layers = config.get("num_hidden_layers")
    first_mtp_block = layers if config.get("num_nextn_predict_layers") else None
    tensors = []
    for name, shape, dtype, nbytes in entries:
        group = classify_gguf_tensor(name, linear_attn_blocks, first_mtp_block)
        tensors.append(TensorInfo(name, shape, dtype, group, nbytes, _is_linear(name, len(shape), group)))
    return Anatomy(
        source=str(path),
        model_type=str(config["model_type"]),
        config=config,
        tensors=tuple(tensors),
        fused_sets=(),
        files=tuple(shard.name for shard, _ in shards),
    )


def _tensor_entries(path: Path, header: _Header) -> list[tuple[str, tuple[int, ...], str, int]]:
    """`(name, logical shape, GGML type name, nbytes)` per tensor, each checked to lie inside the
    file, on the alignment, without overlapping the next (a truncated download fails here)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    entries, extents = [], []
    for name, dims, type_id, offset in header.tensors:
        try:
            ggml_type = GGMLQuantizationType(type_id)
        except ValueError:
            raise QuantscopeError(
                f"{path}: tensor {name!r} has GGML type {type_id}, unknown to the installed gguf; "
                "upgrade it: pip install -U gguf"
            ) from None
        block_size, type_size = GGML_QUANT_SIZES[ggml_type]
        numel = math.prod(dims)
        if dims and dims[0] % block_size:
            raise QuantscopeError(
                f"{path}: tensor {name!r} has rows of {dims[0]}, not a multiple of {ggml_type.name}'s "
                f"block of {block_size}; the file is corrupt"
            )
        nbytes = numel // block_size * type_size
        entries.append((name, tuple(reversed(dims)), ggml_type.name, nbytes))
        extents.append((header.data_offset + offset, nbytes, name))
    _check_extents(path, header.size, extents)
    return entries


def _check_extents(path: Path, size: int, extents: list[tuple[int, int, str]]) -> None:
    extents = sorted(extents)
    for (start, nbytes, name), following in zip(extents, [*extents[1:], (size, 0, "")], strict=True):
        if start + nbytes > following[0]:
            where = f"overlaps {following[2]!r}" if following[2] else f"ends past the file's {size} bytes"
            raise QuantscopeError(
                f"{path}: tensor {name!r} ({nbytes} bytes at {start}) {where}; the file is truncated "
                "or corrupt, download it again"
            )


def _linear_attn_blocks(names: Iterable[str]) -> frozenset[int]:
    """Blocks holding `ssm_*` tensors: the Gated DeltaNet (or Mamba) layers of a hybrid model."""
    blocks = set()
    for name in names:
        kind = gguf_tensor_kind(name)
        block = _block_of(name)
        if kind is not None and kind.name.startswith("SSM_") and block is not None:
            blocks.add(block)
    return frozenset(blocks)


def _config(
    metadata: Mapping[str, Any], version: int, names: Container[str], linear_attn_blocks: frozenset[int]
) -> dict[str, Any]:
    """The config an Anatomy carries: GGUF facts under `gguf`, plus the Hugging Face keys other
    stages read. `num_hidden_layers` excludes the MTP blocks llama.cpp counts in `block_count`."""
    from gguf import Keys

    arch = str(metadata.get(Keys.General.ARCHITECTURE) or "unknown")
    block_count = _int(metadata, Keys.LLM.BLOCK_COUNT.format(arch=arch))
    nextn = _int(metadata, Keys.LLM.NEXTN_PREDICT_LAYERS.format(arch=arch)) or 0
    config: dict[str, Any] = {
        "model_type": arch,
        "gguf": {
            "file_type": _file_type(metadata.get(Keys.General.FILE_TYPE)),
            "architecture": arch,
            "name": metadata.get(Keys.General.NAME),
            "quantization_version": metadata.get(Keys.General.QUANTIZATION_VERSION),
            "version": version,
            "block_count": block_count,
        },
    }
    if block_count is not None:
        config["num_hidden_layers"] = block_count - nextn
    for hf_key, gguf_key in _hf_keys():
        value = _int(metadata, gguf_key.format(arch=arch))
        if value is not None:
            config[hf_key] = value
    if nextn:
        config["num_nextn_predict_layers"] = nextn
    if "token_embd.weight" in names:
        config["tie_word_embeddings"] = "output.weight" not in names
    if linear_attn_blocks and block_count is not None:
        config["layer_types"] = [
            "linear_attention" if block in linear_attn_blocks else "full_attention"
            for block in range(block_count - nextn)
        ]
    return config


def _hf_keys() -> tuple[tuple[str, str], ...]:
    """Hugging Face config names of `{arch}.*` GGUF metadata keys."""
    from gguf import Keys

    return (
        ("hidden_size", Keys.LLM.EMBEDDING_LENGTH),
        ("intermediate_size", Keys.LLM.FEED_FORWARD_LENGTH),
        ("vocab_size", Keys.LLM.VOCAB_SIZE),
        ("max_position_embeddings", Keys.LLM.CONTEXT_LENGTH),
        ("num_experts", Keys.LLM.EXPERT_COUNT),
        ("num_experts_per_tok", Keys.LLM.EXPERT_USED_COUNT),
        ("num_attention_heads", Keys.Attention.HEAD_COUNT),
        ("num_key_value_heads", Keys.Attention.HEAD_COUNT_KV),
    )


def _int(metadata: Mapping[str, Any], key: str) -> int | None:
    value = metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _file_type(value: Any) -> str | None:
    """`general.file_type` as its `gguf.LlamaFileType` name, e.g. "MOSTLY_Q4_K_M"."""
    from gguf import LlamaFileType

    if not isinstance(value, int):
        return None
    try:
        return LlamaFileType(value).name
    except ValueError:
        return f"UNKNOWN_{value}"


__all__ = [
    "classify_gguf_tensor",
    "gguf_bits_per_weight",
    "gguf_tensor_kind",
    "is_gguf_type",
    "load_gguf_anatomy",
]
