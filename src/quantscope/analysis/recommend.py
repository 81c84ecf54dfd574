"""Recommend a variant for a memory budget from an `Analysis`: the pick, why every other variant
lost, and — when the data cannot decide — the evaluation that would. The rule is `RULE`, stated
in every recommendation.

Every comparison behind the pick is paired (items both sides ran, `analysis.decide`), so a
variant evaluated on a few easy items can never look better than one evaluated on all of them,
and "equivalent" needs evidence (a 90% CI inside the margin), not the absence of a significant
difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from quantscope.analysis.capacity import GpuBudget, VariantCapacity, model_config, variant_capacities
from quantscope.analysis.compare import Analysis
from quantscope.analysis.decide import VERDICT_EQUIVALENT, Decision, decide, paired_items
from quantscope.errors import QuantscopeError
from quantscope.util import format_size, json_ready

RULE = (
    "Candidates are the variants that fit the budget and were compared with the baseline on every "
    "task. Each scores its paired accuracy difference from the baseline (items both ran; the mean "
    "over tasks, each task weighing the same). A candidate significantly worse than another "
    "(paired 95% CI of their difference excludes 0) is out. Of the rest, the pick is the smallest "
    "one equivalent to the best-scoring one (paired 90% CI of their difference within ±{margin:.0f} "
    "points), because the memory it saves holds the KV cache long reasoning needs. A smaller "
    "candidate that is neither equivalent to the best nor significantly worse leaves the choice "
    "undecided: the recommendation says so and names the evaluation that would decide it. (The Pareto "
    "frontier of score against memory is drawn for reference.)"
)


@dataclass(frozen=True)
class Candidate:
    """One variant's standing. `accuracy` is the mean over tasks of its accuracy on the items it
    shares with the baseline (fraction; the baseline's own for the baseline), `delta` its paired
    difference from the baseline (fraction, mean over tasks), `truncation_rate` the mean over
    tasks (fraction); memory in bytes (None when unknown); whether it fits the budget and lies on
    the Pareto frontier of score against memory; `reason` why it was picked or why it lost."""

    variant: str
    memory_bytes: int | None
    accuracy: float
    task_accuracy: Mapping[str, float]
    truncation_rate: float
    fits: bool
    on_frontier: bool
    reason: str
    delta: float = 0.0
    serving: VariantCapacity | None = None
    """Capacity and throughput on the budget's GPU (None without a GPU budget)."""


@dataclass(frozen=True)
class Recommendation:
    """The pick for `budget_bytes` (None = no limit), the others best first, and the frontier
    (variant names by increasing memory). `pick` is None when nothing qualifies. `undecided`
    names smaller candidates the data cannot yet rule in or out, and `next_evaluation` the
    cheapest evaluation that would decide (None when decided)."""

    budget_bytes: int | None
    rule: str
    pick: Candidate | None
    runners_up: tuple[Candidate, ...]
    frontier: tuple[str, ...]
    baseline: str
    margin: float = 0.02
    undecided: tuple[str, ...] = ()
    next_evaluation: str | None = None
    decisions: Mapping[tuple[str, str], Decision] = field(default_factory=dict, repr=False)
    gpu: str | None = None
    """The GPU budget described ("H200 (150 GB, tp=1)"); None for a weight budget or none."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (`recommend --json`): the pick and every candidate with its reason, the
        undecided candidates and the evaluation that would decide, and each pairwise decision."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "decisions"}
        data["pick"] = asdict(self.pick) if self.pick else None
        data["runners_up"] = [asdict(c) for c in self.runners_up]
        data["summary"] = self.summary()
        data["decisions"] = [
            {"variant": a, "against": b, **asdict(d)} for (a, b), d in self.decisions.items()
        ]
        return json_ready(data)

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """The pick (when any) followed by the runners-up."""
        return ((self.pick,) if self.pick else ()) + self.runners_up

    @property
    def decided(self) -> bool:
        """True when no smaller candidate is left undecided."""
        return not self.undecided

    def summary(self) -> str:
        """One or two sentences: what to run and why (or why nothing fits), and what is undecided."""
        budget = "any budget" if self.budget_bytes is None else f"a {format_size(self.budget_bytes)} budget"
        if self.gpu is not None:
            budget = f"one {self.gpu}" + ("" if self.budget_bytes is None else f" and {budget}")
        if self.pick is None:
            limited = self.budget_bytes is not None or self.gpu is not None
            if limited and any(c.memory_bytes is not None for c in self.runners_up):
                return f"No evaluated variant fits {budget}."
            reason = self.runners_up[0].reason if self.runners_up else "no variants"
            return f"No variant can be recommended ({reason})."
        size = format_size(self.pick.memory_bytes) if self.pick.memory_bytes is not None else "unknown size"
        accuracy = f"{100 * self.pick.accuracy:.1f}% accuracy"
        text = f"For {budget}: run {self.pick.variant} ({size}, {accuracy}) — {self.pick.reason}."
        if self.pick.serving is not None:
            held = self.pick.serving
            text += (
                f" It holds {held.concurrent:,.0f} of its p90-length answers at once and, at best, "
                f"{held.correct_per_hour:,.0f} correct answers per GPU-hour."
            )
        if self.undecided:
            text += (
                f" Not decided yet: {', '.join(self.undecided)} may do as well in less memory; "
                f"{self.next_evaluation}."
            )
        return text


def recommend(
    analysis: Analysis,
    budget_bytes: int | None = None,
    *,
    margin: float | None = None,
    gpu: GpuBudget | None = None,
    config: Mapping[str, Any] | None = None,
) -> Recommendation:
    """The variant to run within `budget_bytes` (bytes of weights; None = no limit) under `RULE`.

    With `gpu`, a variant must also serve one sequence of prompt + cap tokens on that GPU once vLLM
    has reserved its KV cache, linear-attention state and engine memory (`analysis.capacity`), and
    every candidate carries its capacity and throughput; `config` is the model's config (default:
    found from the variants' checkpoints). `margin` is the equivalence margin (fraction; default
    the analysis's). Raises QuantscopeError for a non-positive budget.
    """
    if budget_bytes is not None and budget_bytes <= 0:
        raise QuantscopeError(f"budget {budget_bytes} bytes: give a positive size such as 24GB")
    margin = analysis.margin if margin is None else margin
    judge = _Pairs(analysis, margin)
    reasons, memory = _exclusions(analysis, budget_bytes)
    served = _served(analysis, gpu, config, reasons)
    candidates = [name for name in analysis.variant_names if name not in reasons]
    scores = {name: _score(analysis, name) for name in candidates}
    out = _significantly_worse(candidates, judge)
    remaining = [name for name in candidates if name not in out]
    best, pick, undecided = _choose(remaining, scores, memory, judge)
    reasons.update(
        {
            name: f"significantly worse than {other} ({judge.describe(name, other)})"
            for name, other in out.items()
        }
    )
    reasons.update(_reasons(remaining, best, pick, memory, judge, undecided))
    frontier = pareto_frontier({n: (float(memory[n]), scores[n]) for n in candidates})
    built = {
        n: _candidate(analysis, n, memory.get(n), n in candidates, n in frontier, reasons[n], served.get(n))
        for n in analysis.variant_names
    }
    others = sorted(
        (c for name, c in built.items() if name != pick),
        key=lambda c: (not c.fits, -_finite(c.delta), c.memory_bytes or 0, c.variant),
    )
    return Recommendation(
        budget_bytes=budget_bytes,
        rule=RULE.format(margin=100 * margin),
        pick=built[pick] if pick is not None else None,
        runners_up=tuple(others),
        frontier=frontier,
        baseline=analysis.baseline,
        margin=margin,
        undecided=tuple(undecided),
        next_evaluation=_next_evaluation(undecided, best, judge) if best and undecided else None,
        decisions=dict(judge.cache),
        gpu=gpu.describe() if gpu is not None else None,
    )


def _served(
    analysis: Analysis, gpu: GpuBudget | None, config: Mapping[str, Any] | None, reasons: dict[str, str]
) -> dict[str, VariantCapacity]:
    """Each variant's capacity on `gpu` ({} without one); a variant that cannot serve one sequence
    at the context is given its reason (unless it already has one)."""
    if gpu is None:
        return {}
    served = variant_capacities(analysis, gpu, config if config is not None else model_config(analysis))
    for name, held in served.items():
        if not held.fits and name not in reasons:
            pool = format_size(held.kv_pool_bytes) if held.kv_pool_bytes > 0 else "nothing"
            reasons[name] = (
                f"does not serve one {held.context:,}-token sequence on {gpu.describe()}: "
                f"{pool} left for the KV cache after its weights and the engine's reserve"
            )
    return served


class _Pairs:
    """Paired decisions between two variants over every task, computed once per pair."""

    def __init__(self, analysis: Analysis, margin: float) -> None:
        self.analysis, self.margin = analysis, margin
        self.cache: dict[tuple[str, str], Decision] = {}

    def __call__(self, a: str, b: str) -> Decision:
        """The decision on a − b (a's accuracy minus b's, paired on the items both ran)."""
        if (a, b) not in self.cache:
            results = self.analysis.results
            tasks = [paired_items(results.select(a, t), results.select(b, t)) for t in self.analysis.tasks]
            self.cache[(a, b)] = decide(
                tasks, self.margin, n_boot=self.analysis.n_boot, seed=self.analysis.seed
            )
        return self.cache[(a, b)]

    def describe(self, a: str, b: str) -> str:
        d = self(a, b)
        return f"{100 * d.delta:+.1f} pts, 95% CI [{100 * d.ci95[0]:+.1f}, {100 * d.ci95[1]:+.1f}]"


def _exclusions(analysis: Analysis, budget: int | None) -> tuple[dict[str, str], dict[str, int]]:
    """Why a variant is not a candidate (name -> reason), and every known memory figure."""
    reasons, memory = {}, {}
    for info in analysis.variants:
        missing = [t for t in analysis.tasks if analysis.metric(info.name, t) is None]
        if info.memory_bytes is not None:
            memory[info.name] = info.memory_bytes
        if missing:
            reasons[info.name] = f"not evaluated on {', '.join(missing)}"
        elif info.memory_bytes is None:
            reasons[info.name] = "memory unknown (evaluate a checkpoint, or pass --memory / --memory-from)"
        elif budget is not None and info.memory_bytes > budget:
            reasons[info.name] = (
                f"needs {format_size(info.memory_bytes)}, over the {format_size(budget)} budget"
            )
    return reasons, memory


def _score(analysis: Analysis, name: str) -> float:
    """The paired difference from the baseline, mean over tasks (0 for the baseline)."""
    if name == analysis.baseline:
        return 0.0
    deltas = [c.delta for t in analysis.tasks if (c := analysis.comparison(name, t)) is not None]
    return float(np.mean(deltas)) if deltas else float("nan")


def _significantly_worse(candidates: list[str], judge: _Pairs) -> dict[str, str]:
    """Candidate -> the candidate it is significantly worse than (the clearest such one)."""
    out = {}
    for name in candidates:
        worse_than = [
            o for o in candidates if o != name and judge(name, o).significant and judge(name, o).delta < 0
        ]
        if worse_than:
            out[name] = min(worse_than, key=lambda o: judge(name, o).delta)
    return out


def _choose(
    remaining: list[str], scores: Mapping[str, float], memory: Mapping[str, int], judge: _Pairs
) -> tuple[str | None, str | None, list[str]]:
    """(the best-scoring candidate, the pick, smaller candidates left undecided against the best)."""
    if not remaining:
        return None, None, []
    best = max(remaining, key=lambda n: (_finite(scores[n]), -memory[n]))
    equivalent = [n for n in remaining if n == best or judge(n, best).verdict == VERDICT_EQUIVALENT]
    pick = min(equivalent, key=lambda n: (memory[n], n))
    undecided = sorted(
        (n for n in remaining if memory[n] < memory[pick] and n not in equivalent), key=memory.get
    )
    return best, pick, undecided


def _reasons(
    remaining: list[str],
    best: str | None,
    pick: str | None,
    memory: Mapping[str, int],
    judge: _Pairs,
    undecided: list[str],
) -> dict[str, str]:
    if pick is None or best is None:
        return {}
    reasons = {}
    for name in remaining:
        if name == pick:
            reasons[name] = (
                "the best-scoring candidate that fits"
                if pick == best
                else _equivalence(pick, best, memory, judge)
            )
        elif name == best:
            saved = format_size(memory[name] - memory[pick])
            reasons[name] = f"the best-scoring, but {pick} is equivalent and {saved} smaller"
        elif name in undecided:
            needed = judge(name, best).samples_needed
            reasons[name] = (
                f"undecided against {best} ({_ci90(judge(name, best))}): {needed.reason if needed else ''}"
            )
        elif judge(name, best).verdict == VERDICT_EQUIVALENT:
            extra = format_size(memory[name] - memory[pick])
            reasons[name] = (
                f"equivalent to {pick}, and {extra} larger"
                if best == pick
                else f"equivalent to {best} but {extra} larger than {pick}"
            )
        else:
            reasons[name] = (
                f"not shown equivalent to {best} ({_ci90(judge(name, best))}), and larger than {pick}"
            )
    return reasons


def _equivalence(pick: str, best: str, memory: Mapping[str, int], judge: _Pairs) -> str:
    d = judge(pick, best)
    saved = format_size(memory[best] - memory[pick])
    within = f"within ±{100 * d.margin:.0f}"
    return f"equivalent to {best}, the best-scoring candidate ({_ci90(d)}, {within}), and {saved} smaller"


def _ci90(d: Decision) -> str:
    return f"{100 * d.delta:+.1f} pts, 90% CI [{100 * d.ci90[0]:+.1f}, {100 * d.ci90[1]:+.1f}]"


def _next_evaluation(undecided: list[str], best: str, judge: _Pairs) -> str:
    """The cheapest evaluation that would decide one of the undecided candidates against `best`."""
    options = []
    for name in undecided:
        needed = judge(name, best).samples_needed
        if needed is not None and needed.extra is not None:
            options.append((needed.extra, name, needed))
    if not options:
        return (
            "more samples per item cannot decide it on these items (the spread between items is too wide): "
            "evaluate on more items, or accept the margin"
        )
    _, name, needed = min(options)
    return (
        f"evaluate {name} and {best} with {needed.k} samples per item on their {needed.items} shared items "
        f"({needed.extra:,} more generations each: `quantscope eval … -k {needed.k}`, or --until-decided)"
    )


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


def _candidate(
    analysis: Analysis,
    name: str,
    memory: int | None,
    fits: bool,
    frontier: bool,
    reason: str,
    serving: VariantCapacity | None = None,
) -> Candidate:
    task_accuracy, truncation = {}, []
    for task in analysis.tasks:
        c, m = analysis.comparison(name, task), analysis.metric(name, task)
        if c is not None:
            task_accuracy[task], rate = c.accuracy, c.truncation_rate
        elif m is not None:
            task_accuracy[task], rate = m.accuracy, m.truncation_rate
        else:
            continue
        truncation.append(rate)
    mean = float(np.mean(list(task_accuracy.values()))) if task_accuracy else float("nan")
    return Candidate(
        variant=name,
        memory_bytes=memory,
        accuracy=mean,
        task_accuracy=task_accuracy,
        truncation_rate=float(np.mean(truncation)) if truncation else float("nan"),
        fits=fits,
        on_frontier=frontier,
        reason=reason,
        delta=_score(analysis, name),
        serving=serving,
    )


def _finite(value: float) -> float:
    return value if not math.isnan(value) else -1.0
