"""`quantscope demo`: the whole loop, offline, on the bundled tiny reasoner.

plan (predicted footprint per preset) → quantize each preset with AutoRound RTN (`iters=0`) →
evaluate every variant on the `synthetic` task with thinking on (transformers engine) → store →
compare, recommend and write the HTML report. Everything lands in one folder:

    <out>/checkpoints/<preset>/   quantized checkpoints (each with its quantscope.json manifest)
    <out>/quantscope.db           the results store
    <out>/report.html             the report

    <out>/eval/<preset>/          the evaluation twin of each export (see below)

Rerunning resumes: a checkpoint with a manifest is reused, and the runner generates only the
(item, sample) pairs the store lacks. A preset that cannot be exported or loaded on this machine
is reported as failed and left out; the demo goes on with the others.

What is evaluated: on a CPU, transformers runs the exports' 4-bit / FP4 / FP8 layers through
AutoRound's reference modules at about 8 tokens/s (the toy model, 2 cores), far too slow for a
10-minute demo. So each export is evaluated through its twin (`quantscope.quantize.twin`): the export's
own weights, dequantized and saved as float32, plus the activation rounding the target GPU
applies per layer kind when vLLM serves the export (`settings.gpu`, Blackwell B200 by default:
NVFP4 and MXFP4 as W4A4, NVFP4 experts with one activation scale per MoE layer, FP8 as W8A8;
`--gpu H100` runs NVFP4 weight-only and MXFP4 dense layers W4A8; `quantscope.numerics.served`), with the
export's own activation scales. It is an emulation in float32 on the CPU, and the report says so
per variant; on a GPU, evaluate the exports themselves with `quantscope eval`.
`tests/test_twin.py` holds each twin to its export run through AutoRound's modules. Memory
numbers always come from the export's manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from quantscope.errors import QuantscopeError
from quantscope.gpus import DEFAULT_TARGET, get_gpu

if TYPE_CHECKING:
    from quantscope.evaluate.runner import ProgressUpdate
    from quantscope.evaluate.spec import RunSpec
    from quantscope.report import ReportResult
    from quantscope.store.database import Store

FULL_PRESETS = ("bf16", "fp8", "w4a16", "w4a16-safe", "nvfp4", "nvfp4-safe", "w3a16")
QUICK_PRESETS = ("bf16", "w4a16", "w4a16-safe", "nvfp4")
ILLUSTRATIONS = ("w3a16",)
"""Presets the demo runs to show the mechanism, not as deployment choices: INT3 rounds harder than
any recipe deployed on Qwen3.5, and on the toy it makes the retries (and the truncation) plain."""
DEMO_LEVELS = (2, 4, 5, 6)
"""The synthetic levels the demo runs: one easy level where nothing should change, one middle, and
the two hardest, where retries (and so truncation at the cap) concentrate."""
DEMO_CAP = 256
"""The demo's token cap. Chosen so the baseline sits in the study's regime: on Qwen3.5 AIME25 at a
32k cap about 30% of BF16's answers hit the cap; here BF16 truncates about a quarter of the hardest
level's samples (those that redo a sum once), and none below level 5."""
DEFAULT_BUDGET_FRACTION = 0.5
"""The demo's default memory budget: this fraction of the BF16 weights (as if the GPU held only half)."""


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs: `presets` (recipe names; "bf16" is the baseline and is not quantized),
    `per_level` synthetic problems per difficulty level, `k` samples per problem, `max_tokens` the
    generation cap (tokens), `batch_size` requests per generate call, and the RTN calibration
    size (`calib_samples` windows of `calib_seqlen` tokens); `levels` the synthetic levels run
    (`DEMO_LEVELS`); `illustrations` are presets shown
    as illustrations of the mechanism (`ILLUSTRATIONS`)."""

    presets: tuple[str, ...]
    per_level: int
    k: int
    max_tokens: int = DEMO_CAP
    levels: tuple[int, ...] = DEMO_LEVELS
    batch_size: int = 48
    calib_samples: int = 16
    calib_seqlen: int = 256
    sampling_preset: str = "qwen3.5-thinking-precise"
    seed: int = 0
    gpu: str = DEFAULT_TARGET
    illustrations: tuple[str, ...] = ILLUSTRATIONS


FULL = DemoSettings(presets=FULL_PRESETS, per_level=30, k=2)
QUICK = DemoSettings(presets=QUICK_PRESETS, per_level=6, k=1)


@dataclass(frozen=True)
class DemoProgress:
    """A progress event: `stage` ("plan" | "quantize" | "eval" | "report"), the variant it is about
    (None for whole-demo stages), `done` of `total` steps, and a short `message`."""

    stage: str
    variant: str | None
    done: int
    total: int
    message: str = ""


DemoCallback = Callable[[DemoProgress], None]


@dataclass(frozen=True)
class DemoVariant:
    """One preset's fate: `status` is "original" (bf16), "quantized", "reused" or "failed";
    `directory` the checkpoint evaluated; `predicted_bytes` the footprint prediction and
    `memory_bytes` the stored tensor bytes (the manifest's, else the prediction); `detail` the
    error for a failed preset; `seconds` spent quantizing; `illustration` marks a preset run to
    show the mechanism rather than as a deployment choice."""

    preset: str
    status: str
    directory: Path | None
    predicted_bytes: int
    memory_bytes: int | None
    detail: str = ""
    seconds: float = 0.0
    illustration: bool = False


@dataclass(frozen=True)
class DemoResult:
    """What a demo run produced: its folder and store, every variant, the report (with the analysis
    and the recommendation) and the wall time in seconds."""

    out_dir: Path
    store_dir: Path
    variants: tuple[DemoVariant, ...]
    report: ReportResult
    seconds: float


def run_demo(
    out_dir: str | Path,
    quick: bool = False,
    progress: DemoCallback | None = None,
    *,
    model: str | Path | None = None,
    budget_bytes: int | None = None,
    settings: DemoSettings | None = None,
    gpu: str | None = None,
) -> DemoResult:
    """Run (or resume) the demo into `out_dir` and return what it produced.

    `model` defaults to the bundled toy checkpoint; `settings` to `QUICK` or `FULL` by `quick`;
    `budget_bytes` (bytes) to `DEFAULT_BUDGET_FRACTION` of the BF16 weights; `gpu` (a
    `quantscope.gpus` name) overrides the settings' target GPU of the evaluation twins.
    """
    from quantscope.report import build_report
    from quantscope.store.database import Store

    started = time.perf_counter()
    notify = progress or (lambda _event: None)
    settings = settings or (QUICK if quick else FULL)
    settings = replace(settings, gpu=get_gpu(gpu or settings.gpu).name)  # "b200" and "B200" are one GPU
    source = Path(model) if model is not None else _toy_checkpoint()
    out = Path(out_dir).expanduser().resolve()
    _check_target(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    planned = plan_presets(source, settings.presets, notify)
    variants = [
        replace(
            prepare_variant(source, preset, predicted, out, settings, notify),
            illustration=preset in settings.illustrations,
        )
        for preset, predicted in planned
    ]
    ready = [v for v in variants if v.status != "failed"]
    if not any(v.preset == "bf16" for v in ready):
        raise QuantscopeError(f"the demo needs the bf16 baseline; presets were {', '.join(settings.presets)}")
    with Store.open(out) as store:
        for variant in ready:
            evaluate_variant(variant, store, settings, notify)
    baseline_bytes = next(v.predicted_bytes for v in variants if v.preset == "bf16")
    budget = budget_bytes if budget_bytes is not None else int(DEFAULT_BUDGET_FRACTION * baseline_bytes)
    notify(DemoProgress("report", None, 0, 1, "analysing"))
    # No GPU capacity section (issue 32): for a model of a few MB, answers held at once and correct
    # answers per GPU-hour on a 192 GB GPU are true arithmetic that says nothing about a real model.
    written = build_report(
        out, out / "report.html", baseline="bf16", budget_bytes=budget, title=_title(settings)
    )
    notify(DemoProgress("report", None, 1, 1, str(written.path.name)))
    return DemoResult(out, out, tuple(variants), written, time.perf_counter() - started)


def _toy_checkpoint() -> Path:
    from quantscope.toy import checkpoint_dir

    return checkpoint_dir()


def _check_target(out: Path, settings: DemoSettings) -> None:
    """Refuse to resume a demo folder whose stored generations came from twins of another GPU:
    the store would mix two emulations under one variant name."""
    from quantscope.numerics.twin_marker import read_twin

    for preset in settings.presets:
        marker = read_twin(out / "eval" / preset)
        if marker and marker.get("gpu") != settings.gpu:
            raise QuantscopeError(
                f"{out} holds results evaluated as on {marker.get('gpu')}; "
                f"for {settings.gpu} use another --out"
            )


def _title(settings: DemoSettings) -> str:
    shown = [p for p in settings.presets if p in settings.illustrations]
    return (
        f"quantscope demo — toy reasoner, {len(settings.presets)} recipes, synthetic task levels "
        f"{', '.join(map(str, settings.levels))} ({settings.per_level}/level × k={settings.k}, "
        f"cap {settings.max_tokens} tokens)"
        + (f"; {', '.join(shown)} only illustrates the mechanism" if shown else "")
    )


def plan_presets(source: Path, presets: tuple[str, ...], notify: DemoCallback) -> list[tuple[str, int]]:
    """Each preset with its predicted weight footprint in bytes (headers only, nothing loaded)."""
    from quantscope.checkpoint.load import load_anatomy
    from quantscope.plan.recipe import load_recipe, predict_footprint

    anatomy = load_anatomy(source)
    planned = []
    for i, preset in enumerate(presets):
        planned.append((preset, predict_footprint(anatomy, load_recipe(preset)).total_bytes))
        notify(DemoProgress("plan", None, i + 1, len(presets), preset))
    return planned


def prepare_variant(
    source: Path, preset: str, predicted: int, out: Path, settings: DemoSettings, notify: DemoCallback
) -> DemoVariant:
    """The checkpoint for `preset`: the source for bf16, a reused finished export, or a new RTN export.

    A QuantscopeError from quantization (a format this machine cannot export or load) makes the
    variant "failed" instead of stopping the demo.
    """
    from quantscope.quantize import QuantizeOptions, quantize, read_manifest
    from quantscope.quantize.manifest import MANIFEST_NAME
    from quantscope.quantize.twin import write_twin

    if preset == "bf16":
        return DemoVariant(preset, "original", source, predicted, predicted)
    directory = out / "checkpoints" / preset
    if (directory / MANIFEST_NAME).is_file():
        manifest = read_manifest(directory)
        notify(DemoProgress("quantize", preset, 1, 1, "reused"))
        twin = write_twin(source, directory, out / "eval" / preset, settings.gpu)
        return DemoVariant(preset, "reused", twin, predicted, manifest.tensor_bytes)
    options = QuantizeOptions(
        iters=0,
        nsamples=settings.calib_samples,
        seqlen=settings.calib_seqlen,
        dataset="toy",
        seed=settings.seed,
    )
    started = time.perf_counter()
    notify(DemoProgress("quantize", preset, 0, 1, "RTN"))
    try:
        result = quantize(
            source,
            preset,
            directory,
            options,
            progress=lambda stage: notify(DemoProgress("quantize", preset, 0, 1, stage)),
        )
    except QuantscopeError as error:
        notify(DemoProgress("quantize", preset, 1, 1, "failed"))
        return DemoVariant(preset, "failed", None, predicted, None, str(error), time.perf_counter() - started)
    notify(DemoProgress("quantize", preset, 1, 1, "evaluation twin"))
    twin = write_twin(source, directory, out / "eval" / preset, settings.gpu)
    notify(DemoProgress("quantize", preset, 1, 1, "done"))
    seconds = time.perf_counter() - started
    return DemoVariant(preset, "quantized", twin, predicted, result.manifest.tensor_bytes, "", seconds)


def run_spec(variant: DemoVariant, settings: DemoSettings) -> RunSpec:
    """The run spec that evaluates `variant` on the synthetic task with thinking on."""
    from quantscope.evaluate.spec import RunSpec, TaskSpec

    return RunSpec(
        model=str(variant.directory),
        tasks=(
            TaskSpec(
                name="synthetic", options={"per_level": settings.per_level, "levels": list(settings.levels)}
            ),
        ),
        variant=variant.preset,
        engine="transformers",
        thinking=True,
        preset=settings.sampling_preset,
        max_tokens=settings.max_tokens,
        k=settings.k,
        seed=settings.seed,
        batch_size=settings.batch_size * 2,
        engine_options={"batch_size": settings.batch_size, "device": "cpu", "dtype": "float32"},
        recipe=variant.preset,
        baseline=variant.preset == "bf16",
        memory_bytes=variant.memory_bytes,
    )


def evaluate_variant(
    variant: DemoVariant, store: Store, settings: DemoSettings, notify: DemoCallback
) -> None:
    """Generate and judge whatever the store still lacks for `variant` (resumes a killed run)."""
    from quantscope.evaluate.runner import resume_hash, run_eval

    spec = run_spec(variant, settings)
    (task,) = spec.tasks
    try:
        resume_hash(spec, task, spec.output_settings(task), store)
    except QuantscopeError as error:
        raise QuantscopeError(
            f"{store.path.parent} holds a demo run with other settings (quick vs full, or another model): "
            f"pass a different --out ({error})"
        ) from None

    def relay(update: ProgressUpdate) -> None:
        rate = f"{update.tokens / update.seconds:,.0f} tok/s" if update.seconds > 0 and update.tokens else ""
        notify(DemoProgress("eval", variant.preset, update.done, update.total, rate))

    run_eval(spec, store, progress=relay)
