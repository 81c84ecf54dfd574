"""`quantscope profile`: sensitivity per group of layers, and the least-damage recipe for a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantscope.cli.app import app, console, friendly_errors, size_or_none
from quantscope.errors import QuantscopeError

_DATA_HELP = (
    "Calibration text: a .txt/.md file (paragraphs), a .jsonl/.json file ('text', 'messages' or "
    "'prompt'+'completion'), or a Hugging Face dataset id. Default: built-in text for the bundled "
    "toy model; required for any other model."
)


def _edges(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise QuantscopeError(
            f"--buckets {text!r}: give comma-separated token positions, e.g. 0,512,2048"
        ) from None


_GPU_HELP = (
    "The GPU that will serve the model: each layer's inputs are rounded as vLLM 0.32 runs that layer "
    "kind there (e.g. B200: NVFP4/MXFP4 W4A4; H100: MXFP4 dense W4A8, FP4 experts weight-only; "
    "RTX-5090: MXFP4 experts weight-only; `quantscope doctor` lists them). B200, H100, A100, L4, "
    "RTX-5090…; 'none' rounds weights only."
)
_KERNELS_HELP = (
    "Kernel packages beside vLLM on that GPU: 'default' (vLLM 0.32's CUDA wheel: FlashInfer, "
    "Humming, DeepGEMM), 'none', or a comma list of flashinfer, humming, deep_gemm."
)


@app.command()
@friendly_errors
def profile(
    model: Annotated[str, typer.Argument(help="Checkpoint directory or Hugging Face model id.")],
    data: Annotated[str | None, typer.Option("--data", help=_DATA_HELP)] = None,
    scheme: Annotated[str, typer.Option(help="Format to profile: nvfp4, w4a16, mxfp4, fp8…")] = "nvfp4",
    also: Annotated[list[str] | None, typer.Option(help="Extra formats measured per unit, e.g. fp8.")] = None,
    per_layer: Annotated[bool, typer.Option(help="One unit per group and decoder layer.")] = False,
    samples: Annotated[int, typer.Option(help="Calibration windows (sequences).")] = 8,
    seq_len: Annotated[int, typer.Option(help="Tokens per calibration window.")] = 512,
    buckets: Annotated[
        str | None, typer.Option(help="Position-bucket edges, e.g. 0,512,2048,8192 (default: scaled).")
    ] = None,
    budget: Annotated[
        str | None, typer.Option(help="Search a recipe of at most this size, e.g. 20GB.")
    ] = None,
    avg_bits: Annotated[float | None, typer.Option(help="Search for this many bits per parameter.")] = None,
    objective: Annotated[
        str, typer.Option(help="Damage to minimise: mean, late (last bucket), worst.")
    ] = "mean",
    out: Annotated[
        Path | None, typer.Option(help="Profile JSON (default ./quantscope-profile-….json).")
    ] = None,
    recipe_out: Annotated[
        Path | None, typer.Option(help="Searched recipe YAML (default ./<name>.yaml).")
    ] = None,
    from_profile: Annotated[
        Path | None, typer.Option(help="Reuse a saved profile JSON; measure nothing.")
    ] = None,
    validate: Annotated[bool, typer.Option(help="Measure the searched recipe's KL for real.")] = True,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1…, or auto (shard over all GPUs).")] = "cpu",
    dtype: Annotated[
        str | None, typer.Option(help="float32 (CPU default) or bfloat16 (GPU default).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Calibration windows per forward pass.")] = 4,
    gpu: Annotated[str, typer.Option(help=_GPU_HELP)] = "B200",
    kernels: Annotated[str, typer.Option(help=_KERNELS_HELP)] = "default",
) -> None:
    """Measure how much each group of layers damages the model when quantized alone (KL of
    next-token distributions vs the original, overall and by token position), then optionally
    search the least-damage recipe that fits --budget and write it as a YAML recipe."""
    from rich.progress import Progress

    from quantscope.cli.views.sensitivity import profile_view
    from quantscope.numerics.served import parse_kernel_set
    from quantscope.sensitivity.profiler import ProfileOptions, run_profile

    options = ProfileOptions(
        data=data, scheme=scheme, also=tuple(also or ()), per_layer=per_layer, n_sequences=samples,
        seq_len=seq_len, bucket_edges=_edges(buckets), device=device, dtype=dtype, batch_size=batch_size,
        out=out, from_profile=from_profile, budget_bytes=size_or_none(budget), avg_bits=avg_bits,
        objective=objective, recipe_out=recipe_out, validate=validate,
        gpu=None if gpu.lower() == "none" else gpu, kernels=parse_kernel_set(kernels),
    )  # fmt: skip
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("profiling", total=None)
        run = run_profile(
            model,
            options,
            lambda what, done, total: bar.update(task, description=what, completed=done, total=total or None),
        )
    console.print(profile_view(run))
