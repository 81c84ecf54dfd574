"""How long `quantscope profile` takes on the bundled toy reasoner (acceptance: all groups < 60 s on CPU).

    OMP_NUM_THREADS=1 python benchmarks/profile_speed.py [--model DIR] [--scheme nvfp4] [--also fp8]

Calibration: chat traces of toy addition problems (the reasoner's own format) drawn with a seed
distinct from the benchmark's, written to a temporary JSONL. Prints the wall time of loading +
the reference pass, of each unit measurement, and the total, then the profile table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

CALIBRATION_SEED = 777  # the toy benchmark draws with seed 1234; keep calibration disjoint


def bundled_checkpoint() -> Path:
    """The toy reasoner's checkpoint directory shipped inside the package."""
    import quantscope.toy

    return Path(quantscope.toy.__file__).parent / "checkpoint"


def write_toy_calibration(path: Path, count: int = 400, seed: int = CALIBRATION_SEED) -> Path:
    """`count` toy problems as chats (prompt, thinking trace with the usual slip rate, boxed answer)."""
    from quantscope.toy.problems import final_answer, training_problem, write_trace

    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(count):
            problem = training_problem(rng)
            slips = 1 if rng.random() < 0.25 else 0
            messages = [
                {"role": "user", "content": problem.prompt},
                {
                    "role": "assistant",
                    "reasoning_content": write_trace(problem, slips, rng),
                    "content": final_answer(problem.answer),
                },
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: the bundled toy)")
    parser.add_argument("--scheme", default="nvfp4")
    parser.add_argument("--also", action="append", default=[], help="extra schemes, e.g. --also fp8")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--per-layer", action="store_true")
    args = parser.parse_args()

    from quantscope.sensitivity.profiler import Profiler

    model = args.model or bundled_checkpoint()
    if not (model / "config.json").exists():
        print(f"no checkpoint at {model}: train the toy reasoner first or pass --model", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); model {model}")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_toy_calibration(Path(tmp) / "calibration.jsonl")
        started = time.perf_counter()
        profiler = Profiler(model, data, n_sequences=args.samples, seq_len=args.seq_len)
        loaded = time.perf_counter()
        print(f"load + reference pass: {loaded - started:.2f} s ({args.samples}x{args.seq_len} tokens)")
        last = [loaded]

        def tick(description: str, done: int, total: int) -> None:
            now = time.perf_counter()
            print(f"  [{done}/{total}] {description}: {now - last[0]:.2f} s")
            last[0] = now

        profile = profiler.profile(args.scheme, args.also, args.per_layer, tick)
        total = time.perf_counter() - started
    print(f"TOTAL profile of {len(profile.units)} units x {len(profile.schemes)} scheme(s): {total:.1f} s")
    for unit in profile.units:
        damage = unit.damage[0]
        buckets = " ".join(f"{kl:.2e}" for kl in damage.kl_by_bucket)
        saved = unit.bytes_saved(profile.scheme)
        print(f"  {unit.name:24s} KL {damage.kl:.3e}  by position [{buckets}]  saves {saved} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
