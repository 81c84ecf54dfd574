"""Quantize a checkpoint with AutoRound from a recipe, export it for vLLM, and verify it.

`pipeline` runs the whole stage (`quantize`); `autoround` turns a recipe into AutoRound's
arguments and runs it; `manifest` records what made a checkpoint; `kinds`, `checks` and
`verify` decide whether an export is what its recipe promised; `twin` writes an export's float
twin for evaluation on a CPU (its marker is read by `numerics.twin_marker`); `weight_memory`
says what a variant's weights take (its manifest, its files or its hub headers), for eval and
analysis alike.
"""

from quantscope.quantize.manifest import Manifest, read_manifest
from quantscope.quantize.pipeline import QuantizeOptions, QuantizeResult, quantize
from quantscope.quantize.verify import VerifyReport, verify

__all__ = [
    "Manifest",
    "QuantizeOptions",
    "QuantizeResult",
    "VerifyReport",
    "quantize",
    "read_manifest",
    "verify",
]
