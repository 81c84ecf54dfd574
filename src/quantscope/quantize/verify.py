"""Verify a quantized checkpoint before anyone serves it.

The structural checks (`checks`) read only the manifest, config.json and safetensors headers.
The model checks load the checkpoint with transformers (`quantscope.modeling.load_causal_lm`;
no weight may be missing), generate a few tokens, measure the KL divergence of next-token
distributions against the source model on the calibration windows kept in the manifest
(`quantscope.modeling.next_token_kl`, float64; at most `--max-kl`), and compare every quantized
weight with the source's (`quantize.weights`: within a few times the format's own rounding
error). Both comparisons need the source model: one that cannot be loaded is an error, unless
`--no-kl` skips them (reported as skipped, never as passed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from quantscope.anatomy import load_anatomy
from quantscope.errors import QuantscopeError
from quantscope.modeling import load_causal_lm, next_token_kl, next_token_logits
from quantscope.quantize.checks import Check, check_files, detail_list, structural_checks
from quantscope.quantize.manifest import Manifest, directory_files, read_manifest, write_manifest
from quantscope.quantize.multimodal import (
    check_vision,
    extract_text_model,
    is_multimodal,
    is_multimodal_checkpoint,
    text_view,
)
from quantscope.quantize.weights import MAX_ERROR_RATIO, weight_check, weight_errors

# Tensors that only feed activation quantization; a loader that ignores them still has the right weights.
_ACTIVATION_ARTIFACTS = frozenset({"input_scale", "input_global_scale", "input_scale_inv"})

Progress = Callable[[str], None]
_NO_KL = "--no-kl: the source model was not loaded"

DEFAULT_MAX_KL = 3.0
"""Default `--max-kl`: mean next-token KL vs the source (nats per token over the manifest's probe
tokens) above which an export fails. A backstop for a wrecked model, not a quality bar: the
weight check catches subtly broken layers. Measured: the largest legitimate export is SmolLM2-135M
in MXFP4 with its W4A4 activations at 2.14 (RTN; NVFP4 1.06, W4A16 g64 0.71, FP8 0.11; every
bundled-model preset at most 0.04), while the same architectures with random weights measure
4.69 (bundled model, 128-token vocabulary) and 9.14 (SmolLM2)."""


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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what `quantscope verify --json` prints)."""
        return asdict(self)


def kl_divergence(reference: Sequence[Any], candidate: Sequence[Any]) -> KLResult:
    """KL(reference || candidate) per token from next-token logits per window (`[len, vocab]`
    tensors, as `next_token_logits` returns them): mean and max over all tokens, mean per window."""
    import torch

    per_window = [next_token_kl(ref, cand)[0] for ref, cand in zip(reference, candidate, strict=True)]
    flat = torch.cat(per_window)
    return KLResult(
        mean=float(flat.mean()),
        max=float(flat.max()),
        per_window=tuple(float(values.mean()) for values in per_window),
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
    return Check("loads with transformers", not problems, detail_list(summary, problems)), warnings


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
    except Exception as error:  # a model that cannot run fails the check; verify itself goes on
        return Check("generates", False, f"{type(error).__name__}: {error}"), []
    new = out[0, ids.shape[1] :].tolist()
    ok = finite and len(new) > 0
    return Check(
        "generates", ok, f"{len(new)} new tokens, logits {'finite' if finite else 'NOT finite'}"
    ), new


def model_checks(
    directory: Path,
    manifest: Manifest,
    source: SourceReference | None,
    settings: VerifySettings,
    progress: Progress,
) -> tuple[list[Check], KLResult | None, list[int], tuple[str, ...]]:
    """Load the export, generate, and compare it with `source` (None: KL and weights skipped)."""
    progress("loading the quantized checkpoint")
    try:
        loaded = load_causal_lm(directory, device=settings.device, tokenizer=False)
    except QuantscopeError as error:
        return [Check("loads with transformers", False, str(error))], None, [], ()
    model = loaded.model
    load_check, warnings = check_loading(loaded.loading_info)
    checks = [load_check]
    probe = manifest.probe
    progress("generating")
    gen_check, tokens = generate_sample(model, probe[0][:16] if probe else [0])
    checks.append(gen_check)
    if gen_check.ok and source is not None and probe:
        progress("measuring KL divergence")
    kl_check, kl = _kl_check(model, probe, source, gen_check.ok, settings)
    checks.append(kl_check)
    checks.append(_weights_check(model, manifest, source, load_check.ok, settings, progress))
    del model
    return checks, kl, tokens, warnings


def _kl_check(
    model: Any,
    probe: Sequence[Sequence[int]],
    source: SourceReference | None,
    runs: bool,
    settings: VerifySettings,
) -> tuple[Check, KLResult | None]:
    limit = settings.max_kl
    name = "KL vs source" + (f" ≤ {limit:g} nats/token" if limit is not None else " is finite")
    if not runs:
        return Check(name, False, "not measured: the model does not run"), None
    if source is None or not probe:
        reason = _NO_KL if source is None else "no calibration windows in the manifest"
        return Check(name, True, f"not measured: {reason}", skipped=True), None
    kl = kl_divergence(source.logits, next_token_logits(model, probe))
    detail = f"mean {kl.mean:.4f} nats, max {kl.max:.4f} over {kl.tokens} tokens"
    ok = math.isfinite(kl.mean) and (limit is None or kl.mean <= limit)
    if math.isfinite(kl.mean) and not ok:
        detail += f"; above --max-kl {limit:g} (raise it if this format is expected to be that coarse)"
    return Check(name, ok, detail), kl


def _weights_check(
    model: Any,
    manifest: Manifest,
    source: SourceReference | None,
    loads: bool,
    settings: VerifySettings,
    progress: Progress,
) -> Check:
    name = "weights match the source within rounding"
    if source is None or source.model is None:
        return Check(name, True, f"not measured: {_NO_KL}", skipped=True)
    if not loads:
        return Check(name, False, "not measured: weights are missing or ignored (see above)")
    progress("comparing every quantized weight with the source")
    try:
        errors = weight_errors(model, source.model, manifest.assignment, source.fused_sets)
    except QuantscopeError as error:
        return Check(name, False, str(error))
    return weight_check(errors, settings.max_weight_ratio)


@dataclass(frozen=True)
class SourceReference:
    """The source model's side of the comparison: next-token logits on the probe windows, and
    (when loaded here) the model itself and its fused sets, for the weight check."""

    logits: Sequence[Any]
    model: Any = None
    fused_sets: tuple[tuple[str, ...], ...] = ()


def source_reference(
    source: str, probe: Sequence[Sequence[int]], device: str = "cpu", logits: Sequence[Any] | None = None
) -> SourceReference:
    """Load the source model and take its logits on the probe windows (unless `logits` are given).

    Raises QuantscopeError when it cannot be loaded cleanly, naming `--no-kl` as the way out.
    """
    from quantscope.anatomy import load_anatomy

    try:
        loaded = load_causal_lm(source, device=device, tokenizer=False)
    except QuantscopeError as error:
        raise QuantscopeError(
            f"source model {source} cannot be loaded for the KL and weight checks ({error}); pass --source "
            "to point at it, or --no-kl to verify without it"
        ) from None
    check, _ = check_loading(loaded.loading_info)
    if not check.ok:
        raise QuantscopeError(f"source model {source} does not load cleanly: {check.detail}")
    anatomy = load_anatomy(source)
    if is_multimodal(anatomy):  # the loaded CausalLM names its modules as the text-only view does
        anatomy = text_view(anatomy)
    fused = tuple(tuple(f.members) for f in anatomy.fused_sets)
    reference = logits if logits is not None else next_token_logits(loaded.model, probe)
    return SourceReference(reference, loaded.model, fused)


@dataclass(frozen=True)
class VerifySettings:
    """How strict `verify` is: `max_kl` (nats per token, mean over the probe tokens; None: only
    finite), `max_weight_ratio` (see `quantize.weights.MAX_ERROR_RATIO`), `kl` False to skip
    everything that needs the source model, `device` to load the models on."""

    max_kl: float | None = DEFAULT_MAX_KL
    max_weight_ratio: float = MAX_ERROR_RATIO
    kl: bool = True
    device: str = "cpu"


def verify(
    directory: str | Path,
    *,
    source: str | Path | None = None,
    reference: Sequence[Any] | None = None,
    load: bool = True,
    settings: VerifySettings | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify a quantscope checkpoint directory; see the module docstring for the checks.

    `source` overrides the manifest's source model; `reference` gives its next-token logits on the
    manifest's probe windows directly (as `quantize` does; the source is still loaded for the
    weight check). With `load=False` only header-level checks run. A source that cannot be loaded
    is an error unless `settings.kl` is False (`--no-kl`), which skips the KL and weight checks.
    """
    directory = Path(directory)
    settings = settings or VerifySettings()
    progress = progress or (lambda _stage: None)
    if not directory.is_dir():
        raise QuantscopeError(f"{directory}: not a directory")
    manifest = read_manifest(directory)
    if is_multimodal_checkpoint(directory):
        return _verify_multimodal(directory, manifest, source, reference, load, settings, progress)
    checks, tensor_bytes, file_bytes = structural_checks(directory, manifest)
    kl, sample, warnings = None, "", ()
    if load:
        reference_side = None
        if settings.kl:
            progress("loading the source model for the KL and weight checks")
            reference_side = source_reference(
                str(source or manifest.source), manifest.probe, settings.device, reference
            )
        more, kl, tokens, warnings = model_checks(directory, manifest, reference_side, settings, progress)
        del reference_side
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


def _verify_multimodal(
    directory: Path,
    manifest: Manifest,
    source: str | Path | None,
    reference: Sequence[Any] | None,
    load: bool,
    settings: VerifySettings,
    progress: Progress,
) -> VerifyReport:
    """A multimodal export: every check on its language model, extracted to a temp text-only
    checkpoint (`quantize.multimodal`), plus the vision tower compared with the source's."""
    import tempfile

    source = str(source or manifest.source)
    # Beside the export, not in /tmp (often a small tmpfs): the copy is the whole language model.
    with tempfile.TemporaryDirectory(prefix=f".{directory.name}.verify-", dir=directory.parent) as tmp:
        progress("extracting the language model")
        text = extract_text_model(directory, Path(tmp) / "text")
        vision_bytes = load_anatomy(directory).total_bytes - load_anatomy(text).total_bytes
        text_manifest = replace(
            manifest, files=directory_files(text), predicted_bytes=manifest.predicted_bytes - vision_bytes
        )
        write_manifest(text, text_manifest)
        report = verify(
            text, source=source, reference=reference, load=load, settings=settings, progress=progress
        )
    progress("comparing the vision tower with the source")
    vision = check_vision(directory, source if settings.kl else None)
    # The files check ran on the temp copy; the one that counts is on the export itself.
    files = check_files(directory, manifest)
    checks = tuple(files if check.name == files.name else check for check in report.checks)
    return replace(
        report,
        directory=str(directory),
        checks=(*checks, vision),
        tensor_bytes=report.tensor_bytes + vision_bytes,
        predicted_bytes=manifest.predicted_bytes,
        file_bytes=sum(path.stat().st_size for path in directory.iterdir() if path.is_file()),
    )


def _decode(directory: Path, tokens: Sequence[int]) -> str:
    if not tokens:
        return ""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory)).decode(tokens)
    except (OSError, ValueError):
        return ""
