"""A twin's marker (`twin.json`): what it emulates, read back by the loader and the reports.

Written by `quantize.twin.write_twin`; read here, below both, so that the one model loader
(`checkpoint.modeling.load_causal_lm`) can install a twin's activation rounding without reaching
up into the quantize stage that writes twins.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError
from quantscope.numerics.served import KernelSet

TWIN_MARKER = "twin.json"
TWIN_VERSION = 3
"""Bumped whenever a twin's contents would change for the same export and GPU (2: static
activation |max| reproducing the stored scales to the bit; 3: what runs per layer kind and kernel
set, MoE scales shared per layer); an older twin is rebuilt, not reused."""


def read_twin(directory: str | Path) -> dict[str, Any] | None:
    """A twin's marker (`twin.json`) as a dict, or None when `directory` is not a twin."""
    path = Path(directory) / TWIN_MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise QuantscopeError(
            f"{path}: not a readable twin manifest ({error}); delete the twin folder"
        ) from None


def describe_twin(directory: str | Path) -> str | None:
    """One sentence saying what evaluating the twin in `directory` measures (None: not a twin):
    what runs per layer kind on its GPU with its kernel set, e.g. "... as vLLM 0.32 runs it on
    B200 (FlashInfer, Humming, DeepGEMM): dense W4A4 (NVFP4); experts W4A4 (NVFP4) with one
    activation scale per layer; activation rounding emulated on 26 layer inputs; ...".

    Reads only `twin.json`; a missing or remote directory is simply not a twin."""
    try:
        marker = read_twin(directory) if Path(str(directory)).is_dir() else None
    except QuantscopeError:
        return None
    if not marker:
        return None
    export = Path(str(marker.get("export", "?"))).name
    gpu, rounded = marker.get("gpu", "?"), len(marker.get("activations", ()))
    activation = (
        f"activation rounding emulated on {rounded} layer inputs"
        if rounded
        else "weight-only there (no activation rounding)"
    )
    if gpu == "transformers":
        where = "as the transformers CPU path runs it (AutoRound's modules)"
    else:
        kernels = KernelSet(**marker["kernel_set"]).describe() if "kernel_set" in marker else "?"
        where = f"as vLLM 0.32 runs it on {gpu} ({kernels})"
    runs = marker.get("runs")
    return (
        f"an emulation: the float32 twin of export {export!r} (its own dequantized weights) run on the CPU "
        f"{where}: " + (f"{runs}; " if runs else "") + f"{activation}; on that GPU, evaluate the export "
        "itself with vLLM"
    )


def twin_activations(directory: str | Path) -> Sequence[Any]:
    """The activation points a twin's marker names (empty for a non-twin or a weight-only twin)."""
    from quantscope.numerics.actquant import ActPoint

    marker = read_twin(directory)
    if not marker:
        return ()
    try:
        return tuple(ActPoint(**p) for p in marker.get("activations", ()))
    except (KeyError, TypeError) as error:
        raise QuantscopeError(f"{Path(directory) / TWIN_MARKER}: bad activation entry ({error})") from None


__all__ = ["TWIN_MARKER", "TWIN_VERSION", "describe_twin", "read_twin", "twin_activations"]
