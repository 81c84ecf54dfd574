"""Header-only checkpoints for tests and benchmarks: safetensors files that declare tensors
(names, dtypes, shapes, data offsets) but hold no data, and one shaped like Qwen3.5-397B-A17B.

The layout: 60 hybrid layers (Gated DeltaNet ×3 + gated full attention), 512 routed experts
stored per expert, a shared expert, an MTP layer and the vision tower — about 95k tensors,
400B params. `benchmarks/anatomy_headers.py` times `load_anatomy` on it.
"""

from __future__ import annotations

import fnmatch
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

# Qwen3.5-397B-A17B text config (hidden 4096, 60 layers, 512 experts top-10, every 4th layer full).
CONFIG = {
    "architectures": ["Qwen3_5MoeForConditionalGeneration"],
    "model_type": "qwen3_5_moe",
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "qwen3_5_moe_text",
        "vocab_size": 248320,
        "hidden_size": 4096,
        "num_hidden_layers": 60,
        "num_attention_heads": 32,
        "num_key_value_heads": 2,
        "head_dim": 256,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": 64,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4,
        "moe_intermediate_size": 1024,
        "shared_expert_intermediate_size": 1024,
        "num_experts": 512,
        "num_experts_per_tok": 10,
        "full_attention_interval": 4,
        "mtp_num_hidden_layers": 1,
        "tie_word_embeddings": False,
    },
    "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "out_hidden_size": 4096},
}

Entry = tuple[str, tuple[int, ...]]


def _attention(prefix: str, text: dict) -> Iterator[Entry]:
    hidden, heads, kv, head_dim = (
        text["hidden_size"],
        text["num_attention_heads"],
        text["num_key_value_heads"],
        256,
    )
    yield f"{prefix}.self_attn.q_proj.weight", (2 * heads * head_dim, hidden)  # doubled for the output gate
    yield f"{prefix}.self_attn.k_proj.weight", (kv * head_dim, hidden)
    yield f"{prefix}.self_attn.v_proj.weight", (kv * head_dim, hidden)
    yield f"{prefix}.self_attn.o_proj.weight", (hidden, heads * head_dim)
    yield f"{prefix}.self_attn.q_norm.weight", (head_dim,)
    yield f"{prefix}.self_attn.k_norm.weight", (head_dim,)


def _linear_attention(prefix: str, text: dict) -> Iterator[Entry]:
    hidden = text["hidden_size"]
    key_dim = text["linear_num_key_heads"] * text["linear_key_head_dim"]
    value_heads = text["linear_num_value_heads"]
    value_dim = value_heads * text["linear_value_head_dim"]
    yield f"{prefix}.linear_attn.in_proj_qkv.weight", (2 * key_dim + value_dim, hidden)
    yield f"{prefix}.linear_attn.in_proj_z.weight", (value_dim, hidden)
    yield f"{prefix}.linear_attn.in_proj_b.weight", (value_heads, hidden)
    yield f"{prefix}.linear_attn.in_proj_a.weight", (value_heads, hidden)
    yield f"{prefix}.linear_attn.conv1d.weight", (2 * key_dim + value_dim, 1, text["linear_conv_kernel_dim"])
    yield f"{prefix}.linear_attn.dt_bias", (value_heads,)
    yield f"{prefix}.linear_attn.A_log", (value_heads,)
    yield f"{prefix}.linear_attn.norm.weight", (text["linear_value_head_dim"],)
    yield f"{prefix}.linear_attn.out_proj.weight", (hidden, value_dim)


def _moe(prefix: str, text: dict) -> Iterator[Entry]:
    hidden, inter, shared = (
        text["hidden_size"],
        text["moe_intermediate_size"],
        text["shared_expert_intermediate_size"],
    )
    yield f"{prefix}.mlp.gate.weight", (text["num_experts"], hidden)
    for expert in range(text["num_experts"]):
        yield f"{prefix}.mlp.experts.{expert}.gate_proj.weight", (inter, hidden)
        yield f"{prefix}.mlp.experts.{expert}.up_proj.weight", (inter, hidden)
        yield f"{prefix}.mlp.experts.{expert}.down_proj.weight", (hidden, inter)
    yield f"{prefix}.mlp.shared_expert.gate_proj.weight", (shared, hidden)
    yield f"{prefix}.mlp.shared_expert.up_proj.weight", (shared, hidden)
    yield f"{prefix}.mlp.shared_expert.down_proj.weight", (hidden, shared)
    yield f"{prefix}.mlp.shared_expert_gate.weight", (1, hidden)


def _layer(prefix: str, full: bool, text: dict) -> Iterator[Entry]:
    yield f"{prefix}.input_layernorm.weight", (text["hidden_size"],)
    yield f"{prefix}.post_attention_layernorm.weight", (text["hidden_size"],)
    yield from (_attention(prefix, text) if full else _linear_attention(prefix, text))
    yield from _moe(prefix, text)


def _vision(vision: dict) -> Iterator[Entry]:
    width, inter = vision["hidden_size"], vision["intermediate_size"]
    yield "model.visual.patch_embed.proj.weight", (width, 3, 2, 16, 16)
    yield "model.visual.patch_embed.proj.bias", (width,)
    yield "model.visual.pos_embed.weight", (2304, width)
    for block in range(vision["depth"]):
        prefix = f"model.visual.blocks.{block}"
        for name, shape in (
            ("norm1", (width,)),
            ("norm2", (width,)),
            ("attn.qkv", (3 * width, width)),
            ("attn.proj", (width, width)),
            ("mlp.linear_fc1", (inter, width)),
            ("mlp.linear_fc2", (width, inter)),
        ):
            yield f"{prefix}.{name}.weight", shape
            yield f"{prefix}.{name}.bias", (shape[0],)
    merged = 4 * width
    yield "model.visual.merger.norm.weight", (width,)
    yield "model.visual.merger.norm.bias", (width,)
    yield "model.visual.merger.linear_fc1.weight", (merged, merged)
    yield "model.visual.merger.linear_fc1.bias", (merged,)
    yield "model.visual.merger.linear_fc2.weight", (vision["out_hidden_size"], merged)
    yield "model.visual.merger.linear_fc2.bias", (vision["out_hidden_size"],)


def qwen35_397b_tensors(config: dict = CONFIG) -> list[list[Entry]]:
    """The checkpoint's (name, shape) entries, one list per shard (a shard per decoder layer)."""
    text = config["text_config"]
    hidden, vocab = text["hidden_size"], text["vocab_size"]
    interval = text["full_attention_interval"]
    shards: list[list[Entry]] = [
        [
            ("model.language_model.embed_tokens.weight", (vocab, hidden)),
            ("model.language_model.norm.weight", (hidden,)),
            ("lm_head.weight", (vocab, hidden)),
        ]
    ]
    for layer in range(text["num_hidden_layers"]):
        full = (layer + 1) % interval == 0
        shards.append(list(_layer(f"model.language_model.layers.{layer}", full, text)))
    mtp = [
        ("mtp.fc.weight", (hidden, 2 * hidden)),
        ("mtp.pre_fc_norm_embedding.weight", (hidden,)),
        ("mtp.pre_fc_norm_hidden.weight", (hidden,)),
        ("mtp.norm.weight", (hidden,)),
    ]
    shards.append(mtp + list(_layer("mtp.layers.0", True, text)))
    shards.append(list(_vision(config["vision_config"])))
    return shards


_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "I64": 8, "U8": 1, "I8": 1, "F8_E4M3": 1}


def write_header_only_shard(path: Path, entries: list[Entry], dtype: str = "BF16", itemsize: int = 2) -> int:
    """Write a safetensors file holding only its header (declared offsets, no data); returns data bytes."""
    return write_typed_header_only_shard(
        path, [(name, dtype, shape) for name, shape in entries], {dtype: itemsize}
    )


def write_typed_header_only_shard(
    path: Path, entries: list[tuple[str, str, tuple[int, ...]]], itemsizes: dict[str, int] | None = None
) -> int:
    """Like `write_header_only_shard`, with a dtype per tensor: `(name, dtype, shape)` entries
    (bytes per element from `itemsizes`, else the usual safetensors sizes)."""
    sizes = {**_ITEMSIZE, **(itemsizes or {})}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries:
        size = sizes[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return offset


def write_checkpoint(directory: Path) -> Path:
    """Write the headers-only Qwen3.5-397B-A17B-shaped checkpoint into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    shards = qwen35_397b_tensors()
    weight_map: dict[str, str] = {}
    total = 0
    for index, entries in enumerate(shards, start=1):
        name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        total += write_header_only_shard(directory / name, entries)
        weight_map.update({tensor: name for tensor, _ in entries})
    index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index_doc))
    (directory / "config.json").write_text(json.dumps(CONFIG, indent=2))
    return directory


# ---- ModelOpt exports rebuilt from real configs (NVIDIA's NVFP4 checkpoints) ------------------


def read_nvidia(configs: Path, name: str) -> tuple[dict, dict]:
    """`<name>.config.json` and `<name>.hf_quant_config.json` from the shared real-config folder."""
    config = json.loads((configs / f"{name}.config.json").read_text())
    quant = json.loads((configs / f"{name}.hf_quant_config.json").read_text())
    return config, quant


SIXTEEN = "16-bit"


def modelopt_declared_algo(section: dict, module: str) -> str:
    """ModelOpt's algo for the on-disk linear `module` under an hf_quant_config `section`, resolved
    here without quantscope, as vLLM's loader reads it (vllm/model_executor/layers/quantization/
    modelopt.py): the router is no nn.Linear in transformers (Qwen3.5's TopKRouter), so nothing
    quantizes it; an `exclude_modules` wildcard that matches (`fnmatch`, `is_layer_excluded`) keeps
    a module 16-bit; MIXED_PRECISION looks the module up in `quantized_layers`, or a parent of it
    (`_resolve_quant_algo`: vLLM builds one fused layer at `mlp.experts` and looks that prefix up,
    while the checkpoint stores `mlp.experts.<e>.<proj>`); unlisted modules stay 16-bit; otherwise
    `quant_algo` applies."""
    if module.endswith(".mlp.gate"):
        return SIXTEEN
    if any(fnmatch.fnmatchcase(module, pattern) for pattern in section.get("exclude_modules") or ()):
        return SIXTEEN
    if section["quant_algo"].upper() != "MIXED_PRECISION":
        return section["quant_algo"].upper()
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        entry = (section.get("quantized_layers") or {}).get(".".join(parts[:end]))
        if entry is not None:
            return entry["quant_algo"].upper()
    return SIXTEEN


def _declared(anatomy, section: dict) -> dict[str, str]:
    """Linear module -> ModelOpt's declared algo (`modelopt_declared_algo`), or 16-bit. The lists
    never name single experts, so one expert per layer is resolved and stands for all (95k
    modules on the 397B)."""
    keys = {m: re.sub(r"\.experts\.\d+\.", ".experts.0.", m) for m in anatomy.linear_weights}
    algo = {key: modelopt_declared_algo(section, key) for key in set(keys.values())}
    return {module: algo[key] for module, key in keys.items()}


def _modelopt_tensors(
    module: str, algo: str, out: int, inputs: int
) -> list[tuple[str, str, tuple[int, ...]]]:
    """The tensors ModelOpt's unified HF export writes for one linear (its `unified_export_hf.py`)."""
    if algo in ("NVFP4", "W4A16_NVFP4"):
        tensors = [
            (f"{module}.weight", "U8", (out, inputs // 2)),
            (f"{module}.weight_scale", "F8_E4M3", (out, inputs // 16)),
            (f"{module}.weight_scale_2", "F32", ()),
        ]
        return tensors + ([(f"{module}.input_scale", "F32", ())] if algo == "NVFP4" else [])
    assert algo == "FP8", algo
    return [
        (f"{module}.weight", "F8_E4M3", (out, inputs)),
        (f"{module}.weight_scale", "F32", ()),
        (f"{module}.input_scale", "F32", ()),
    ]


def modelopt_checkpoint(config: dict, quant: dict, name: str, directory: Path):
    """A header-only checkpoint as ModelOpt exports `config` under `quant` (an hf_quant_config),
    per-expert as ModelOpt writes fused experts. Returns (the unquantized anatomy, module -> algo)."""
    from quantscope.checkpoint.from_config import anatomy_from_config

    # The unquantized layout: without its quantization section the config builds the BF16 model.
    base = anatomy_from_config({k: v for k, v in config.items() if k != "quantization_config"}, name)
    declared = _declared(base, quant["quantization"])
    entries = []
    for tensor in base.tensors:
        algo = declared.get(tensor.module) if tensor.is_linear_weight else None
        if algo is None or algo == SIXTEEN:
            entries.append((tensor.name, tensor.dtype, tensor.shape))
        else:
            entries += _modelopt_tensors(tensor.module, algo, *tensor.shape)
    directory.mkdir(parents=True)
    write_typed_header_only_shard(directory / "model.safetensors", entries)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "hf_quant_config.json").write_text(json.dumps(quant))
    return base, declared
