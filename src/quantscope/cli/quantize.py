"""`quantscope quantize` and `quantscope verify`: AutoRound from a recipe, then a checked export."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from quantscope.cli.app import JsonOpt, app, console, err_console, friendly_errors
from quantscope.errors import QuantscopeError

_FORMAT_HELP = (
    "AutoRound export format: auto_round (INT and block FP8; vLLM's INCConfig refuses its NVFP4 and "
    "per-channel FP8), llm_compressor (compressed-tensors: NVFP4, MXFP4, FP8). Default: the route "
    "vLLM 0.32 loads; verify asks vLLM's own classes and fails an export they refuse."
)
_DATASET_HELP = (
    "Calibration text: a .txt/.md file (paragraphs), a .jsonl/.json file ('text', 'messages' or "
    "'prompt'+'completion'), a Hugging Face dataset id, or 'toy'. Required for any model but the "
    "bundled toy model; nothing is downloaded by default."
)


_MAX_KL_HELP = (
    "Fail when the mean next-token KL vs the source exceeds this (nats per token). Default: 1.5 × "
    "the largest KL a legitimate export of the coarsest format in the export measured on "
    "SmolLM2-135M (INT8 0.0073, FP8 0.117, INT4 0.71, NVFP4 1.06, INT3 1.40, MXFP4 2.14; the "
    "bundled model stays under 0.1), at least 0.05: an NVFP4 export fails above 1.59. Raise it for "
    "a model known to be that sensitive."
)


INCOMPLETE_EXIT = 3
"""`verify`'s exit status when no check failed but some were skipped (without --allow-skipped)."""


@app.command()
@friendly_errors
def quantize(
    model: Annotated[str, typer.Argument(help="Source checkpoint: a local directory or a hub model id.")],
    recipe: Annotated[
        str, typer.Option("--recipe", "-r", help="Preset name (see `quantscope plan`) or recipe YAML.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory (must not exist, see --overwrite).")
    ],
    iters: Annotated[int, typer.Option(help="AutoRound tuning steps per block; 0 = RTN (fast).")] = 200,
    nsamples: Annotated[int, typer.Option(help="Calibration windows.")] = 128,
    seqlen: Annotated[int, typer.Option(help="Tokens per calibration window.")] = 2048,
    dataset: Annotated[str | None, typer.Option(help=_DATASET_HELP)] = None,
    split: Annotated[str, typer.Option(help="Split of a Hugging Face dataset.")] = "train",
    text_field: Annotated[
        str | None, typer.Option(help="Record field holding the text (JSONL / datasets).")
    ] = None,
    export_format: Annotated[str | None, typer.Option("--format", help=_FORMAT_HELP)] = None,
    device: Annotated[str, typer.Option(help="AutoRound device map: cpu, cuda, cuda:0, auto …")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed for AutoRound and the calibration shuffle.")] = 42,
    verify: Annotated[
        bool, typer.Option(help="Load, generate, measure KL and compare weights before publishing.")
    ] = True,
    max_kl: Annotated[float | None, typer.Option(help=_MAX_KL_HELP, show_default=False)] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing quantscope checkpoint at --out.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest and report as JSON.")] = False,
) -> None:
    """Quantize MODEL with AutoRound following a recipe; write a verified checkpoint to --out."""
    from quantscope.cli.views.quantize import quantize_summary, verify_table
    from quantscope.quantize import QuantizeOptions
    from quantscope.quantize import quantize as run_quantize

    options = QuantizeOptions(
        iters=iters, nsamples=nsamples, seqlen=seqlen, dataset=dataset, split=split, text_field=text_field,
        export_format=export_format, device=device, seed=seed, verify=verify, max_kl=max_kl,
        overwrite=overwrite,
    )  # fmt: skip
    result = run_quantize(model, recipe, out, options, progress=_stage_printer())
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    console.print(quantize_summary(result), highlight=False)
    if result.report:
        console.print(verify_table(result.report))


@app.command()
@friendly_errors
def verify(
    directory: Annotated[Path, typer.Argument(help="A checkpoint written by `quantscope quantize`.")],
    source: Annotated[
        str | None, typer.Option(help="Source model for the KL check (default: the manifest's).")
    ] = None,
    load: Annotated[
        bool, typer.Option(help="Also load, generate and measure KL (else headers only).")
    ] = True,
    device: Annotated[str, typer.Option(help="Device to load the models on.")] = "cpu",
    max_kl: Annotated[float | None, typer.Option(help=_MAX_KL_HELP, show_default=False)] = None,
    kl: Annotated[
        bool,
        typer.Option(
            "--kl/--no-kl",
            help="Load the source for the KL and weight checks (--no-kl: skip both, reported as skipped).",
        ),
    ] = True,
    allow_skipped: Annotated[
        bool,
        typer.Option(
            "--allow-skipped",
            help="Exit 0 when nothing failed though some checks were skipped (the verdict reads INCOMPLETE).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a quantized checkpoint: files (sizes and SHA-256) against its manifest, kept layers,
    fused sets, size, loading, KL and weights against the source.

    The verdict is PASS only when every check ran and passed; INCOMPLETE when none failed but some
    were skipped (--no-kl, --no-load, a manifest without file hashes). Exit status: 0 PASS, 1 FAIL,
    3 INCOMPLETE (0 with --allow-skipped), 2 bad input."""
    from quantscope.cli.views.quantize import verify_table
    from quantscope.quantize import verify as run_verify
    from quantscope.quantize.verify import VerifySettings

    settings = VerifySettings(max_kl=max_kl, kl=kl, device=device)
    report = run_verify(directory, source=source, load=load, settings=settings, progress=_stage_printer())
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        console.print(verify_table(report))
    if report.status != "PASS" and not (report.status == "INCOMPLETE" and allow_skipped):
        raise typer.Exit(code=1 if report.status == "FAIL" else INCOMPLETE_EXIT)


@app.command("extract-text")
@friendly_errors
def extract_text(
    model: Annotated[Path, typer.Argument(help="A local multimodal checkpoint (16-bit or quantized).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for the text-only model.")],
) -> None:
    """Write a multimodal checkpoint's language model as a text-only CausalLM checkpoint.

    The vision tower is dropped and `model.language_model.*` becomes `model.*` (a quantization
    config is renamed the same way). `quantscope quantize` does this itself and grafts the vision
    tower back; use this for a text-only deployment or another tool. Needs disk for a copy of the
    language model.
    """
    from quantscope.quantize.multimodal import extract_text_model

    if out.exists():
        raise QuantscopeError(f"{out} already exists; choose another --out")
    if not model.is_dir():
        raise QuantscopeError(f"{model}: not a checkpoint directory")
    written = extract_text_model(model.resolve(), out.resolve())
    console.print(f"text-only model written to {written}")


def _stage_printer() -> Callable[[str], None]:
    started = time.monotonic()

    def show(stage: str) -> None:
        err_console.print(f"[dim]{time.monotonic() - started:7.1f}s[/] {stage} …", highlight=False)

    return show
