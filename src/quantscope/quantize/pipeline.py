"""The quantize pipeline: a checkpoint and a recipe in, a verified AutoRound export out.

`quantize(model, recipe, out, options)` resolves the recipe against the checkpoint's anatomy,
runs AutoRound block by block (so the model need not fit on the accelerator), normalises the
export to exactly `out`, writes the `quantscope.json` manifest and verifies the result before the
directory gets its final name: an interrupted or failed run leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantscope.calibration import CalibrationSet, CalibrationSource, build_calibration, load_documents
from quantscope.checkpoint.anatomy import Anatomy
from quantscope.checkpoint.load import load_anatomy
from quantscope.checkpoint.modeling import load_causal_lm, next_token_logits
from quantscope.errors import QuantscopeError
from quantscope.plan.recipe import KEPT, Recipe, assign_schemes, load_recipe, predict_footprint
from quantscope.quantize.autoround import (
    AutoRoundPlan,
    plan_autoround,
    run_autoround,
    transformers_load_problem,
)
from quantscope.quantize.manifest import (
    MANIFEST_NAME,
    AutoRoundSettings,
    CalibrationRecord,
    Manifest,
    directory_files,
    directory_hashes,
    peak_rss_bytes,
    source_config_sha256,
    tool_versions,
    write_manifest,
)
from quantscope.quantize.multimodal import (
    TEXT_PREFIX,
    Graft,
    check_extractable,
    extract_text_model,
    graft_vision,
    is_multimodal,
    local_snapshot,
    text_view,
)
from quantscope.quantize.rtn_layers import VISION_PREFIX, refuse_unwritable, rtn_modules, write_rtn_layers
from quantscope.quantize.verify import (
    VerifyReport,
    VerifySettings,
    check_loading,
    replaced,
    verify,
    vision_checks,
    whole_export_loadable,
)

Progress = Callable[[str], None]
_PARTIAL = ".partial-"


@dataclass(frozen=True)
class QuantizeOptions:
    """Settings of one quantization run; defaults are AutoRound's, except the data (none by default).

    `iters`: AutoRound tuning steps per block (0 = RTN, the fast path). `nsamples` × `seqlen`:
    calibration windows × tokens. `dataset`: see `calibration.load_documents` (None = the toy
    task's text for the toy model, an error otherwise). `export_format`: AutoRound `format=`
    (None = the scheme's vLLM default). `kl_samples` windows of at most `kl_tokens` tokens are
    kept in the manifest for the KL check; `max_kl` (nats per token) fails an export above it
    (None: the default for the export's formats, `verify.default_max_kl`).
    `overwrite` replaces an existing quantscope checkpoint.
    """

    iters: int = 200
    nsamples: int = 128
    seqlen: int = 2048
    dataset: CalibrationSource = None
    split: str = "train"
    text_field: str | None = None
    export_format: str | None = None
    batch_size: int = 8
    seed: int = 42
    device: str = "cpu"
    kl_samples: int = 4
    kl_tokens: int = 128
    verify: bool = True
    max_kl: float | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class QuantizeResult:
    """A finished checkpoint: its directory, manifest and verification report (None if skipped)."""

    directory: Path
    manifest: Manifest
    report: VerifyReport | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (what `quantscope quantize --json` prints): the manifest without its
        probe token windows, and the verification report."""
        manifest = self.manifest.to_dict()
        manifest.pop("probe")
        return {"manifest": manifest, "report": self.report.to_dict() if self.report else None}


def quantize(
    model: str | Path,
    recipe: str | Path | Recipe,
    out: str | Path,
    options: QuantizeOptions | None = None,
    progress: Progress | None = None,
) -> QuantizeResult:
    """Quantize `model` (local dir or hub id) with `recipe` (preset, YAML file or Recipe) into `out`.

    Everything is written to a hidden sibling temp folder and renamed to `out` only after the
    manifest is written and verification passed. A checkpoint that fails verification is moved to
    `<out>.rejected` and a QuantscopeError lists the failed checks. Raises QuantscopeError before
    any heavy work when the recipe cannot be exported in the chosen format, `out` exists (without
    `overwrite`), or there is no calibration data.
    """
    started = time.monotonic()
    options = options or QuantizeOptions()
    progress = progress or (lambda _stage: None)
    if _is_multimodal_source(model):
        return _quantize_multimodal(model, recipe, out, options, progress)
    job = _prepare(model, recipe, out, options)

    from transformers import AutoTokenizer

    progress("tokenizing calibration data")
    tokenizer = AutoTokenizer.from_pretrained(str(job.model))
    calibration = _calibration(tokenizer, job.model, options)
    progress("loading the source model")
    # On the CPU: AutoRound moves one block at a time to `options.device`, so the model need not fit there.
    source_model = _load_source(job.model, "cpu")
    probe = tuple(window[: options.kl_tokens] for window in calibration.windows[: options.kl_samples])
    # The reference is taken now: AutoRound quantizes `source_model` in place.
    reference = next_token_logits(source_model, probe) if options.verify else None

    _remove_stale_partials(job.out)
    work = Path(tempfile.mkdtemp(dir=job.out.parent, prefix=f".{job.out.name}{_PARTIAL}{os.getpid()}-"))
    try:
        progress("quantizing block by block")
        settings = _autoround_settings(job.plan, calibration, options)
        checkpoint, notes = _export(source_model, tokenizer, job.plan, calibration, settings, work)
        del source_model
        manifest = _manifest(job, calibration, settings, checkpoint, probe, started, notes)
        manifest = write_manifest(checkpoint, manifest)
        report = None
        if options.verify:
            settings = VerifySettings(max_kl=options.max_kl, device=options.device)
            report = verify(checkpoint, reference=reference, settings=settings, progress=progress)
            if not report.ok:
                _reject(checkpoint, job.out, report)
            report = replace(report, directory=str(job.out))
        _publish(checkpoint, job.out, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return QuantizeResult(directory=job.out, manifest=manifest, report=report)


@dataclass(frozen=True)
class _Job:
    """A checked quantization request: absolute paths, the resolved recipe and its AutoRound plan."""

    model: str | Path
    out: Path
    recipe: Recipe
    anatomy: Anatomy
    plan: AutoRoundPlan
    predicted_bytes: int


def _prepare(
    model: str | Path, recipe: str | Path | Recipe, out: str | Path, options: QuantizeOptions
) -> _Job:
    """Every check that needs no weights: destination, recipe, anatomy, exportability."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out).expanduser().resolve()
    model = _resolved(model)
    _check_destination(out, options.overwrite)
    anatomy = load_anatomy(model)
    plan = _checked_plan(model, anatomy, anatomy, recipe, options)
    predicted = predict_footprint(anatomy, recipe).total_bytes
    return _Job(model=model, out=out, recipe=recipe, anatomy=anatomy, plan=plan, predicted_bytes=predicted)


def _checked_plan(
    model: str | Path, anatomy: Anatomy, planned: Anatomy, recipe: Recipe, options: QuantizeOptions
) -> AutoRoundPlan:
    """The AutoRound plan of `recipe` on `planned` (the anatomy AutoRound will see), after the
    checks that need no weights: not already quantized, exportable, loadable for verification."""
    if anatomy.is_quantized:
        raise QuantscopeError(f"{model}: already quantized; quantize from the original 16-bit checkpoint")
    plan = plan_autoround(planned, recipe, options.export_format)
    problem = transformers_load_problem(plan) if options.verify else None
    if problem:
        raise QuantscopeError(f"recipe {recipe.name!r} in format {plan.export_format!r}: {problem}")
    return plan


def _check_destination(out: Path, overwrite: bool) -> None:
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise QuantscopeError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.is_dir() and ((out / MANIFEST_NAME).is_file() or not any(out.iterdir())):
        return
    raise QuantscopeError(f"{out} exists and is not a quantscope checkpoint; refusing to overwrite it")


def _is_multimodal_source(model: str | Path) -> bool:
    return is_multimodal(load_anatomy(_resolved(model)))


def _resolved(model: str | Path) -> str | Path:
    """A local path made absolute (the manifest must name it from anywhere); a hub id as given."""
    path = Path(model).expanduser()
    return path.resolve() if path.exists() else model


def _quantize_multimodal(
    model: str | Path,
    recipe: str | Path | Recipe,
    out: str | Path,
    options: QuantizeOptions,
    progress: Progress,
) -> QuantizeResult:
    """Quantize a multimodal checkpoint's language model and graft its vision tower back.

    The language model is extracted to a text-only checkpoint beside `out` (a copy of its weights
    under the CausalLM's names), quantized and verified exactly like any text model, then renamed
    back under the multimodal names next to the source's vision tensors (`quantize.multimodal`):
    byte for byte, or with the linears RTN-quantized under a recipe's `quantize_vision`
    (`quantize.rtn_layers`, compared with the source within rounding). Nothing lands at `out`
    until all of that succeeded; an export that fails verification is kept at `<out>.rejected`.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    model = _resolved(model)
    out = Path(out).expanduser().resolve()
    _check_destination(out, options.overwrite)
    anatomy = load_anatomy(model)
    check_extractable(anatomy)
    # Every check that needs no weights, on the language model, before anything is downloaded or copied.
    vision_plan = _vision_assignment(anatomy, recipe, options)
    text_recipe = _language_model_recipe(recipe, anatomy)
    _checked_plan(model, anatomy, text_view(anatomy), text_recipe, options)
    quantized_vision = rtn_modules(vision_plan, VISION_PREFIX)
    source = local_snapshot(model)
    _remove_stale_partials(out)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{_PARTIAL}{os.getpid()}-"))
    try:
        progress("extracting the language model")
        text = extract_text_model(source, work / "text-model")
        inner = replace(options, overwrite=False)
        result = _quantize_text_model(text, text_recipe, work / "export", inner, out, progress)
        progress("grafting the vision tower back")
        graft = graft_vision(result.directory, source, anatomy, quantized_vision)
        if quantized_vision:
            progress(f"quantizing {len(quantized_vision)} vision linears (round to nearest)")
            write_rtn_layers(result.directory, quantized_vision)
        vision = vision_checks(result.directory, source, quantized_vision)
        for check in vision:
            if not check.ok:
                raise QuantscopeError(f"the grafted checkpoint is wrong: {check.name}: {check.detail}")
        manifest = write_manifest(
            result.directory,
            _multimodal_manifest(
                result.manifest, model, anatomy, recipe, graft, result.directory, vision_plan
            ),
        )
        report = result.report and replace(
            result.report,
            directory=str(out),
            checks=(*replaced(result.report.checks, whole_export_loadable(result.directory)), *vision),
            predicted_bytes=manifest.predicted_bytes,
            tensor_bytes=manifest.tensor_bytes,
            file_bytes=sum(path.stat().st_size for path in result.directory.iterdir() if path.is_file()),
        )
        _publish(result.directory, out, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return QuantizeResult(directory=out, manifest=manifest, report=report)


def _quantize_text_model(
    text: Path, recipe: Recipe, export: Path, options: QuantizeOptions, out: Path, progress: Progress
) -> QuantizeResult:
    """The extracted language model through the text pipeline; a rejected export is moved out of
    the temp folder to `<out>.rejected` (language model only), so the work is not lost."""
    try:
        return quantize(text, recipe, export, options, progress)
    except QuantscopeError as error:
        rejected = export.with_name(f"{export.name}.rejected")
        if not rejected.is_dir():
            raise
        kept = out.with_name(f"{out.name}.rejected")
        shutil.rmtree(kept, ignore_errors=True)
        rejected.rename(kept)
        raise QuantscopeError(
            f"{str(error).replace(str(rejected), str(kept))} (its language model only)"
        ) from None


def _vision_assignment(anatomy: Anatomy, recipe: Recipe, options: QuantizeOptions) -> dict[str, str]:
    """Every vision linear of a multimodal source -> its format (16-bit unless `quantize_vision`);
    refuses an export route the vision writer cannot write into, before any work."""
    assigned = assign_schemes(anatomy, recipe)
    vision = {t.module: assigned[t.module] for t in anatomy.by_group()["vision"] if t.is_linear_weight}
    written = rtn_modules(vision, VISION_PREFIX)
    refuse_unwritable(
        recipe.name,
        recipe.format.name,
        written,
        options.export_format,
        "vision linears",
        "drop quantize_vision",
    )
    return vision


def _language_model_recipe(recipe: Recipe, anatomy: Anatomy) -> Recipe:
    """The recipe the extracted language model is quantized with: the rules that match only vision
    linears (checked against the whole checkpoint by `_vision_assignment`) left out, since the
    language model alone has nothing for them to match."""
    import re

    vision = {t.module for t in anatomy.by_group()["vision"]}
    text = [module for module in anatomy.linear_weights if module not in vision]

    def matches_text(pattern: str) -> bool:
        return any(re.search(pattern, module) for module in text)

    return replace(
        recipe,
        keep_patterns=tuple(p for p in recipe.keep_patterns if matches_text(p)),
        overrides=tuple(o for o in recipe.overrides if matches_text(o.pattern)),
        quantize_vision=False,
    )


def _multimodal_manifest(
    text: Manifest,
    model: str | Path,
    anatomy: Anatomy,
    recipe: Recipe,
    graft: Graft,
    directory: Path,
    vision: Mapping[str, str],
) -> Manifest:
    """The text export's manifest, re-pointed at the multimodal source and its grafted files, with
    the vision linears' formats added to its assignment."""
    quantized = sum(1 for fmt in vision.values() if fmt != KEPT)
    how = f"copied, {quantized} linears quantized round-to-nearest" if quantized else "copied unchanged"
    note = (
        f"multimodal source: the language model was extracted, quantized and verified as a text-only "
        f"checkpoint; the vision tower's {graft.vision_tensors} tensors ({graft.vision_bytes:,} bytes) were "
        f"{how} and the text tensors renamed back under {TEXT_PREFIX!r}"
    )
    return replace(
        text,
        recipe=recipe,
        assignment={**text.assignment, **vision},
        source=str(model),
        source_config_sha256=source_config_sha256(anatomy.source),
        model_type=anatomy.model_type,
        predicted_bytes=predict_footprint(anatomy, recipe).total_bytes,
        tensor_bytes=load_anatomy(directory).total_bytes,
        files=directory_files(directory),
        file_sha256=directory_hashes(directory),
        notes=(*text.notes, note),
    )


def _calibration(tokenizer: Any, model: str | Path, options: QuantizeOptions) -> CalibrationSet:
    source, documents = load_documents(
        options.dataset, model=model, split=options.split, text_field=options.text_field, seed=options.seed
    )
    return build_calibration(
        tokenizer,
        documents,
        nsamples=options.nsamples,
        seqlen=options.seqlen,
        source=source,
        shuffle_seed=options.seed,
    )


def _load_source(model: str | Path, device: str) -> Any:
    loaded = load_causal_lm(model, device=device, tokenizer=False)
    check, _ = check_loading(loaded.loading_info)
    if not check.ok:
        raise QuantscopeError(
            f"{model}: the source model does not load cleanly with transformers: {check.detail}"
        )
    return loaded.model


def _autoround_settings(
    plan: AutoRoundPlan, calibration: CalibrationSet, options: QuantizeOptions
) -> AutoRoundSettings:
    """How AutoRound is called: the plan's scheme and layer config, the run's settings."""
    return AutoRoundSettings(
        scheme=plan.scheme,
        layer_config=dict(plan.layer_config),
        quant_lm_head=plan.quant_lm_head,
        iters=options.iters,
        nsamples=len(calibration.windows),
        seqlen=calibration.seqlen,
        batch_size=options.batch_size,
        seed=options.seed,
        device=options.device,
    )


def _export(
    source_model: Any,
    tokenizer: Any,
    plan: AutoRoundPlan,
    calibration: CalibrationSet,
    settings: AutoRoundSettings,
    work: Path,
) -> tuple[Path, tuple[str, ...]]:
    exported = run_autoround(
        source_model, tokenizer, plan, calibration.autoround_samples(), settings, work / "stage"
    )
    checkpoint = work / "checkpoint"
    exported.directory.rename(checkpoint)  # AutoRound's <model>-<scheme> sub-folder becomes exactly --out
    notes = ()
    if exported.restored_tensors:
        notes = (
            f"AutoRound computed in float32 (this CPU has no native bf16) and saved "
            f"{exported.restored_tensors} unquantized tensors as float32; they were restored to the "
            "source's 16-bit dtype",
        )
    return checkpoint, notes


def _manifest(
    job: _Job,
    calibration: CalibrationSet,
    settings: AutoRoundSettings,
    checkpoint: Path,
    probe: tuple[tuple[int, ...], ...],
    started: float,
    notes: tuple[str, ...] = (),
) -> Manifest:
    anatomy, plan = job.anatomy, job.plan
    return Manifest(
        source=anatomy.source,
        source_config_sha256=source_config_sha256(anatomy.source),
        model_type=anatomy.model_type,
        recipe=job.recipe,
        export_format=plan.export_format,
        assignment=dict(sorted(plan.assignment.items())),
        autoround=settings,
        calibration=CalibrationRecord(
            source=calibration.source,
            windows=len(calibration.windows),
            requested=calibration.requested,
            seqlen=calibration.seqlen,
            sha256=calibration.sha256,
        ),
        tools=tool_versions(),
        wall_seconds=round(time.monotonic() - started, 3),
        peak_rss_bytes=peak_rss_bytes(),
        predicted_bytes=job.predicted_bytes,
        tensor_bytes=load_anatomy(checkpoint).total_bytes,
        files=directory_files(checkpoint),
        file_sha256=directory_hashes(checkpoint),
        probe=probe,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=notes,
    )


def _reject(checkpoint: Path, out: Path, report: VerifyReport) -> None:
    rejected = out.with_name(f"{out.name}.rejected")
    shutil.rmtree(rejected, ignore_errors=True)
    checkpoint.rename(rejected)
    failed = "; ".join(f"{check.name}: {check.detail}" for check in report.failures)
    raise QuantscopeError(f"the export failed verification and was moved to {rejected}: {failed}")


def _publish(checkpoint: Path, out: Path, work: Path) -> None:
    if out.exists():
        out.rename(work / "previous")  # removed with `work`; only a quantscope checkpoint gets here
    checkpoint.rename(out)


def _remove_stale_partials(out: Path) -> None:
    """Delete temp folders left by killed runs for the same `out` (their process is gone)."""
    import psutil

    for path in out.parent.glob(f".{out.name}{_PARTIAL}*"):
        pid = path.name.removeprefix(f".{out.name}{_PARTIAL}").split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            with contextlib.suppress(OSError):
                shutil.rmtree(path)
