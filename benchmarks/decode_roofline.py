"""Decode throughput measured against the bandwidth roofline `quantscope.plan.serving.roofline` predicts.

    python benchmarks/decode_roofline.py [--config ../shared/qwen3.5-configs/qwen3.5-27b.config.json]
        [--layers 16] [--batch 1 8 32] [--context 1024] [--gpu H200]

Builds the model of a real config (its text model, layers cut to `--layers` so that it fits and
initialises quickly) with random weights in BF16 on the first CUDA device, prefills `--context`
tokens per sequence, then times 64 greedy decode steps with transformers at each batch size and
prints measured tokens/s, the roofline's upper bound for the same bytes, and their ratio (the
fraction of the bound transformers reaches). Needs a GPU: on a machine without one it says so and
exits 0. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STEPS = 64


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "qwen3.5-configs" / "qwen3.5-27b.config.json"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=default)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--gpu", default="H200", help="table entry whose bandwidth the roofline uses")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark measures GPU decoding (nothing run)")
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    from quantscope.gpus import get_gpu
    from quantscope.plan.serving import DecodeBytes, ServingOptions, cache_layout, cache_shape, roofline

    raw = json.loads(args.config.read_text())
    text = dict(raw.get("text_config", raw))
    text["num_hidden_layers"] = args.layers
    text["layer_types"] = text.get("layer_types", [])[: args.layers] or None
    config = AutoConfig.for_model(text.pop("model_type"), **{k: v for k, v in text.items() if v is not None})
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    layout = cache_layout(cache_shape(text), ServingOptions(context=args.context + STEPS))
    gpu = get_gpu(args.gpu)
    print(
        f"{args.config.name}, {args.layers} layers, {weight_bytes / 1e9:.2f} GB of BF16 weights on {gpu.name}"
    )
    for batch in args.batch:
        measured = _decode(model, batch, args.context)
        # every weight is read each step (a dense model; for MoE this overstates the bytes)
        bound = roofline(DecodeBytes(weight_bytes), layout, gpu, batch, args.context + STEPS / 2).tokens_per_s
        print(
            f"  batch {batch:4}: measured {measured:10,.0f} tok/s, roofline {bound:10,.0f}, "
            f"ratio {measured / bound:.3f}"
        )


def _decode(model: object, batch: int, context: int) -> float:
    import torch

    ids = torch.randint(0, 1000, (batch, context), device="cuda")
    with torch.no_grad():
        out = model(ids, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(4):  # warm-up steps
            out = model(token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(STEPS):
            out = model(token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
    return batch * STEPS / (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
