"""Searched recipe vs uniform, naive presets and AutoRound's AutoScheme at about the same size.

    OMP_NUM_THREADS=1 python benchmarks/profile_vs_autoscheme.py [--model DIR] [--scheme nvfp4]
        [--avg-bits 6 --avg-bits 8] [--eval-per-level 20]

For each candidate it prints the exact footprint, the measured KL against the original (overall
and in the last position bucket, on the same calibration windows for everyone), whether it splits
a vLLM fused set, and with `--eval-per-level N` the toy task's accuracy, truncation rate and mean
thinking tokens (greedy, fake-quantized weights: bit-identical to AutoRound's RTN export).

AutoScheme picks a per-layer scheme from `options` (the 4-bit scheme and BF16) for an average bit
target; its choice is then priced with quantscope's byte accounting, and our search is run at that
exact byte budget, so both are compared at the same memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from profile_speed import bundled_checkpoint, write_toy_calibration
from quantscope.checkpoint.anatomy import Anatomy
from quantscope.errors import QuantscopeError
from quantscope.formats import get_format, stored_bytes

_AUTOROUND_NAMES = {
    "nvfp4": "NVFP4",
    "mxfp4": "MXFP4",
    "w4a16": "W4A16",
    "fp8": "FP8_STATIC",
    "w8a16": "W8A16",
}


def assignment_bytes(anatomy: Anatomy, formats: dict[str, str]) -> int:
    """Checkpoint bytes when each linear module is stored in `formats[module]` (others as stored)."""
    total = 0
    for tensor in anatomy.tensors:
        fmt = formats.get(tensor.module, "bf16") if tensor.is_linear_weight else "bf16"
        if tensor.is_linear_weight and get_format(fmt).is_quantized:
            total += stored_bytes(tensor.shape, get_format(fmt))
        else:
            total += tensor.nbytes
    return total


def split_fused_sets(anatomy: Anatomy, formats: dict[str, str]) -> list[str]:
    """Names of fused sets whose members `formats` stores differently (vLLM cannot load those)."""
    return [
        fused.name
        for fused in anatomy.fused_sets
        if len({formats.get(member, "bf16") for member in fused.members}) > 1
    ]


def _format_of(config: dict, schemes: list[str]) -> str:
    """The quantscope format of one AutoRound layer config among the offered `schemes`."""
    bits, data_type = int(config.get("bits", 16)), str(config.get("data_type", ""))
    if bits >= 16:
        return "bf16"
    for scheme in schemes:
        fmt = get_format(scheme)
        kind = {"nvfp4": "nv_fp", "mxfp4": "mx_fp", "int": "int", "fp8": "fp"}[fmt.data_type]
        if fmt.weight_bits == bits and data_type.startswith(kind):
            return scheme
    raise ValueError(f"AutoScheme chose {bits}-bit {data_type}, none of {schemes}")


def autoscheme_formats(
    model_dir: Path, text_data: Path, schemes: list[str], avg_bits: float, samples: int, seq_len: int
):
    """Run AutoScheme (options: `schemes` and BF16) and return (module -> format, seconds)."""
    from auto_round import AutoRound, AutoScheme
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    options = (*(_AUTOROUND_NAMES[scheme] for scheme in schemes), "BF16")
    auto = AutoScheme(
        avg_bits=avg_bits,
        options=options,
        dataset=str(text_data),
        nsamples=samples,
        seqlen=seq_len,
        device_map="cpu",
        enable_torch_compile=False,
    )
    started = time.perf_counter()
    rounder = AutoRound(
        model,
        tokenizer,
        scheme=auto,
        iters=0,
        dataset=str(text_data),
        nsamples=samples,
        seqlen=seq_len,
        device_map="cpu",
        enable_torch_compile=False,
    )
    with tempfile.TemporaryDirectory() as out:
        rounder.quantize_and_save(out, format="fake")
    seconds = time.perf_counter() - started
    formats = {name: _format_of(config, schemes) for name, config in rounder.layer_config.items()}
    return formats, seconds


def render_text_calibration(chat_jsonl: Path, tokenizer, seq_len: int, out: Path) -> Path:
    """The chat calibration rendered to `{"text": …}` lines of at least `seq_len` tokens each.

    AutoRound drops samples shorter than its seqlen, while the profiler packs documents; joining
    consecutive chats the same way gives both the same text.
    """
    with out.open("w") as handle:
        pending: list[str] = []
        for line in chat_jsonl.read_text().splitlines():
            pending.append(tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False))
            text = "".join(pending)
            if len(tokenizer(text, add_special_tokens=False)["input_ids"]) > seq_len:
                handle.write(json.dumps({"text": text}) + "\n")
                pending = []
    return out


def toy_accuracy(profiler, formats: dict[str, str], per_level: int, levels: tuple[int, ...] = ()) -> str:
    """Greedy toy-benchmark accuracy / truncation / mean thinking tokens with `formats` applied."""
    from quantscope.numerics.actquant import activations_quantized
    from quantscope.numerics.fakequant import fake_quantized
    from quantscope.sensitivity.units import assignment_targets
    from quantscope.toy.evaluate import generate_outcomes
    from quantscope.toy.problems import benchmark_problems

    problems = benchmark_problems(per_level=per_level, levels=levels)
    fused = [f.members for f in profiler.anatomy.fused_sets]
    targets = assignment_targets(profiler.model, profiler.anatomy, formats)
    # the same weight and activation rounding the KL column measures (the profiler's --gpu)
    with (
        fake_quantized(profiler.model, targets, fused),
        activations_quantized(profiler.model, profiler.activations(targets)),
    ):
        outcomes = generate_outcomes(profiler.model, problems, batch_size=32)
    correct = sum(o.correct for o in outcomes) / len(outcomes)
    truncated = sum(o.truncated for o in outcomes) / len(outcomes)
    thinking = sum(o.thinking_tokens for o in outcomes) / len(outcomes)
    return f"{correct:6.1%} {truncated:6.1%} {thinking:7.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: the bundled toy)")
    parser.add_argument("--scheme", default="nvfp4", choices=sorted(_AUTOROUND_NAMES))
    parser.add_argument("--avg-bits", type=float, action="append", default=[], help="AutoScheme targets")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--objective", default="mean", choices=("mean", "late", "worst"))
    parser.add_argument("--eval-per-level", type=int, default=0, help="toy problems per level (0: no eval)")
    parser.add_argument(
        "--eval-level", type=int, action="append", default=[], help="toy levels (default all)"
    )
    parser.add_argument("--also", action="append", default=[], help="extra profiled schemes, e.g. fp8")
    parser.add_argument("--no-autoscheme", action="store_true")
    parser.add_argument(
        "--gpu", default="B200", help="activation rounding of this GPU's kernels ('' for weights only)"
    )
    parser.add_argument("--per-layer", action="store_true", help="also search per-layer units")
    args = parser.parse_args()

    from quantscope.plan.recipe import PRESETS, assign_schemes, predict_footprint
    from quantscope.sensitivity.profiler import Profiler
    from quantscope.sensitivity.search import search_recipe

    model_dir = args.model or bundled_checkpoint()
    print(f"model {model_dir}, scheme {args.scheme}, {torch.get_num_threads()} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        chats = write_toy_calibration(Path(tmp) / "chats.jsonl")
        started = time.perf_counter()
        profiler = Profiler(
            model_dir, chats, n_sequences=args.samples, seq_len=args.seq_len, gpu=args.gpu or None
        )
        print(f"damage measured as served on {args.gpu or 'no GPU (weights only)'}")
        profiles = {"groups": profiler.profile(args.scheme, args.also)}
        print(f"profile (groups, incl. load): {time.perf_counter() - started:.1f} s")
        if args.per_layer:
            started = time.perf_counter()
            profiles["per-layer"] = profiler.profile(args.scheme, args.also, per_layer=True)
            print(f"profile (per layer): {time.perf_counter() - started:.1f} s")
        anatomy = profiler.anatomy
        candidates: list[tuple[str, dict[str, str], str]] = []
        schemes = {args.scheme, *args.also, "bf16"}
        names = [n for n, r in PRESETS.items() if r.scheme in schemes and not r.overrides]
        for name in names:
            candidates.append((f"preset {name}", assign_schemes(anatomy, PRESETS[name]), ""))
        budgets = [predict_footprint(anatomy, PRESETS[n]).total_bytes for n in names if n != "bf16"]
        if not args.no_autoscheme:
            text = render_text_calibration(chats, profiler.tokenizer, args.seq_len, Path(tmp) / "text.jsonl")
            for bits in args.avg_bits:
                formats, seconds = autoscheme_formats(
                    model_dir, text, [args.scheme, *args.also], bits, args.samples, args.seq_len
                )
                candidates.append((f"autoscheme {bits:g} bits", formats, f"{seconds:.1f} s"))
                budgets.append(assignment_bytes(anatomy, formats))
        for budget in sorted(set(budgets)):
            for label, profile in profiles.items():
                try:
                    result = search_recipe(profile, anatomy, budget_bytes=budget, objective=args.objective)
                except QuantscopeError as error:
                    print(f"searched {label} @{budget / 1e6:.3f}MB: {error}")
                    continue
                formats = assign_schemes(anatomy, result.recipe)
                candidates.append((f"searched {label} @{budget / 1e6:.3f}MB", formats, ""))
        header = f"{'candidate':34s} {'MB':>8s} {'KL':>9s} {'KL late':>9s} {'splits':>6s} {'time':>7s}"
        if args.eval_per_level:
            header += f" {'acc':>6s} {'trunc':>6s} {'think':>7s}"
        print(header)
        for label, formats, seconds in candidates:
            damage = profiler.measure_assignment(formats, label)
            row = (
                f"{label:34s} {assignment_bytes(anatomy, formats) / 1e6:8.3f} {damage.kl:9.2e} "
                f"{damage.kl_by_bucket[-1]:9.2e} {len(split_fused_sets(anatomy, formats)):6d} {seconds:>7s}"
            )
            if args.eval_per_level:
                row += " " + toy_accuracy(profiler, formats, args.eval_per_level, tuple(args.eval_level))
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
