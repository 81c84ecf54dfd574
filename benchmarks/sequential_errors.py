"""What sampling until decided guarantees, measured: wrong verdicts, bias, power and samples used, on
simulated items run through the shipped procedure (`analysis.sequential.until_decided`, the loop
`quantscope eval --until-decided` runs, with only the generation step simulated:
`analysis.simulation`).

    python benchmarks/sequential_errors.py --items 60 --margin 10 --delta -10 --reps 1000 [--k0 2]
        [--max-k 16] [--dist uniform|reasoning] [--json]

Every option but --reps/--k0/--max-k/--json takes several values, and each combination is one cell;
--at-margins replaces --delta with -margin, 0 and +margin for each margin. The whole grid of
issue 27 (72 cells):

    python benchmarks/sequential_errors.py --items 30 60 120 500 --dist uniform reasoning \\
        --margin 2 5 10 --at-margins --reps 1000 --json

Per cell (R runs, each on freshly drawn items and samples; points = percentage points):
- false_equivalent: the share of runs that end "equivalent" when |delta| >= margin (else null);
- false_different: at delta 0 the share ending "better" or "worse"; otherwise the share ending
  with the wrong sign (null when |delta| < margin and delta != 0);
- equivalent, better, worse, undecided: the share of each final verdict (equivalent at delta 0 is
  the power the error checks need beside them: a procedure that never says equivalent passes them
  trivially);
- each rate with its Wilson 95% Monte-Carlo interval (`*_ci95`) and half-width (`*_hw`);
- mean_delta: the mean over runs of the delta the procedure reports, corrected for stopping at the
  first verdict (`sequential.adjusted_delta`), and mean_delta_at_stop: the plain mean over items at
  the stop (what `compare` shows on the same rows); bias = mean - true delta, with half-widths;
- samples_ratio: generations used / those of the smallest fixed k (1..max-k, the same seeded
  samples, a fixed-sample test at alpha 0.05) that reaches the same verdict, summed over the runs
  that ended decided and where such a k exists (`ratio_runs` counts them). The fixed k is an
  oracle no fixed-k user has; a ratio above 1 says the looks' alpha spending costs more samples
  than knowing the right k in advance would.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from quantscope.analysis.decide import VERDICT_UNDECIDED, decide
from quantscope.analysis.simulation import DISTRIBUTIONS, Pool, draw_pool, paired_from_pool, replay

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Cell:
    """One combination: items per run, item distribution, margin and true delta (points)."""

    items: int
    dist: str
    margin: float
    delta: float


def wilson(hits: int, runs: int) -> tuple[float, float]:
    """Wilson's 95% score interval for a rate of `hits` in `runs` (fractions)."""
    if runs == 0:
        return math.nan, math.nan
    p = hits / runs
    centre = (p + Z95**2 / (2 * runs)) / (1 + Z95**2 / runs)
    half = Z95 * math.sqrt(p * (1 - p) / runs + Z95**2 / (4 * runs**2)) / (1 + Z95**2 / runs)
    return max(0.0, centre - half), min(1.0, centre + half)


def fixed_k_generations(pool: Pool, verdict: str, margin: float, max_k: int) -> int | None:
    """Generations (both sides) of the smallest fixed k whose fixed-sample verdict is `verdict`."""
    for k in range(1, max_k + 1):
        counts = np.full(pool.items, k)
        if decide([paired_from_pool(pool, counts, counts)], margin).verdict == verdict:
            return 2 * pool.items * k
    return None


def run_cell(cell: Cell, reps: int, k0: int, max_k: int, seed: int) -> dict[str, object]:
    """R simulated runs of one cell, summarised (module docstring)."""
    rng = np.random.default_rng(seed)
    margin, delta = cell.margin / 100, cell.delta / 100
    verdicts: Counter[str] = Counter()
    adjusted, at_stop = [], []
    used = fixed = ratio_runs = generations = 0
    started = time.perf_counter()
    for _ in range(reps):
        pool = draw_pool(rng, cell.items, delta, cell.dist, max_k)
        run = replay(pool, k0, max_k, margin)
        verdicts[run.verdict] += 1
        adjusted.append(run.adjusted)
        at_stop.append(run.delta)
        generations += run.generations
        if run.verdict != VERDICT_UNDECIDED:
            oracle = fixed_k_generations(pool, run.verdict, margin, max_k)
            if oracle is not None:
                used, fixed, ratio_runs = used + run.generations, fixed + oracle, ratio_runs + 1
    out: dict[str, object] = {
        "items": cell.items,
        "dist": cell.dist,
        "margin": cell.margin,
        "delta": cell.delta,
        "reps": reps,
        "k0": k0,
        "max_k": max_k,
    }
    for name in ("equivalent", "better", "worse", "undecided"):
        out.update(_rate(name, verdicts[name], reps))
    out.update(_errors(cell, verdicts, reps))
    out.update(_mean("mean_delta", adjusted, cell.delta))
    out.update(_mean("mean_delta_at_stop", at_stop, cell.delta))
    out["samples_ratio"] = used / fixed if fixed else None
    out["ratio_runs"] = ratio_runs
    out["generations_per_item"] = generations / reps / cell.items / 2
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _errors(cell: Cell, verdicts: Counter[str], reps: int) -> dict[str, object]:
    """The wrong-verdict rates of the cell (null where that verdict is not wrong)."""
    beyond = abs(cell.delta) >= cell.margin
    if cell.delta == 0:
        wrong = verdicts["better"] + verdicts["worse"]
    elif beyond:
        wrong = verdicts["better" if cell.delta < 0 else "worse"]
    else:
        wrong = None
    found = _rate("false_equivalent", verdicts["equivalent"], reps) if beyond else _none("false_equivalent")
    found.update(_rate("false_different", wrong, reps) if wrong is not None else _none("false_different"))
    return found


def _rate(name: str, hits: int, reps: int) -> dict[str, object]:
    low, high = wilson(hits, reps)
    return {name: hits / reps, f"{name}_ci95": [low, high], f"{name}_hw": (high - low) / 2}


def _none(name: str) -> dict[str, object]:
    return {name: None, f"{name}_ci95": None, f"{name}_hw": None}


def _mean(name: str, values: list[float], truth: float) -> dict[str, object]:
    """A mean delta in points, its bias against `truth` and the Monte-Carlo half-width."""
    points = 100 * np.asarray(values)
    mean = float(points.mean())
    half = Z95 * float(points.std(ddof=1)) / math.sqrt(len(points)) if len(points) > 1 else math.nan
    suffix = name.removeprefix("mean_delta")
    return {name: mean, f"{name}_hw": half, f"bias{suffix}": mean - truth}


def cells(args: argparse.Namespace) -> list[Cell]:
    """Every combination of the options' values (with --at-margins, deltas -margin, 0, +margin)."""
    found = []
    for items in args.items:
        for dist in args.dist:
            for margin in args.margin:
                deltas = (-margin, 0.0, margin) if args.at_margins else args.delta
                found.extend(Cell(items, dist, margin, float(delta)) for delta in deltas)
    return found


def show(row: dict[str, object]) -> str:
    """One line of the plain-text table."""

    def rate(name: str) -> str:
        value = row[name]
        return "–" if value is None else f"{100 * value:5.1f}±{100 * row[f'{name}_hw']:.1f}%"  # type: ignore[operator]

    ratio = row["samples_ratio"]
    return (
        f"{row['items']:>4} {row['dist']:<9} ±{row['margin']:<4g} Δ{row['delta']:+6g}  "
        f"false eq {rate('false_equivalent'):>11}  false diff {rate('false_different'):>11}  "
        f"eq {rate('equivalent'):>11}  bias {row['bias']:+5.2f}±{row['mean_delta_hw']:.2f} "
        f"(at stop {row['bias_at_stop']:+5.2f})  samples ratio "
        f"{'–' if ratio is None else f'{ratio:.2f}'}  k̄ {row['generations_per_item']:.1f}  {row['seconds']}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", required=True, help="items per run")
    parser.add_argument("--margin", type=float, nargs="+", required=True, help="equivalence margin, points")
    parser.add_argument("--delta", type=float, nargs="+", help="true difference, points")
    parser.add_argument(
        "--at-margins", action="store_true", help="deltas -margin, 0 and +margin for each margin"
    )
    parser.add_argument("--reps", type=int, required=True, help="simulated runs per cell (R)")
    parser.add_argument("--k0", type=int, default=2, help="samples per item before the first look")
    parser.add_argument("--max-k", type=int, default=16, help="at most this many samples per item")
    parser.add_argument("--dist", nargs="+", default=["uniform"], choices=DISTRIBUTIONS)
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--json", action="store_true", help="one JSON object per cell, one per line")
    args = parser.parse_args()
    if args.delta is None and not args.at_margins:
        parser.error("give --delta D (points) or --at-margins")
    for index, cell in enumerate(cells(args)):
        row = run_cell(cell, args.reps, args.k0, args.max_k, args.seed + index)
        print(json.dumps(row) if args.json else show(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
