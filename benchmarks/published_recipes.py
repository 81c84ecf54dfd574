"""What published checkpoints hold and what their recipes weigh elsewhere, from real configs only.

    python benchmarks/published_recipes.py [--configs ../shared/qwen3.5-configs]

Prints, from the real configs in the shared folder (no weights exist here):
- Qwen3.5-9B in BF16 predicted from its config.json alone, against the real shards' total;
- each NVIDIA NVFP4 checkpoint rebuilt header-only in ModelOpt's layout from its config.json and
  hf_quant_config.json: size, bits per weight and the label-against-contents line;
- NVIDIA's recipes moved onto Qwen3.5-35B-A3B (`plan --like`): predicted size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.header_only import modelopt_checkpoint, read_nvidia

from quantscope.checkpoint.contents import read_contents
from quantscope.checkpoint.from_config import anatomy_from_config, estimate_header_bytes
from quantscope.checkpoint.load import load_anatomy
from quantscope.plan.derive import plan_like
from quantscope.util import format_size

QWEN35_9B_SHARDS = 19_306_310_880  # the four official BF16 shards, headers included (shared README)
NVIDIA = (
    "nvidia-qwen3.5-122b-a10b-nvfp4",
    "nvidia-qwen3.5-397b-a17b-nvfp4",
    "nvidia-qwen3.6-27b-nvfp4",
    "nvidia-qwen3.6-35b-a3b-nvfp4",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "qwen3.5-configs"
    parser.add_argument("--configs", type=Path, default=default)
    configs = parser.parse_args().configs

    nine = anatomy_from_config(json.loads((configs / "qwen3.5-9b.config.json").read_text()), "qwen3.5-9b")
    predicted = nine.total_bytes + estimate_header_bytes(nine, shards=4)
    print(
        f"Qwen3.5-9B BF16 from config.json: {predicted:,} B vs {QWEN35_9B_SHARDS:,} B real "
        f"({predicted / QWEN35_9B_SHARDS - 1:+.2e})"
    )

    target = anatomy_from_config(json.loads((configs / "qwen3.5-35b-a3b.config.json").read_text()), "35b")
    with tempfile.TemporaryDirectory() as tmp:
        for name in NVIDIA:
            modelopt_checkpoint(*read_nvidia(configs, name), name, Path(tmp) / name)
            checkpoint = load_anatomy(Path(tmp) / name)
            contents = read_contents(checkpoint)
            print(
                f"{name}: {format_size(contents.nbytes)}, {contents.bits_per_weight:.2f} bits/weight; "
                f"{contents.summary()}"
            )
            like = plan_like(target, checkpoint)
            print(
                f"  its recipe on Qwen3.5-35B-A3B: {format_size(like.footprint.total_bytes)} of "
                f"{format_size(target.total_bytes)} (reproduces: {like.derived.reproduces}; "
                f"dropped rules: {len(like.transferred.dropped)}; "
                f"approximate: {len(like.derived.approximate)})"
            )


if __name__ == "__main__":
    main()
