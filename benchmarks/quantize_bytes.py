"""Predicted vs exported bytes for every preset (acceptance: within 1% for the bundled reasoner).

    OMP_NUM_THREADS=1 python benchmarks/quantize_bytes.py [--model DIR] [--presets w4a16,nvfp4-safe]

Quantizes the model (default: the bundled toy reasoner, calibrated on its own task text) with
every preset that quantizes something, RTN (iters=0) for speed, each into a temporary directory,
and prints the footprint prediction (`quantscope.plan.recipe.predict_footprint`), the tensor bytes of
the export, the file bytes (tensors + safetensors headers + tokenizer/config files) and the
relative error. The header-level checks of `quantscope verify` run on every export; the model
checks (load, generate, KL) are left to the test suite. Exits 1 when any preset is off by > 1%.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError
from quantscope.plan.recipe import PRESETS, predict_footprint
from quantscope.quantize import QuantizeOptions, quantize, verify

TOLERANCE = 0.01


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint dir (default: the bundled toy reasoner)")
    parser.add_argument("--dataset", help="calibration text (default: the toy task's text)")
    parser.add_argument("--presets", help="comma-separated presets (default: all that quantize)")
    parser.add_argument("--nsamples", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=64)
    return parser.parse_args(argv)


def _model(path: str | None) -> Path:
    if path:
        return Path(path)
    from quantscope.toy import checkpoint_dir

    return checkpoint_dir()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(1)
    try:
        model = _model(args.model)
    except QuantscopeError as error:
        print(f"error: {error}; or pass --model DIR --dataset FILE", file=sys.stderr)
        return 2
    anatomy = load_anatomy(model)
    names = (
        args.presets.split(",") if args.presets else [n for n, r in PRESETS.items() if r.format.is_quantized]
    )
    options = QuantizeOptions(
        iters=0, nsamples=args.nsamples, seqlen=args.seqlen, dataset=args.dataset or "toy", verify=False
    )
    print(f"model: {model}  ({anatomy.total_bytes:,} B in 16-bit)")
    header = f"{'preset':24} {'format':15} {'predicted B':>12} {'exported B':>12} {'files B':>10}"
    print(f"{header} {'error':>8}  checks")
    worst = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            started = time.monotonic()
            predicted = predict_footprint(anatomy, PRESETS[name]).total_bytes
            try:
                result = quantize(model, name, Path(scratch) / name, options)
            except QuantscopeError as error:
                print(f"{name:24} failed: {error}")
                worst = float("inf")
                continue
            report = verify(result.directory, load=False)
            error = report.size_error
            worst = max(worst, abs(error))
            checks = "ok" if report.ok else "FAILED: " + ", ".join(c.name for c in report.failures)
            print(
                f"{name:24} {result.manifest.export_format:15} {predicted:>12,} {report.tensor_bytes:>12,} "
                f"{report.file_bytes:>10,} {error:>+8.3%}  {checks}  ({time.monotonic() - started:.0f} s)"
            )
    print(f"worst |error|: {worst:.3%} (bound {TOLERANCE:.0%})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
