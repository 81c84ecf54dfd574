"""What freezing the heap saves AutoRound's garbage collections (`quantscope.util.frozen_heap`).

    OMP_NUM_THREADS=1 python benchmarks/autoround_gc.py [--preset nvfp4] [--runs 2]

AutoRound calls gc.collect() after every decoder block; each full collection walks every live
object, and a quantscope process holds millions (torch, transformers, vLLM). Quantizes the bundled
toy reasoner (RTN, the quick settings of the test suite) in one process: a warm-up, then `--runs`
pairs with the heap frozen (as quantscope runs) and not frozen, alternating, and prints the wall
seconds of each, the time spent in gc.collect, the median ratio, and the heap's object count.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import quantscope.quantize.autoround as autoround
from quantscope.quantize import QuantizeOptions, quantize
from quantscope.toy import checkpoint_dir


class CollectTimer:
    """Wraps gc.collect to add up the seconds spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._collect = gc.collect

    def __call__(self, *args: int) -> int:
        start = time.perf_counter()
        try:
            return self._collect(*args)
        finally:
            self.seconds += time.perf_counter() - start


def timed(preset: str, frozen: bool, root: Path, index: int) -> tuple[float, float]:
    """(wall seconds, seconds in gc.collect) of one quantization, heap frozen or not."""
    options = QuantizeOptions(iters=0, nsamples=4, seqlen=128, dataset="toy", kl_samples=2, kl_tokens=96)
    timer = CollectTimer()
    gc.collect = timer
    if not frozen:
        autoround.frozen_heap = contextlib.nullcontext
    start = time.perf_counter()
    try:
        quantize(checkpoint_dir(), preset, root / f"{index}", options)
    finally:
        gc.collect = timer._collect
        autoround.frozen_heap = FROZEN
    return time.perf_counter() - start, timer.seconds


FROZEN = autoround.frozen_heap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="nvfp4")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        timed(args.preset, True, root, 0)  # warm-up: every import, the toy's files in the page cache
        print(f"live objects after the warm-up: {len(gc.get_objects()):,}")
        results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for run in range(args.runs):
            for frozen in (False, True):
                wall, in_gc = timed(args.preset, frozen, root, 1 + 2 * run + frozen)
                results[frozen].append((wall, in_gc))
                print(
                    f"{'frozen' if frozen else 'not frozen':>10}: {wall:6.1f} s, {in_gc:5.1f} s in gc.collect"
                )
    off = statistics.median(w for w, _ in results[False])
    on = statistics.median(w for w, _ in results[True])
    print(f"median wall: not frozen {off:.1f} s, frozen {on:.1f} s, ratio {on / off:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
