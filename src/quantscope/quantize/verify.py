"""Verify a quantized checkpoint before anyone serves it.

Structural checks read only the manifest, config.json and safetensors headers:
- every linear module is stored (on disk) in the kind its recipe assigned: exactly the recipe's
  modules are 16-bit, every other one is packed in its scheme;
- the quantization_config *declares* the same: the `extra_config` (AutoRound format, matched the
  way vLLM's INC loader matches it) or the `ignore` list (compressed-tensors) marks exactly the
  kept modules, so vLLM builds each layer with the right method;
- no vLLM fused set (q/k/v, gate/up, in_proj_qkv+z, in_proj_b+a, one layer's experts) is split;
- the tensor bytes are within 1% of the footprint prediction, and the files match the manifest.

Model checks load the checkpoint with transformers (no missing weights), generate a few tokens
and measure the KL divergence of next-token distributions against the source model on the
calibration windows kept in the manifest.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantscope.anatomy import (
    Anatomy,
    classify_tensor,
    find_fused_sets,
    load_anatomy,
)
from quantscope.errors import QuantscopeError
from quantscope.formats import get_format
from quantscope.quantize.manifest import Manifest, directory_files, read_manifest

SIZE_TOLERANCE = 0.01  # relative; the acceptance bound for predicted vs exported bytes
SIXTEEN = "16bit"  # the stored / declared kind of an unquantized linear layer
# Groups vLLM always builds as unquantized layers (Qwen3.5-MoE router and shared-expert gate), so
# whether a quantization_config mentions them does not change how vLLM loads them.
_VLLM_UNQUANTIZED_GROUPS = ("router", "shared_expert_gate")
_REGEX_CHARS = set(r"*+?^$()[]{}|\\")
# Tensors that only feed activation quantization; a loader that ignores them still has the right weights.
_ACTIVATION_ARTIFACTS = frozenset({"input_scale", "input_global_scale", "input_scale_inv"})

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Check:
    """One verification result: `ok` False fails the checkpoint; `skipped` checks neither pass nor fail."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False


@dataclass(frozen=True)
class KLResult:
    """KL(source || quantized) of next-token distributions, in nats per token."""

    mean: float
    max: float
    per_window: tuple[float, ...]
    tokens: int


@dataclass(frozen=True)
class VerifyReport:
    """All checks on one checkpoint directory, plus the measurements behind them."""

    directory: str
    checks: tuple[Check, ...]
    tensor_bytes: int
    predicted_bytes: int
    file_bytes: int
    kl: KLResult | None = None
    sample: str = ""
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(check.ok or check.skipped for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        """The failed checks."""
        return tuple(check for check in self.checks if not check.ok and not check.skipped)

    @property
    def size_error(self) -> float:
        """(exported - predicted) / predicted tensor bytes."""
        return (
            (self.tensor_bytes - self.predicted_bytes) / self.predicted_bytes if self.predicted_bytes else 0.0
        )


# ---------------------------------------------------------------------------------------------
# What is stored, and what the quantization_config declares
# ---------------------------------------------------------------------------------------------


def kind_of_format(name: str) -> str:
    """The stored kind of a quantscope format: "int", "nvfp4", "mxfp4", "fp8" or "16bit"."""
    fmt = get_format(name)
    return fmt.data_type if fmt.is_quantized else SIXTEEN


def stored_kinds(export: Anatomy) -> dict[str, str]:
    """Exported linear module -> the kind its tensors on disk hold (from headers only)."""
    params: dict[str, dict[str, str]] = {}
    for tensor in export.tensors:
        params.setdefault(tensor.module, {})[tensor.param] = tensor.dtype
    kinds: dict[str, str] = {}
    for tensor in export.tensors:
        module, found = tensor.module, params[tensor.module]
        if module in kinds:
            continue
        if "qweight" in found:
            kinds[module] = "int"
        elif "weight_packed" in found:
            kinds[module] = _packed_kind(found)
        elif found.get("weight") == "F8_E4M3":
            kinds[module] = "fp8"
        elif tensor.is_linear_weight:
            kinds[module] = SIXTEEN
    return kinds


def _packed_kind(found: Mapping[str, str]) -> str:
    if "weight_global_scale" in found:
        return "nvfp4"
    if found["weight_packed"] == "I32":
        return "int"  # compressed-tensors pack-quantized integers
    return "mxfp4"


def declared_kind(quant_config: Mapping[str, Any], module: str) -> str:
    """The kind a checkpoint's quantization_config tells vLLM to build `module` as."""
    method = str(quant_config.get("quant_method", "")).replace("_", "-")
    if method == "auto-round":
        return _auto_round_kind(quant_config, module)
    if method == "compressed-tensors":
        return _compressed_tensors_kind(quant_config, module)
    raise QuantscopeError(
        f"quant_method {method!r} is not one quantscope exports (auto-round, compressed-tensors)"
    )


def _auto_round_data_kind(entry: Mapping[str, Any], default: Mapping[str, Any]) -> str:
    bits = entry.get("bits", default.get("bits", 16))
    if bits >= 16:
        return SIXTEEN
    data_type = str(entry.get("data_type", default.get("data_type", "int")))
    if data_type.startswith("nv_fp"):
        return "nvfp4"
    if data_type.startswith("mx_fp"):
        return "mxfp4"
    if data_type in ("fp", "float") and bits == 8:
        return "fp8"
    return "int"


def _auto_round_kind(config: Mapping[str, Any], module: str) -> str:
    # Mirrors vLLM's INC resolution: an exact extra_config key, a key that is a suffix of the
    # name, then regex keys (searched); otherwise quantized iff inside block_name_to_quantize.
    extra = config.get("extra_config") or {}
    ignored = set(config.get("ignored_layers") or ())
    if module in ignored:
        return SIXTEEN
    if module in extra:
        return _auto_round_data_kind(extra[module], config)
    for key, entry in extra.items():
        if module.endswith(f".{key}"):
            return _auto_round_data_kind(entry, config)
    for key, entry in extra.items():
        if any(char in _REGEX_CHARS for char in key) and re.search(key, module):
            return _auto_round_data_kind(entry, config)
    blocks = config.get("block_name_to_quantize") or config.get("to_quant_block_names") or ()
    blocks = blocks.split(",") if isinstance(blocks, str) else list(blocks)
    inside = any(module.startswith(block) for block in blocks) if blocks else True
    return _auto_round_data_kind({}, config) if inside else SIXTEEN


def _compressed_tensors_kind(config: Mapping[str, Any], module: str) -> str:
    for target in config.get("ignore") or ():
        if (target.startswith("re:") and re.match(target[3:], module)) or target == module:
            return SIXTEEN
    for group in (config.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        bits, kind, size = weights.get("num_bits", 16), weights.get("type"), weights.get("group_size")
        if bits >= 16:
            continue
        if kind == "int":
            return "int"
        if bits == 8:
            return "fp8"
        return "nvfp4" if size == 16 else "mxfp4"
    return SIXTEEN


# ---------------------------------------------------------------------------------------------
# Structural checks
# ---------------------------------------------------------------------------------------------


def check_stored(expected: Mapping[str, str], stored: Mapping[str, str]) -> Check:
    """Every module stored as its recipe assigned; names the first mismatches."""
    problems = [
        f"{m}: expected {k}, stored {stored.get(m, 'nothing')}"
        for m, k in expected.items()
        if stored.get(m) != k
    ]
    problems += [f"{m}: stored {k} but not in the recipe" for m, k in stored.items() if m not in expected]
    kept = sum(1 for kind in expected.values() if kind == SIXTEEN)
    detail = f"{len(expected)} linear modules, {kept} kept 16-bit"
    return Check("stored formats match the recipe", not problems, _detail(detail, problems))


def check_declared(expected: Mapping[str, str], quant_config: Mapping[str, Any]) -> Check:
    """The quantization_config declares each module as the recipe assigned it (see module docstring)."""
    problems = []
    for module, kind in expected.items():
        group = classify_tensor(f"{module}.weight")
        try:
            declared = declared_kind(quant_config, module)
        except QuantscopeError as error:
            return Check("quantization_config marks exactly the kept layers", False, str(error))
        if declared != kind and group not in _VLLM_UNQUANTIZED_GROUPS:
            problems.append(f"{module}: recipe {kind}, config declares {declared}")
    method = quant_config.get("quant_method", "?")
    return Check(
        "quantization_config marks exactly the kept layers", not problems, _detail(str(method), problems)
    )


def check_fused_sets(
    expected: Mapping[str, str], stored: Mapping[str, str], quant_config: Mapping[str, Any]
) -> Check:
    """No vLLM fused set has members stored or declared in different kinds."""
    problems = []
    sets = find_fused_sets(expected)
    for fused in sets:
        kinds = {stored.get(member) for member in fused.members}
        try:
            declared = {declared_kind(quant_config, member) for member in fused.members}
        except QuantscopeError:
            declared = set()  # reported by check_declared
        if len(kinds) > 1 or len(declared) > 1:
            problems.append(f"{fused.name}: stored {sorted(map(str, kinds))}, declared {sorted(declared)}")
    return Check("no fused shard set is split", not problems, _detail(f"{len(sets)} fused sets", problems))


def check_size(tensor_bytes: int, predicted: int, tolerance: float = SIZE_TOLERANCE) -> Check:
    """Exported tensor bytes within `tolerance` (relative) of the footprint prediction."""
    error = (tensor_bytes - predicted) / predicted if predicted else math.inf
    detail = f"exported {tensor_bytes:,} B vs predicted {predicted:,} B ({error:+.3%})"
    return Check("size matches the footprint prediction", abs(error) <= tolerance, detail)


def check_files(directory: Path, manifest: Manifest) -> Check:
    """The files on disk are exactly the manifest's, with the same sizes."""
    actual = directory_files(directory)
    problems = [f"{name}: missing" for name in manifest.files if name not in actual]
    problems += [
        f"{name}: {actual[name]} B, manifest says {size} B"
        for name, size in manifest.files.items()
        if name in actual and actual[name] != size
    ]
    problems += [f"{name}: not in the manifest" for name in actual if name not in manifest.files]
    return Check("files match the manifest", not problems, _detail(f"{len(actual)} files", problems))


def _detail(summary: str, problems: Sequence[str], shown: int = 5) -> str:
    if not problems:
        return summary
    more = f" (+{len(problems) - shown} more)" if len(problems) > shown else ""
    return f"{summary}; " + "; ".join(problems[:shown]) + more


def structural_checks(directory: Path, manifest: Manifest) -> tuple[list[Check], int, int]:
    """The header-only checks; returns (checks, tensor bytes, file bytes)."""
    config = json.loads((directory / "config.json").read_text())
    quant_config = config.get("quantization_config")
    export = load_anatomy(directory)
    expected = {module: kind_of_format(fmt) for module, fmt in manifest.assignment.items()}
    stored = stored_kinds(export)
    tensor_bytes = export.total_bytes
    file_bytes = sum(path.stat().st_size for path in directory.iterdir() if path.is_file())
    checks = [check_files(directory, manifest), check_stored(expected, stored)]
    if not isinstance(quant_config, Mapping):
        checks.append(
            Check("quantization_config marks exactly the kept layers", False, "config.json has none")
        )
    else:
        checks += [check_declared(expected, quant_config), check_fused_sets(expected, stored, quant_config)]
    checks.append(check_size(tensor_bytes, manifest.predicted_bytes))
    return checks, tensor_bytes, file_bytes


# ---------------------------------------------------------------------------------------------
# Loading, generation, KL
# ---------------------------------------------------------------------------------------------


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


def _model_types(config: Mapping[str, Any]) -> list[str]:
    text = config.get("text_config")
    types = [config.get("model_type"), text.get("model_type") if isinstance(text, Mapping) else None]
    return [name for name in types if name]


def load_model(path: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint with transformers; returns (model in eval mode, loading info).

    The process-wide conversion mappings are left as they were (`preserve_conversion_mappings`);
    an unquantized checkpoint is loaded with transformers' built-in mappings.
    """
    from transformers import AutoModelForCausalLM

    config_path = Path(path) / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if "quantization_config" not in config:
        restore_default_conversion_mappings(_model_types(config))
    with preserve_conversion_mappings(_model_types(config)):
        model, info = AutoModelForCausalLM.from_pretrained(
            str(path), dtype="auto", device_map=device, output_loading_info=True
        )
    return model.eval(), info


def next_token_logprobs(model: Any, windows: Sequence[Sequence[int]]) -> list[Any]:
    """Per window, log-probabilities of the next token at every position (`[len, vocab]`, float32)."""
    import torch

    device = next(model.parameters()).device
    results = []
    with torch.no_grad():
        for window in windows:
            ids = torch.tensor([list(window)], dtype=torch.long, device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0].float()
            results.append(torch.log_softmax(logits, dim=-1).cpu())
    return results


def kl_divergence(reference: Sequence[Any], candidate: Sequence[Any]) -> KLResult:
    """KL(reference || candidate) per token from log-probability tensors, mean and max in nats."""
    import torch

    per_token = [
        torch.sum(ref.exp() * (ref - cand), dim=-1) for ref, cand in zip(reference, candidate, strict=True)
    ]
    flat = torch.cat(per_token)
    return KLResult(
        mean=float(flat.mean()),
        max=float(flat.max()),
        per_window=tuple(float(values.mean()) for values in per_token),
        tokens=int(flat.numel()),
    )


def check_loading(info: Mapping[str, Any]) -> tuple[Check, tuple[str, ...]]:
    """No weight is missing (it would be randomly initialised) and no weight tensor is ignored.

    An unexpected *weight* artifact (a scale, zero point or global scale) means the loader built
    the weight without it, so it is wrong; only activation-quantization scales unused on this
    device are tolerated, and returned as warnings.
    """
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    activation = [key for key in unexpected if key.rpartition(".")[2] in _ACTIVATION_ARTIFACTS]
    problems = [f"missing {key}" for key in missing]
    problems += [f"ignored {key}" for key in unexpected if key not in activation]
    warnings = (
        (f"{len(activation)} activation scales unused by transformers here, e.g. {activation[0]}",)
        if activation
        else ()
    )
    summary = f"{len(problems)} weights not loaded" if problems else "all weights loaded"
    return Check("loads with transformers", not problems, _detail(summary, problems)), warnings


def generate_sample(model: Any, prompt: Sequence[int], max_new_tokens: int = 8) -> tuple[Check, list[int]]:
    """Greedy-generate `max_new_tokens` after `prompt`; fails on errors or non-finite logits."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    try:
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
            )
            finite = bool(torch.isfinite(model(input_ids=ids).logits).all())
    except (RuntimeError, ValueError) as error:
        return Check("generates", False, f"{type(error).__name__}: {error}"), []
    new = out[0, ids.shape[1] :].tolist()
    ok = finite and len(new) > 0
    return Check(
        "generates", ok, f"{len(new)} new tokens, logits {'finite' if finite else 'NOT finite'}"
    ), new


def model_checks(
    directory: Path,
    manifest: Manifest,
    reference: Sequence[Any] | None,
    device: str,
    progress: Progress,
    skipped: str = "no reference",
) -> tuple[list[Check], KLResult | None, list[int], tuple[str, ...]]:
    """Load the export, generate, and compare with `reference` log-probs (None: KL skipped)."""
    progress("loading the quantized checkpoint")
    try:
        model, info = load_model(directory, device)
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as error:
        failed = Check("loads with transformers", False, f"{type(error).__name__}: {error}")
        return [failed], None, [], ()
    load_check, warnings = check_loading(info)
    checks = [load_check]
    probe = manifest.probe
    progress("generating")
    gen_check, tokens = generate_sample(model, probe[0][:16] if probe else [0])
    checks.append(gen_check)
    if gen_check.ok and reference is not None and probe:
        progress("measuring KL divergence")
    kl_check, kl = _kl_check(model, probe, reference, gen_check.ok, skipped)
    del model
    return [*checks, kl_check], kl, tokens, warnings


def _kl_check(
    model: Any, probe: Sequence[Sequence[int]], reference: Sequence[Any] | None, runs: bool, skipped: str
) -> tuple[Check, KLResult | None]:
    name = "KL vs source is finite"
    if not runs:
        return Check(name, False, "not measured: the model does not run"), None
    if reference is None or not probe:
        return Check(name, True, f"not measured: {skipped}", skipped=True), None
    kl = kl_divergence(reference, next_token_logprobs(model, probe))
    detail = f"mean {kl.mean:.4f} nats, max {kl.max:.4f} over {kl.tokens} tokens"
    return Check(name, math.isfinite(kl.mean), detail), kl


def source_reference(source: str, probe: Sequence[Sequence[int]], device: str = "cpu") -> list[Any]:
    """Log-probs of the source model on the probe windows (raises QuantscopeError when it cannot load)."""
    try:
        model, info = load_model(source, device)
    except (OSError, ValueError, TypeError) as error:
        raise QuantscopeError(f"source model {source} cannot be loaded for the KL check ({error})") from None
    loaded, _ = check_loading(info)
    if not loaded.ok:
        raise QuantscopeError(f"source model {source} does not load cleanly: {loaded.detail}")
    try:
        return next_token_logprobs(model, probe)
    finally:
        del model


def verify(
    directory: str | Path,
    *,
    source: str | Path | None = None,
    reference: Sequence[Any] | None = None,
    load: bool = True,
    device: str = "cpu",
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify a quantscope checkpoint directory; see the module docstring for the checks.

    `source` overrides the manifest's source model for the KL check; `reference` gives its
    log-probs directly (as `quantize` does). With `load=False` only header-level checks run.
    A source that cannot be loaded skips the KL check (reported), it does not fail verification.
    """
    directory = Path(directory)
    progress = progress or (lambda _stage: None)
    if not directory.is_dir():
        raise QuantscopeError(f"{directory}: not a directory")
    manifest = read_manifest(directory)
    checks, tensor_bytes, file_bytes = structural_checks(directory, manifest)
    kl, sample, warnings = None, "", ()
    if load:
        skipped = "no calibration windows in the manifest"
        if reference is None and manifest.probe:
            progress("running the source model for the KL reference")
            try:
                reference = source_reference(str(source or manifest.source), manifest.probe, device)
            except QuantscopeError as error:
                skipped = str(error)
        more, kl, tokens, warnings = model_checks(directory, manifest, reference, device, progress, skipped)
        checks += more
        sample = _decode(directory, tokens)
    return VerifyReport(
        directory=str(directory),
        checks=tuple(checks),
        tensor_bytes=tensor_bytes,
        predicted_bytes=manifest.predicted_bytes,
        file_bytes=file_bytes,
        kl=kl,
        sample=sample,
        warnings=warnings,
    )


def _decode(directory: Path, tokens: Sequence[int]) -> str:
    if not tokens:
        return ""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory)).decode(tokens)
    except (OSError, ValueError):
        return ""
