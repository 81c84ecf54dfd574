"""Compressed-tensors NVFP4 MoE experts loaded as the checkpoint stores them.

transformers (<= 5.19) merges a compressed-tensors checkpoint's per-expert linears
(`…experts.{i}.gate_proj/up_proj/down_proj`) into its fused 3-D expert parameters and decompresses
them without their per-expert `weight_global_scale`, which it lists as unexpected keys: every expert
weight comes out a factor of that scale off (about 1e4 on the bundled model; KL 4.9 nats/token).
vLLM reads the scales (`CompressedTensorsW4A4Nvfp4MoEMethod` loads `w13/w2_weight_scale_2` per
expert). `restore_expert_weights` decompresses each such expert again from the safetensors with
compressed-tensors' own `NVFP4PackedCompressor.decompress` (compressors/nvfp4/base.py) and copies
it into its slice of the fused parameter, so transformers computes with the export's weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError

_GLOBAL = ".weight_global_scale"
_PARTS = ("weight_packed", "weight_scale", "weight_global_scale")


def ignored_expert_global_scales(info: Mapping[str, Any]) -> list[str]:
    """The per-expert `weight_global_scale` keys transformers reported as unexpected (ignored)."""
    return sorted(
        key for key in info.get("unexpected_keys") or () if key.endswith(_GLOBAL) and ".experts." in key
    )


def restore_expert_weights(model: Any, directory: str | Path, keys: Sequence[str]) -> tuple[str, ...]:
    """Put every expert whose global scale transformers ignored (`keys`, from
    `ignored_expert_global_scales`) back as compressed-tensors decompresses it; returns the
    checkpoint keys now used (the global scales). Raises QuantscopeError when a fused slice or a
    stored tensor is missing."""
    import torch
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor

    from quantscope.numerics.fakequant import fused_expert_slice

    if not keys:
        return ()
    directory = Path(directory)
    scheme = _nvfp4_scheme(directory)
    modules = [key.removesuffix(_GLOBAL) for key in keys]
    stored = _read(directory, [f"{module}.{part}" for module in modules for part in _PARTS])
    with torch.no_grad():
        for module in modules:
            where = fused_expert_slice(model, f"{module}.weight")
            if where is None:
                raise QuantscopeError(f"{directory}: no fused expert parameter holds {module}")
            state = {part: stored[f"{module}.{part}"] for part in _PARTS}
            weight = NVFP4PackedCompressor.decompress(state, scheme)["weight"]
            target = where.view(model)
            target.copy_(weight.to(device=target.device, dtype=target.dtype))
    return tuple(keys)


def _nvfp4_scheme(directory: Path) -> Any:
    """The compressed-tensors QuantizationScheme of the checkpoint's NVFP4 config group."""
    from compressed_tensors.quantization import QuantizationScheme

    config = json.loads((directory / "config.json").read_text()).get("quantization_config") or {}
    groups = [
        group
        for group in (config.get("config_groups") or {}).values()
        if (group.get("weights") or {}).get("num_bits") == 4
        and (group.get("weights") or {}).get("group_size") == 16
    ]
    if len(groups) != 1:
        raise QuantscopeError(
            f"{directory / 'config.json'}: expected one NVFP4 config group, found {len(groups)}"
        )
    return QuantizationScheme.model_validate(groups[0])


def _read(directory: Path, names: Sequence[str]) -> dict[str, Any]:
    from safetensors import safe_open

    wanted, found = set(names), {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in wanted.intersection(handle.keys()):
                found[name] = handle.get_tensor(name)
    missing = sorted(wanted - set(found))
    if missing:
        raise QuantscopeError(f"{directory}: missing {missing[0]} (and {len(missing) - 1} more)")
    return found
