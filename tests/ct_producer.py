"""compressed-tensors alone (no llm-compressor) as a producer: its own schemes, compressors and
save path on a tiny Qwen3, with the scales computed here, since observers live in llm-compressor.

`compressed_tensors_export(preset, out)` applies the preset (`W4A16`, `W4A16_ASYM`, `W8A8`,
`FP8`, `FP8_DYNAMIC`, `FP8_BLOCK`, `NVFP4A16`, `MXFP8`…) to every Linear but lm_head, sets the
weight scales from min/max with compressed-tensors' `calculate_qparams` / `generate_gparam`, the
static input scales from one forward pass, then compresses and saves as llm-compressor does
(`ModelCompressor.compress_model`, `save_pretrained`, `update_config`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def _weight_minmax(weight: torch.Tensor, args) -> tuple[torch.Tensor, torch.Tensor]:
    from compressed_tensors.quantization import QuantizationStrategy as S

    w = weight.float()
    if args.strategy == S.TENSOR:
        return w.amin().reshape(1), w.amax().reshape(1)
    if args.strategy == S.CHANNEL:
        return w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    if args.strategy in (S.GROUP, S.TENSOR_GROUP):
        grouped = w.unflatten(-1, (-1, args.group_size))
        return grouped.amin(-1), grouped.amax(-1)
    rows, cols = args.block_structure  # BLOCK: rows padded up to whole blocks
    padded = nn.functional.pad(w, (0, 0, 0, -w.shape[0] % rows))
    blocks = padded.reshape(-1, rows, w.shape[1] // cols, cols)
    return blocks.amin(dim=(1, 3)), blocks.amax(dim=(1, 3))


def _input_ranges(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(name):
        def hook(_module, args):
            x = args[0].detach().float()
            ranges[name] = (x.amin().reshape(1), x.amax().reshape(1))

        return hook

    hooks = [
        m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        model(torch.arange(8, 40).unsqueeze(0))
    for handle in hooks:
        handle.remove()
    return ranges


def _calibrate(model: nn.Module, ranges) -> None:
    from compressed_tensors.quantization import QuantizationStrategy as S
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None or not isinstance(module, nn.Linear):
            continue
        args = scheme.weights
        global_scale = None
        if args.strategy == S.TENSOR_GROUP:
            w = module.weight.float()
            module.weight_global_scale.data.copy_(generate_gparam(w.amin(), w.amax()))
            global_scale = module.weight_global_scale.data
        low, high = _weight_minmax(module.weight.data, args)
        scale, zero = calculate_qparams(low, high, args, global_scale=global_scale)
        module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
        if hasattr(module, "weight_zero_point"):
            module.weight_zero_point.data.copy_(zero.reshape(module.weight_zero_point.shape))
        inputs = scheme.input_activations
        if inputs is not None and not inputs.dynamic:
            low, high = ranges[name]
            if inputs.strategy == S.TENSOR_GROUP:
                module.input_global_scale.data.copy_(generate_gparam(low, high))
            else:
                scale, _ = calculate_qparams(low, high, inputs)
                module.input_scale.data.copy_(scale.reshape(module.input_scale.shape))


def compressed_tensors_export(preset: str, source: Path, out: Path) -> Path:
    """Quantize the checkpoint at `source` with the compressed-tensors `preset` into `out`."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).eval()
    ranges = _input_ranges(model)
    config = QuantizationConfig(
        config_groups={"group_0": preset_name_to_scheme(preset, ["Linear"])}, ignore=["lm_head"]
    )
    apply_quantization_config(model, config)
    _calibrate(model, ranges)
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    return out
