"""Measure the toy reasoner's model-card numbers: per-level accuracy and thinking length, BF16 vs crude RTN.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/toy_eval.py [--per-level 50] [--max-new-tokens 512]

Greedy decoding with plain transformers `generate` (left-padded batches) on the held-out
synthetic benchmark (`get_task("synthetic")`: seed 1234, 50 problems per level). "BF16" is the
shipped bf16 checkpoint; "RTN-4" rounds every linear weight (attention, Gated DeltaNet
projections incl. in_proj_b/a, router, shared expert, routed experts, lm_head) to symmetric
4-bit integers per group of 128 input columns, scale = max|w| / 7, nothing calibrated. Prints one
table per variant, the per-level differences with counts, and the wall time of each pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from quantscope.toy import checkpoint_dir
from quantscope.toy.evaluate import DEFAULT_MAX_NEW_TOKENS, format_summary, generate_outcomes, summarize
from quantscope.toy.problems import benchmark_problems


def rtn_(weight: torch.Tensor, bits: int = 4, group_size: int = 128) -> None:
    """Round `weight` in place to symmetric `bits`-bit integers per group of `group_size` input columns."""
    shape = weight.shape
    columns = shape[-1]
    size = min(group_size, columns)
    grouped = weight.data.float().reshape(-1, columns // size, size)
    qmax = 2 ** (bits - 1) - 1
    scale = grouped.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / qmax
    rounded = (grouped / scale).round().clamp(-qmax - 1, qmax) * scale
    weight.data.copy_(rounded.reshape(shape).to(weight.dtype))


def linear_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight a linear layer multiplies by: 2D Linear weights and the fused 3D expert tensors."""
    found = {}
    for name, param in model.named_parameters():
        if "embed_tokens" in name or "norm" in name or "conv1d" in name:
            continue
        if param.ndim == 2 or (param.ndim == 3 and ".experts." in name):
            found[name] = param
    return found


def quantize_rtn(model: torch.nn.Module, bits: int = 4, group_size: int = 128) -> list[str]:
    """Apply `rtn_` to every linear weight of `model`; returns the parameter names touched."""
    weights = linear_weights(model)
    with torch.no_grad():
        for param in weights.values():
            rtn_(param, bits, group_size)
    return sorted(weights)


def run_variant(model, problems, args: argparse.Namespace, thinking: bool = True) -> tuple[list, float]:
    """Generate every problem; the outcomes and the wall time in seconds."""
    start = time.perf_counter()
    outcomes = generate_outcomes(
        model, problems, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, thinking=thinking
    )
    return outcomes, time.perf_counter() - start


def _row(summary) -> dict:
    return {
        "level": summary.level,
        "n": summary.count,
        "correct": summary.correct,
        "truncated": summary.truncated,
        "retries": summary.retries,
        "mean_thinking": round(summary.mean_thinking, 1),
        "median_thinking": summary.median_thinking,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the BF16 and RTN passes and print their tables (and write JSON when `--json` is given)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: the shipped one)")
    parser.add_argument("--per-level", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument(
        "--dtype", default="float32", help="compute dtype: float32 (bf16 weights, exact) or bfloat16"
    )
    parser.add_argument("--skip-rtn", action="store_true")
    parser.add_argument("--no-thinking", action="store_true", help="also run BF16 with thinking off")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = args.model or checkpoint_dir()
    dtype = getattr(torch, args.dtype)
    problems = benchmark_problems(per_level=args.per_level, seed=args.seed)
    print(
        f"{len(problems)} problems, cap {args.max_new_tokens} tokens, greedy, "
        f"{args.threads} threads, {source}"
    )
    results = {}
    variants = ["bf16"] if args.skip_rtn else ["bf16", f"rtn{args.bits}"]
    for variant in [*variants, *(["bf16-nothink"] if args.no_thinking else [])]:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
        if variant.startswith("rtn"):
            touched = quantize_rtn(model, args.bits)
            print(f"RTN-{args.bits} g128 on {len(touched)} tensors")
        model = model.to(dtype)
        outcomes, seconds = run_variant(model, problems, args, thinking=variant != "bf16-nothink")
        summaries = summarize(outcomes)
        print(f"\n== {variant} ==\n{format_summary(summaries, seconds)}")
        results[variant] = {"seconds": round(seconds, 1), "levels": [_row(s) for s in summaries]}
    if len(variants) == 2:
        print("\nlevel  correct bf16 -> rtn   mean thinking bf16 -> rtn   truncated bf16 -> rtn")
        for base, quant in zip(results["bf16"]["levels"], results[variants[1]]["levels"], strict=True):
            print(
                f"{base['level']:<6} {base['correct']:>4} -> {quant['correct']:<4}        "
                f"{base['mean_thinking']:>6} -> {quant['mean_thinking']:<6}             "
                f"{base['truncated']:>3} -> {quant['truncated']}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
