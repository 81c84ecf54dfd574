"""Time `load_anatomy` on a headers-only checkpoint shaped like Qwen3.5-397B-A17B.

Writes a sharded checkpoint (model.safetensors.index.json + shard files that hold only the
safetensors header: real names, shapes and declared data offsets, no data) with Qwen3.5-397B-A17B's
layout: 60 hybrid layers (Gated DeltaNet ×3 + gated full attention), 512 routed experts stored
per expert, a shared expert, an MTP layer and the vision tower — about 95k tensors, 400B params.
Then times `load_anatomy` (which must read no weight bytes: there are none) and `plan`'s
footprints for every preset.

    python benchmarks/anatomy_headers.py [--out DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.header_only import write_checkpoint

from quantscope.checkpoint.load import load_anatomy
from quantscope.plan.recipe import PRESETS, predict_footprint
from quantscope.util import format_size


def run(directory: Path) -> dict[str, object]:
    """Time the anatomy and every preset's footprint on the checkpoint in `directory`."""
    start = time.perf_counter()
    anatomy = load_anatomy(directory)
    anatomy_s = time.perf_counter() - start
    start = time.perf_counter()
    sizes = {name: predict_footprint(anatomy, recipe).total_bytes for name, recipe in PRESETS.items()}
    plan_s = time.perf_counter() - start
    on_disk = sum(path.stat().st_size for path in directory.glob("*.safetensors"))
    return {
        "tensors": len(anatomy.tensors),
        "params": anatomy.total_params,
        "declared_bytes": anatomy.total_bytes,
        "bytes_on_disk": on_disk,
        "unknown": len(anatomy.unknown),
        "anatomy_seconds": anatomy_s,
        "plan_seconds": plan_s,
        "sizes": sizes,
    }


def main() -> None:
    """Write the synthetic checkpoint (to --out or a temp dir) and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where to write the checkpoint (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = write_checkpoint(args.out or Path(tmp) / "qwen35-397b-headers")
        result = run(directory)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"anatomy of {result['tensors']:,} tensors, {result['params'] / 1e9:.1f} B params "
        f"({format_size(result['declared_bytes'])} declared, "
        f"{format_size(result['bytes_on_disk'])} of headers on disk): {result['anatomy_seconds']:.2f} s; "
        f"footprints of {len(PRESETS)} presets: {result['plan_seconds']:.2f} s"
    )
    for name, size in result["sizes"].items():
        print(f"  {name:24s} {format_size(size)}")


if __name__ == "__main__":
    main()
