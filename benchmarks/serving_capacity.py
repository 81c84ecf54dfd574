"""Serving capacity from real configs: quantscope's KV paging against vLLM's own arithmetic, then what
one GPU holds per recipe.

    python benchmarks/serving_capacity.py [--configs ../shared/qwen3.5-configs] [--gpu H100]

Prints, for Qwen3.5-27B and 35B-A3B (real config.json files; no weights needed):
- block size, pool blocks and maximum concurrency for a 40 GB KV pool, quantscope vs vLLM 0.32's
  functions called directly (`tests/vllm_arithmetic.py`), and their ratio;
- per preset on `--gpu` at a 32k context: weights, KV pool, sequences that fit, and the decode
  roofline (an upper bound; the engine reserve is estimated).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.vllm_arithmetic import vllm_capacity

from quantscope.checkpoint.load import load_anatomy
from quantscope.gpus import get_gpu
from quantscope.plan.recipe import plan_recipes
from quantscope.plan.serving import ServingOptions, cache_layout, cache_shape, pool_concurrency, serve_recipes
from quantscope.util import format_size

MODELS = ("qwen3.5-27b", "qwen3.5-35b-a3b")
CASES = (ServingOptions(), ServingOptions(kv_dtype="fp8"), ServingOptions(tp=2, context=131_072))
POOL = 40 * 10**9


def against_vllm(configs: Path) -> None:
    print(f"KV pool of {format_size(POOL)}: quantscope vs vLLM (block tokens, blocks, max concurrency)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            path = configs / f"{name}.config.json"
            for i, options in enumerate(CASES):
                ours = cache_layout(cache_shape(json.loads(path.read_text())), options)
                blocks, concurrency = pool_concurrency(POOL, ours, options.context)
                where = Path(tmp) / f"{name}-{i}"
                where.mkdir()
                v_block, v_blocks, v_concurrency = vllm_capacity(path, where, options, POOL)
                print(
                    f"  {name:16} kv={options.kv_dtype:4} tp={options.tp} ctx={options.context:>7,}: "
                    f"block {ours.block_size} vs {v_block}, blocks {blocks} vs {v_blocks}, "
                    f"concurrency {concurrency:.2f} vs {v_concurrency:.2f} "
                    f"(ratio {concurrency / v_concurrency:.4f})"
                )


def per_recipe(configs: Path, gpu_name: str) -> None:
    gpu = get_gpu(gpu_name)
    for name in MODELS:
        anatomy = load_anatomy(configs / f"{name}.config.json")
        planned = plan_recipes(anatomy)
        served = serve_recipes(planned.footprints, anatomy.config, gpu, gpu.memory_bytes, ServingOptions())
        print(f"\n{name} on {gpu.name} ({format_size(gpu.memory_bytes)}), 32,768-token context:")
        for row in served.recipes:
            held = row.capacity
            speed = f"{row.roofline.tokens_per_s:,.0f} tok/s at {row.roofline.batch}" if row.roofline else "–"
            print(
                f"  {row.recipe:22} weights {format_size(held.weight_bytes):>9}  pool "
                f"{format_size(max(0, held.kv_pool_bytes)):>9}  sequences {held.max_concurrency:6.1f}  "
                f"decode ≤ {speed}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "qwen3.5-configs"
    parser.add_argument("--configs", type=Path, default=default)
    parser.add_argument("--gpu", default="H100")
    args = parser.parse_args()
    against_vllm(args.configs)
    per_recipe(args.configs, args.gpu)


if __name__ == "__main__":
    main()
