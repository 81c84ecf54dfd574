"""The one way quantscope loads a causal LM, and the one next-token KL divergence.

`load_causal_lm` is used by verify, profile, the demo's evaluation twins and the transformers
engine alike: transformers' `AutoModelForCausalLM` (never remote code unless asked), in eval
mode, with its loading report kept (missing / unexpected weights), and with transformers'
checkpoint conversion mappings protected from AutoRound's process-wide edits (see
`preserve_conversion_mappings`).

`next_token_kl` is KL(reference || candidate) of next-token distributions per position, in
nats, computed from logits in float64 (per-token KLs of 1e-6 are differences of nearly equal
log-probabilities) and chunked over positions, so a 248k-token vocabulary never needs more than
`LOGIT_CHUNK_ELEMENTS` float64 values at once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    import torch

LOGIT_CHUNK_ELEMENTS = 1 << 24
"""Positions × vocabulary per float64 chunk of the KL computation (128 MB)."""

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoadedModel:
    """A loaded causal LM: the model (eval mode), its tokenizer (None when not asked for), where
    it came from, and transformers' loading report (`missing_keys`, `unexpected_keys`, …)."""

    model: Any
    tokenizer: Any
    source: str
    loading_info: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        """The device of the model's first parameter."""
        return next(self.model.parameters()).device


def load_causal_lm(
    source: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    tokenizer: bool = True,
) -> LoadedModel:
    """Load `source` (a checkpoint directory or hub id) with transformers.

    `device`: "cpu", "cuda", "cuda:1"…, or "auto" to shard a model too big for one GPU over all
    visible GPUs (accelerate's device map; offloading to CPU or disk is refused, since offloaded
    weights cannot be used in place). `dtype`: "auto" (the checkpoint's own), "float32",
    "bfloat16" or "float16". Raises QuantscopeError naming the source when it cannot be loaded.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype)
    model_types = _model_types(_local_config(source))
    try:
        if not _declares_quantization(source):
            restore_default_conversion_mappings(model_types)
        with preserve_conversion_mappings(model_types):
            model, info = AutoModelForCausalLM.from_pretrained(
                str(source),
                dtype=torch_dtype,
                device_map=device,
                revision=revision,
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
            )
        loaded_tokenizer = (
            AutoTokenizer.from_pretrained(str(source), revision=revision, trust_remote_code=trust_remote_code)
            if tokenizer
            else None
        )
    except (OSError, ValueError, ImportError, TypeError, KeyError, RuntimeError) as error:
        raise QuantscopeError(
            f"transformers cannot load model {str(source)!r} ({type(error).__name__}: {error})"
        ) from None
    _refuse_offload(model, source)
    info = _restore_compressed_experts(model, source, info)
    _emulate_twin_activations(model, source)
    return LoadedModel(model.eval(), loaded_tokenizer, str(source), info)


def _restore_compressed_experts(model: Any, source: str | Path, info: Mapping[str, Any]) -> Mapping[str, Any]:
    """Compressed-tensors NVFP4 experts whose global scales transformers ignored, put back as the
    checkpoint stores them (`checkpoint.compressed_experts`); those keys are then used, not ignored."""
    from quantscope.checkpoint.compressed_experts import ignored_expert_global_scales, restore_expert_weights

    keys = ignored_expert_global_scales(info)
    if not keys or not Path(str(source)).is_dir():
        return info
    used = set(restore_expert_weights(model, source, keys))
    return {**info, "unexpected_keys": [k for k in info.get("unexpected_keys") or () if k not in used]}


def _emulate_twin_activations(model: Any, source: str | Path) -> None:
    """An evaluation twin (`quantscope.quantize.twin`) names the layer inputs its target GPU quantizes:
    hook their rounding in for the model's lifetime, since no safetensors file can hold it."""
    if not Path(str(source)).is_dir():
        return
    from quantscope.numerics.twin_marker import twin_activations

    points = twin_activations(source)
    if points:
        from quantscope.numerics.actquant import install_activation_quantization

        install_activation_quantization(model, points)


def default_dtype(device: str) -> str:
    """The compute dtype quantscope uses on `device` when measuring: float32 on a CPU (bf16 matmuls
    are slow there, and KL needs the precision), bfloat16 on GPUs."""
    return "float32" if device == "cpu" else "bfloat16"


def _torch_dtype(name: str) -> Any:
    import torch

    dtypes = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise QuantscopeError(f"dtype {name!r}: use one of {', '.join(DTYPES)}")
    return dtypes[name]


def _refuse_offload(model: Any, source: str | Path) -> None:
    offloaded = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if offloaded:
        raise QuantscopeError(
            f"{source}: device auto offloaded {offloaded[0]} (and {len(offloaded) - 1} more) off the GPUs; "
            "use more GPU memory or device cpu"
        )


def _local_config(source: str | Path) -> Mapping[str, Any]:
    path = Path(source).expanduser() / "config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # transformers reports a broken config itself


def _declares_quantization(source: str | Path) -> bool:
    return "quantization_config" in _local_config(source)


def _model_types(config: Mapping[str, Any]) -> list[str]:
    text = config.get("text_config")
    types = [config.get("model_type"), text.get("model_type") if isinstance(text, Mapping) else None]
    return [name for name in types if name]


# ---- AutoRound and transformers' conversion mappings ------------------------------------------


@contextlib.contextmanager
def preserve_conversion_mappings(model_types: Sequence[str]) -> Iterator[None]:
    """Undo AutoRound's process-wide edit of transformers' checkpoint conversion mappings.

    Loading an AutoRound MoE checkpoint calls `disable_moe_conversion_mapping`, which re-registers
    the model type's mapping without its expert-merging converters for the whole process; a later
    `from_pretrained` of the *unquantized* model then finds per-expert weights "unexpected" and
    leaves the fused experts randomly initialised. This restores the mappings on exit.
    """
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )

    saved = {name: get_checkpoint_conversion_mapping(name) for name in dict.fromkeys(model_types)}
    try:
        yield
    finally:
        for name, mapping in saved.items():
            if mapping is not None:
                register_checkpoint_conversion_mapping(name, mapping, overwrite=True)


def restore_default_conversion_mappings(model_types: Sequence[str]) -> None:
    """Re-register transformers' built-in conversion mappings for `model_types`.

    Heals a process in which an AutoRound MoE checkpoint was already loaded without
    `preserve_conversion_mappings` (see there); used before loading an unquantized source model.
    Relies on transformers' private mapping builder and does nothing where it does not exist.
    """
    from transformers import conversion_mapping

    build = getattr(conversion_mapping, "_build_checkpoint_conversion_mapping", None)
    if build is None:
        return
    defaults = build()
    for name in dict.fromkeys(model_types):
        if name in defaults:
            conversion_mapping.register_checkpoint_conversion_mapping(name, defaults[name], overwrite=True)


# ---- next-token KL ---------------------------------------------------------------------------


def next_token_logits(model: Any, windows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Per token window, the model's next-token logits at every position (`[len, vocab]`,
    float32, on the CPU)."""
    import torch

    device = next(model.parameters()).device
    results = []
    with torch.no_grad():
        for window in windows:
            ids = torch.tensor([list(window)], dtype=torch.long, device=device)
            results.append(model(input_ids=ids, use_cache=False).logits[0].float().cpu())
    return results


def next_token_kl(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(reference || candidate) per position (nats, float64, CPU) and whether the most likely
    next token agrees (bool), from logits of shape `[positions, vocab]` (any float dtype/device).

    Chunked over positions (`LOGIT_CHUNK_ELEMENTS`); negative rounding residue is clamped to 0.
    """
    import torch

    positions, vocab = reference.shape
    step = max(1, LOGIT_CHUNK_ELEMENTS // vocab)
    kl = torch.empty(positions, dtype=torch.float64)
    agree = torch.empty(positions, dtype=torch.bool)
    for start in range(0, positions, step):
        window = slice(start, start + step)
        kl[window], agree[window] = logits_kl(reference[window], candidate[window])
    return kl, agree


def logits_kl(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`next_token_kl` of one chunk: logits `[n, vocab]` in, (KL float64 `[n]`, top-1 agreement
    `[n]`) out on the CPU. Callers that produce logits chunk by chunk call this directly."""
    import torch

    ref = reference.double()
    cand = candidate.to(ref.device).double()
    ref_logp, cand_logp = torch.log_softmax(ref, dim=-1), torch.log_softmax(cand, dim=-1)
    kl = (ref_logp.exp() * (ref_logp - cand_logp)).sum(-1).clamp(min=0)
    return kl.cpu(), (ref.argmax(-1) == cand.argmax(-1)).cpu()
