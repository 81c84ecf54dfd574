"""Layers AutoRound never sees, quantized round-to-nearest with compressed-tensors' own code.

Two parts of a Qwen3.5 checkpoint are outside the model AutoRound quantizes:

- the multi-token-prediction head (`mtp.*`): transformers does not build it. After its export
  AutoRound copies the head's tensors from the source and RTN-quantizes them only for integer
  formats in its GPTQ packing (`_woq_quantize_missing_tensors`, auto_round/utils/
  missing_tensors.py); in every other format they stay 16-bit. vLLM's drafter builds the MTP
  layers with the checkpoint's quantization config (`Qwen3_5MultiTokenPredictor`,
  vllm/model_executor/models/qwen3_5_mtp.py);
- the vision tower (`model.visual.*`), which `quantize` grafts back beside the quantized language
  model (`quantize.multimodal`); vLLM builds it with the same config (`Qwen3_VisionTransformer`,
  models/qwen3_vl.py). A recipe opts in with `quantize_vision`.

So a compressed-tensors export whose config group targets `Linear` can hold these layers
quantized, and must, once they are out of its `ignore` list. `write_rtn_layers` writes them for
the formats whose activations need no calibration (FP8 with dynamic activations, block FP8,
weight-only NVFP4, MXFP4): the scales come from each weight alone, computed with
compressed-tensors' `calculate_qparams` and `generate_gparam` and packed by the compressor its
config names, so the stored layout is the library's own. Formats with calibrated activation
scales (static FP8, NVFP4 W4A4) keep these layers 16-bit (`formats.rtn_writer`): nothing runs
them on calibration data here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError
from quantscope.formats import get_format, rtn_writer
from quantscope.quantize.weights import WeightError, dequantized_weight
from quantscope.util import write_atomic

MTP_PREFIX = "mtp."
VISION_PREFIX = "model.visual."
WRITER = "compressed-tensors"

# vLLM's fused sets inside an MTP decoder layer (`Qwen3_5MTP.packed_modules_mapping`; the vision
# tower stores its q/k/v fused already): members share one NVFP4 global scale, as llm-compressor's
# `update_fused_layer_weight_global_scales` makes them share it, so the fused layer vLLM builds
# holds one.
_FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


@dataclass(frozen=True)
class RtnLayers:
    """What `write_rtn_layers` wrote: the modules stored quantized, and the shards it rewrote."""

    modules: tuple[str, ...]
    shards: tuple[str, ...] = ()


def is_outside_autoround(module: str) -> bool:
    """Whether a module is one AutoRound never sees (MTP head, vision tower)."""
    return module.startswith(MTP_PREFIX) or module.startswith(VISION_PREFIX)


def rtn_modules(assignment: Mapping[str, str], prefix: str = MTP_PREFIX) -> dict[str, str]:
    """The modules under `prefix` of an export plan that quantscope writes itself (module -> format)."""
    return {
        module: fmt
        for module, fmt in assignment.items()
        if module.startswith(prefix) and rtn_writer(get_format(fmt)) == WRITER
    }


def refuse_unwritable(
    recipe: str, main: str, written: Mapping[str, str], route: str | None, what: str, keep: str
) -> None:
    """Refuse, before any work, layers `write_rtn_layers` could not write. It writes into a
    compressed-tensors export (`route` None: the scheme's default, compressed-tensors for every
    format it writes) with the config group AutoRound wrote for the recipe's main format `main`.
    `written`: module -> format of the layers it would write; `what` names them in the message,
    `keep` says how to keep them 16-bit instead."""
    if written and route not in (None, "llm_compressor"):
        raise QuantscopeError(
            f"recipe {recipe!r}: {what} in {main} are written into compressed-tensors exports only, "
            f"not {route!r}; use --format llm_compressor or {keep}"
        )
    other = sorted(module for module, fmt in written.items() if fmt != main)
    if other:
        more = f" and {len(other) - 1} more" if len(other) > 1 else ""
        raise QuantscopeError(
            f"recipe {recipe!r}: {what} can be stored in the recipe's scheme ({main}) or kept 16-bit, "
            f"not in {written[other[0]]} ({other[0]}{more}); change the override"
        )


def write_rtn_layers(directory: Path, wanted: Mapping[str, str]) -> RtnLayers:
    """Quantize the 16-bit weights of `wanted` (module -> format) in the export at `directory`.

    Every module is compressed with the scheme of the export's config group that targets it, its
    tensors replace the 16-bit weight in the same shard (rewritten through a temp file) and the
    index is updated. Raises QuantscopeError when the export is not compressed-tensors, a module
    is missing or ignored, or its config group is of another format family than assigned.
    """
    if not wanted:
        return RtnLayers(())
    quant = _compressed_tensors_config(directory)
    shards = _weight_shards(directory)
    by_shard: dict[str, list[str]] = {}
    for module in wanted:
        shard = shards.get(f"{module}.weight")
        if shard is None:
            raise QuantscopeError(f"{directory}: weight {module}.weight is not in the export")
        by_shard.setdefault(shard, []).append(module)
    # One global |max| per vLLM fused set, over every shard its members sit in.
    global_amax = shared_global_amax(
        {m: _read_tensor(directory / shards[f"{m}.weight"], f"{m}.weight").abs().amax() for m in wanted},
        wanted,
    )
    for shard, modules in by_shard.items():
        schemes = {m: _scheme_for(quant, m, wanted[m]) for m in modules}
        _rewrite_shard(directory / shard, modules, schemes, global_amax)
        _reindex(directory, shard, modules)
    return RtnLayers(tuple(sorted(wanted)), tuple(sorted(by_shard)))


def _compressed_tensors_config(directory: Path) -> Mapping[str, Any]:
    config = json.loads((directory / "config.json").read_text())
    quant = config.get("quantization_config") or {}
    if quant.get("quant_method") != "compressed-tensors":
        raise QuantscopeError(
            f"{directory}: quantscope writes MTP and vision layers into compressed-tensors exports "
            f"only (this one is {quant.get('quant_method')!r}); export with --format llm_compressor, "
            "or keep them 16-bit"
        )
    return quant


def _scheme_for(quant: Mapping[str, Any], module: str, fmt_name: str) -> tuple[Any, str]:
    """The compressed-tensors scheme and compression format of the config group that targets
    `module` (compressed-tensors' own matching), checked against the format the recipe assigned."""
    import torch
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.utils.match import is_match

    from quantscope.formats import family_from_compressed_tensors

    probe = torch.nn.Linear(1, 1, device="meta")
    ignore = quant.get("ignore") or ()
    for group in (quant.get("config_groups") or {}).values():
        if group.get("weights") and is_match(module, probe, group.get("targets") or (), ignore):
            family = family_from_compressed_tensors(group["weights"])
            if family != get_format(fmt_name).data_type:
                break
            scheme = QuantizationScheme.model_validate(
                {k: v for k, v in group.items() if k in QuantizationScheme.model_fields}
            )
            return scheme, group.get("format") or quant["format"]
    raise QuantscopeError(
        f"module {module} ({fmt_name}): no config group of the export stores it in that format "
        "(MTP and vision layers can be stored in the recipe's main scheme only); keep it 16-bit "
        "or store it in the recipe's scheme"
    )


def _weight_shards(directory: Path) -> dict[str, str]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return dict(json.loads(index.read_text())["weight_map"])
    from safetensors import safe_open

    single = directory / "model.safetensors"
    if not single.is_file():
        raise QuantscopeError(f"{directory}: neither model.safetensors.index.json nor model.safetensors")
    with safe_open(single, framework="pt") as handle:
        return dict.fromkeys(handle.keys(), single.name)


def _read_tensor(path: Path, name: str) -> Any:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        if name not in set(handle.keys()):
            raise QuantscopeError(f"{path}: no tensor {name}")
        return handle.get_tensor(name)


def _rewrite_shard(
    path: Path, modules: Sequence[str], schemes: Mapping[str, tuple[Any, str]], global_amax: Mapping[str, Any]
) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    metadata = _metadata(path)
    for module in modules:
        weight = tensors.pop(f"{module}.weight")
        scheme, compression = schemes[module]
        for name, tensor in compress_weight(weight, scheme, compression, global_amax.get(module)).items():
            tensors[f"{module}.{name}"] = tensor.contiguous()
    temp = path.with_name(path.name + ".tmp")
    save_file(tensors, temp, metadata=metadata)
    temp.replace(path)


def _metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return handle.metadata()


def shared_global_amax(amax: Mapping[str, Any], formats: Mapping[str, str]) -> dict[str, Any]:
    """Module -> the |max| its NVFP4 global scale is computed from: each module's own `amax`,
    shared (the largest) across the members of a vLLM fused set under one parent: q/k/v and
    gate/up, which for MoE experts pairs each expert's gate and up (vLLM's w13) and leaves down
    alone, as `numerics.fakequant.shared_amax` does for the layers AutoRound writes. Modules of
    other formats are left out (no global scale)."""
    nvfp4 = {m: a for m, a in amax.items() if get_format(formats[m]).data_type == "nvfp4"}
    shared: dict[str, Any] = {}
    for module, value in nvfp4.items():
        parent, _, leaf = module.rpartition(".")
        members = next((group for group in _FUSED if leaf in group), (leaf,))
        present = [f"{parent}.{m}" for m in members if f"{parent}.{m}" in nvfp4]
        shared[module] = max(nvfp4[m].float() for m in present) if len(present) > 1 else value.float()
    return shared


def compress_weight(weight: Any, scheme: Any, compression: str, amax: Any = None) -> dict[str, Any]:
    """One `[out, in]` weight compressed as `scheme` by compressed-tensors' registered compressor
    for `compression` (e.g. "nvfp4-pack-quantized"): the tensors to store, by local name.

    Scales are round-to-nearest's, from the weight alone; `amax` overrides the weight's own |max|
    for the global scale (NVFP4: shared across a fused set)."""
    import torch
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

    args = scheme.weights
    state: dict[str, Any] = {"weight": weight}
    # In the weight's dtype, as compressed-tensors' observers see a bf16 model's weights: FP8
    # scales come out bf16, as AutoRound's export of the other layers stores them.
    low, high = _ranges(weight, args)
    global_scale = None
    if args.strategy == "tensor_group":
        peak = weight.abs().max().float() if amax is None else amax
        global_scale = generate_gparam(-peak, peak)
        state["weight_global_scale"] = global_scale
    scale, _ = calculate_qparams(low, high, args, global_scale=global_scale)
    state["weight_scale"] = scale
    compressor = BaseCompressor.get_value_from_registry(compression)
    compressed = compressor.compress(state, scheme)
    return {name: tensor for name, tensor in compressed.items() if isinstance(tensor, torch.Tensor)}


def _ranges(weight: Any, args: Any) -> tuple[Any, Any]:
    """Per-scale minimum and maximum of `weight` for `args.strategy` (what compressed-tensors'
    memoryless min-max observer reduces over: rows, groups along the input dim, or 2-D blocks)."""
    from compressed_tensors.quantization.utils import maybe_pad_tensor_for_block_quant

    strategy = args.strategy
    if strategy == "channel":
        return weight.amin(dim=1, keepdim=True), weight.amax(dim=1, keepdim=True)
    if strategy in ("group", "tensor_group"):
        grouped = weight.unflatten(-1, (-1, args.group_size))
        return grouped.amin(dim=-1), grouped.amax(dim=-1)
    if strategy == "block":
        rows, cols = args.block_structure
        padded = maybe_pad_tensor_for_block_quant(weight, (rows, cols))
        blocks = padded.unflatten(0, (-1, rows)).unflatten(2, (-1, cols))
        return blocks.amin(dim=(1, 3)), blocks.amax(dim=(1, 3))
    if strategy == "tensor":
        return weight.min().reshape(1), weight.max().reshape(1)
    raise QuantscopeError(
        f"compressed-tensors strategy {strategy!r}: not one quantscope writes RTN layers in"
    )


def _reindex(directory: Path, shard: str, modules: Sequence[str]) -> None:
    """Point the index's weight map at the compressed tensors (the 16-bit `weight` is gone) and
    its `total_size` at the shards' new tensor bytes."""
    from safetensors import safe_open

    from quantscope.checkpoint.load import load_anatomy

    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        return
    data = json.loads(index.read_text())
    weight_map = data["weight_map"]
    for module in modules:
        weight_map.pop(f"{module}.weight", None)
    with safe_open(directory / shard, framework="pt") as handle:
        weight_map.update(dict.fromkeys(list(handle.keys()), shard))
    data.setdefault("metadata", {})["total_size"] = load_anatomy(directory).total_bytes
    write_atomic(index, json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Reading them back (for verify: the transformers model it loads holds neither part)
# ---------------------------------------------------------------------------------------------


def stored_rtn_weights(directory: Path, model: Any, assignment: Mapping[str, str]) -> dict[str, Any]:
    """Module -> the `[out, in]` float32 weight the export stores, for every quantized MTP or
    vision module of `assignment`, decoded by the code that reads such a layer elsewhere:
    compressed-tensors' registered compressor (`decompress`), or, for AutoRound's GPTQ packing,
    the QuantLinear class transformers built for the export's other integer layers (`model`), run
    as `dequantized_weight` reads any loaded layer. Raises QuantscopeError naming a module that
    cannot be decoded."""
    wanted = {m: f for m, f in assignment.items() if is_outside_autoround(m) and get_format(f).is_quantized}
    if not wanted:
        return {}
    quant = json.loads((directory / "config.json").read_text()).get("quantization_config") or {}
    shards = _weight_shards(directory)
    decoded = {}
    for module, fmt in wanted.items():
        names = [name for name in shards if name.rpartition(".")[0] == module]
        if not names:
            raise QuantscopeError(f"{directory}: module {module} ({fmt}) has no tensors in the export")
        state = {name.rpartition(".")[2]: _read_tensor(directory / shards[name], name) for name in names}
        if quant.get("quant_method") == "compressed-tensors":
            decoded[module] = _ct_decoded(quant, module, fmt, state)
        else:
            decoded[module] = _autoround_decoded(model, module, fmt, state)
    return decoded


def _ct_decoded(quant: Mapping[str, Any], module: str, fmt: str, state: dict[str, Any]) -> Any:
    from compressed_tensors.compressors import BaseCompressor

    scheme, compression = _scheme_for(quant, module, fmt)
    compressor = BaseCompressor.get_value_from_registry(compression)
    return compressor.decompress(state, scheme)["weight"].float()


def _autoround_decoded(model: Any, module: str, fmt: str, state: dict[str, Any]) -> Any:
    layout = get_format(fmt)
    qlinear = next((type(m) for m in model.modules() if hasattr(m, "qweight")), None)
    if qlinear is None or "qweight" not in state:
        raise QuantscopeError(
            f"module {module} ({fmt}): no AutoRound integer layer was loaded to decode it with"
        )
    packed_rows = state["qweight"].shape[0]
    in_features = packed_rows * 32 // layout.weight_bits
    out_features = state["scales"].shape[1]
    layer = qlinear(layout.weight_bits, layout.group_size or in_features, in_features, out_features, False)
    layer.load_state_dict(state, strict=False)
    return dequantized_weight(layer.eval())


def rtn_weight_errors(
    export: Path,
    source: str | Path,
    export_model: Any,
    assignment: Mapping[str, str],
) -> list[WeightError]:
    """`quantize.weights.weight_errors` for the MTP and vision layers, which the loaded models do
    not hold: the export's stored tensors as `stored_rtn_weights` decodes them, against the source
    checkpoint's tensors read from its safetensors (`source`: a local directory or a hub id
    already in the cache)."""
    import torch

    from quantscope.numerics.fakequant import qdq_spec, quantize_dequantize
    from quantscope.quantize.multimodal import local_snapshot

    stored = stored_rtn_weights(export, export_model, assignment)
    if not stored:
        return []
    originals = _source_tensors(local_snapshot(source), [f"{module}.weight" for module in stored])
    amax = shared_global_amax(
        {m: originals[f"{m}.weight"].abs().amax() for m in stored}, {m: assignment[m] for m in stored}
    )
    errors = []
    with torch.no_grad():
        for module, weight in stored.items():
            original = originals[f"{module}.weight"]
            rounded = quantize_dequantize(original, qdq_spec(assignment[module]), amax.get(module)).float()
            original = original.float()
            norm = float(original.norm()) or 1.0
            error = float((weight - original).norm()) / norm
            errors.append(
                WeightError(module, assignment[module], error, float((rounded - original).norm()) / norm)
            )
    return errors


def _source_tensors(source: Path, names: Sequence[str]) -> dict[str, Any]:
    """The named tensors of a local safetensors checkpoint (sharded or not)."""
    shards = _weight_shards(source)
    missing = [name for name in names if name not in shards]
    if missing:
        raise QuantscopeError(f"{source}: no tensor {missing[0]} to compare the export's layer with")
    return {name: _read_tensor(source / shards[name], name) for name in names}
