"""Recommend a variant for a memory budget from an `Analysis`: the Pareto frontier, a pick, and why
every other variant lost. The rule is `RULE`, stated in every recommendation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from quantscope.analysis.compare import Analysis, compare_pair
from quantscope.errors import QuantscopeError
from quantscope.util import format_size

DEFAULT_TIE_TOLERANCE = 0.02

RULE = (
    "Candidates are the variants evaluated on every task whose weights fit the budget. Accuracy is "
    "the mean over tasks (each task weighs the same). Among the Pareto frontier of accuracy against "
    "memory, the pick is the most accurate variant, unless a smaller one is tied with it (accuracy "
    "within {tolerance:.0f} points and no significant difference on any task, paired bootstrap 95% "
    "CI): then the smallest tied one, because the memory it saves holds the KV cache long "
    "reasoning needs."
)


@dataclass(frozen=True)
class Candidate:
    """One variant's standing: mean accuracy over tasks (fraction), per-task accuracy, mean
    truncation rate (fraction), memory (bytes, None when unknown), whether it fits the budget and
    lies on the Pareto frontier, and `reason` (why it was picked or why it lost)."""

    variant: str
    memory_bytes: int | None
    accuracy: float
    task_accuracy: Mapping[str, float]
    truncation_rate: float
    fits: bool
    on_frontier: bool
    reason: str


@dataclass(frozen=True)
class Recommendation:
    """The pick for `budget_bytes` (None = no limit), the others best first, and the frontier
    (variant names by increasing memory). `pick` is None when nothing fits."""

    budget_bytes: int | None
    rule: str
    pick: Candidate | None
    runners_up: tuple[Candidate, ...]
    frontier: tuple[str, ...]
    baseline: str

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """The pick (when any) followed by the runners-up."""
        return ((self.pick,) if self.pick else ()) + self.runners_up

    def summary(self) -> str:
        """One sentence: what to run and why (or why nothing fits)."""
        budget = "any budget" if self.budget_bytes is None else f"a {format_size(self.budget_bytes)} budget"
        if self.pick is None:
            if self.budget_bytes is not None and any(c.memory_bytes is not None for c in self.runners_up):
                return f"No evaluated variant fits {budget}."
            reason = self.runners_up[0].reason if self.runners_up else "no variants"
            return f"No variant can be recommended ({reason})."
        size = format_size(self.pick.memory_bytes) if self.pick.memory_bytes is not None else "unknown size"
        accuracy = f"{100 * self.pick.accuracy:.1f}% accuracy"
        return f"For {budget}: run {self.pick.variant} ({size}, {accuracy}) — {self.pick.reason}."


def pareto_frontier(points: Mapping[str, tuple[float, float]]) -> tuple[str, ...]:
    """Names not dominated in (memory bytes: lower is better, accuracy: higher is better), by memory.

    A point is dominated when another has no more memory and no less accuracy, and is strictly
    better in one of them. Exact duplicates both stay on the frontier.
    """
    names = sorted(points, key=lambda n: (points[n][0], -points[n][1], n))
    frontier = []
    for name in names:
        memory, accuracy = points[name]
        dominated = any(
            m <= memory and a >= accuracy and (m < memory or a > accuracy)
            for other, (m, a) in points.items()
            if other != name
        )
        if not dominated:
            frontier.append(name)
    return tuple(frontier)


def recommend(
    analysis: Analysis,
    budget_bytes: int | None = None,
    *,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
) -> Recommendation:
    """The best variant whose weights fit `budget_bytes` (bytes; None = no limit) under `RULE`.

    `tie_tolerance` is the accuracy difference (fraction) below which a smaller, not
    significantly worse variant is preferred. Raises QuantscopeError for a non-positive budget.
    """
    if budget_bytes is not None and budget_bytes <= 0:
        raise QuantscopeError(f"budget {budget_bytes} bytes: give a positive size such as 24GB")
    rule = RULE.format(tolerance=100 * tie_tolerance)
    standing = _standing(analysis)
    reasons: dict[str, str] = {}
    candidates: dict[str, tuple[float, float]] = {}
    for name, (memory, accuracy, missing) in standing.items():
        if missing:
            reasons[name] = f"not evaluated on {', '.join(missing)}"
        elif memory is None:
            reasons[name] = "memory unknown (evaluate a quantscope checkpoint, or pass memory_bytes)"
        elif budget_bytes is not None and memory > budget_bytes:
            reasons[name] = f"needs {format_size(memory)}, over the {format_size(budget_bytes)} budget"
        else:
            candidates[name] = (float(memory), accuracy)
    frontier = pareto_frontier(candidates)
    pick, pick_reason = _choose(analysis, frontier, candidates, tie_tolerance)
    for name in candidates:
        if name != pick:
            reasons[name] = _why_not(analysis, name, pick, frontier, candidates, tie_tolerance)
    if pick is not None:
        reasons[pick] = pick_reason
    built = {
        name: _candidate(
            analysis, name, standing[name][0], name in candidates, name in frontier, reasons[name]
        )
        for name in standing
    }
    others = sorted(
        (c for name, c in built.items() if name != pick),
        key=lambda c: (not c.fits, -_finite(c.accuracy), c.memory_bytes or 0, c.variant),
    )
    return Recommendation(
        budget_bytes=budget_bytes,
        rule=rule,
        pick=built[pick] if pick is not None else None,
        runners_up=tuple(others),
        frontier=frontier,
        baseline=analysis.baseline,
    )


def _standing(analysis: Analysis) -> dict[str, tuple[int | None, float, list[str]]]:
    """name -> (memory bytes, mean accuracy over tasks, tasks it lacks)."""
    standing = {}
    for info in analysis.variants:
        accuracies, missing = [], []
        for task in analysis.tasks:
            metric = analysis.metric(info.name, task)
            if metric is None:
                missing.append(task)
            else:
                accuracies.append(metric.accuracy)
        mean = float(np.mean(accuracies)) if accuracies else float("nan")
        standing[info.name] = (info.memory_bytes, mean, missing)
    return standing


def _candidate(
    analysis: Analysis, name: str, memory: int | None, fits: bool, frontier: bool, reason: str
) -> Candidate:
    metrics = [m for m in analysis.metrics if m.variant == name]
    return Candidate(
        variant=name,
        memory_bytes=memory,
        accuracy=float(np.mean([m.accuracy for m in metrics])) if metrics else float("nan"),
        task_accuracy={m.task: m.accuracy for m in metrics},
        truncation_rate=float(np.mean([m.truncation_rate for m in metrics])) if metrics else float("nan"),
        fits=fits,
        on_frontier=frontier,
        reason=reason,
    )


def _choose(
    analysis: Analysis,
    frontier: tuple[str, ...],
    candidates: Mapping[str, tuple[float, float]],
    tolerance: float,
) -> tuple[str | None, str]:
    if not frontier:
        return None, ""
    best = max(frontier, key=lambda n: (candidates[n][1], -candidates[n][0]))
    tied = [
        n for n in frontier if candidates[n][0] < candidates[best][0] and _tied(analysis, n, best, tolerance)
    ]
    if not tied:
        return best, "the most accurate variant that fits"
    smallest = min(tied, key=lambda n: candidates[n][0])
    gap = 100 * (candidates[smallest][1] - candidates[best][1])
    saved = format_size(int(candidates[best][0] - candidates[smallest][0]))
    return (
        smallest,
        f"tied with {best}, the most accurate that fits ({gap:+.1f} pts, n.s.), and {saved} smaller",
    )


def _tied(analysis: Analysis, name: str, best: str, tolerance: float) -> bool:
    """Within `tolerance` of `best` on average and not significantly different on any task."""
    gaps = []
    for task in analysis.tasks:
        c = compare_pair(analysis.results, name, best, task, n_boot=analysis.n_boot, seed=analysis.seed)
        if c.significant:
            return False
        gaps.append(c.delta)
    return bool(abs(float(np.mean(gaps))) <= tolerance + 1e-12)


def _why_not(
    analysis: Analysis,
    name: str,
    pick: str | None,
    frontier: tuple[str, ...],
    candidates: Mapping[str, tuple[float, float]],
    tolerance: float,
) -> str:
    memory, accuracy = candidates[name]
    if name not in frontier:
        better = [
            other
            for other, (m, a) in candidates.items()
            if other != name and m <= memory and a >= accuracy and (m < memory or a > accuracy)
        ]
        other = min(better, key=lambda n: candidates[n][0])
        return (
            f"dominated by {other} ({format_size(int(candidates[other][0]))}, "
            f"{100 * candidates[other][1]:.1f}% vs {format_size(int(memory))}, {100 * accuracy:.1f}%)"
        )
    assert pick is not None  # a non-empty frontier always yields a pick
    gap = 100 * (accuracy - candidates[pick][1])
    tasks = [
        task
        for task in analysis.tasks
        if compare_pair(
            analysis.results, name, pick, task, n_boot=analysis.n_boot, seed=analysis.seed
        ).significant
    ]
    if memory > candidates[pick][0]:
        extra = format_size(int(memory - candidates[pick][0]))
        if _tied(analysis, name, pick, tolerance):
            return f"tied with {pick} ({gap:+.1f} pts, not significant) but {extra} larger"
        return f"{gap:+.1f} pts vs {pick} but {extra} larger, and {pick} is tied with the most accurate"
    if tasks:
        return f"{gap:+.1f} pts vs {pick}, significant on {', '.join(tasks)}"
    return f"{gap:+.1f} pts vs {pick} (beyond the {100 * tolerance:.0f}-point tie tolerance)"


def _finite(value: float) -> float:
    return value if not math.isnan(value) else -1.0
