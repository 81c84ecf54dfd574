"""Recommend a variant for a memory budget from an `Analysis`: the pick, why every other variant
lost, and — when the data cannot decide — the evaluation that would. The rule is `RULE`, stated
in every recommendation.

Every verdict behind the pick is given by `compare`'s rule (`decide`: paired on the items both
sides ran, task by task), over every pair of candidates, Holm-corrected as one family, so a
variant evaluated on a few easy items can never look better than one evaluated on all of them,
"equivalent" needs evidence (a 90% CI inside the margin on enough items), and `compare` on the
same pair never says the opposite (the same equivalence verdicts; better / worse only differ by
the family they are corrected in). A candidate leaves the race only when it is worse (and not
equivalent) on some task; a task two candidates share no items on decides nothing for them and is
named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from quantscope.analysis.capacity import VariantCapacity, model_config, variant_capacities
from quantscope.analysis.compare import (
    VERDICT_BETTER,
    VERDICT_EQUIVALENT,
    VERDICT_TRUNCATION,
    VERDICT_WORSE,
    Analysis,
    as_family,
    compare_pair,
)
from quantscope.analysis.decide import (
    DEFAULT_MARGIN,
    Decision,
    SamplesNeeded,
    decide,
    in_family,
    min_items_for_equivalence,
    paired_items,
)
from quantscope.errors import QuantscopeError
from quantscope.plan.serving import GpuBudget
from quantscope.util import format_size, json_ready

RULE = (
    "Candidates are the variants that fit the budget and were compared with the baseline on every "
    "task; the baseline is the reference, even when it is no candidate. Every pair of candidates is "
    "compared task by task by compare's rule (paired Student-t over the items both ran), the "
    "better / worse tests Holm-corrected as one family: a candidate worse than another on a task "
    "(and not equivalent there) and better on none is out. The best candidate is the one whose paired "
    "difference from the baseline has the highest lower 95% bound (mean over tasks), so a high score "
    "on a few items does not lead. The pick is the smallest candidate equivalent to the best on every "
    "task (paired 90% CI within ±{margin:g} points, on at least {items} items), because the memory it "
    "saves holds the KV cache long reasoning needs. A task two candidates share no items on decides "
    "nothing for them and is named. A smaller candidate neither out nor equivalent leaves the choice "
    "undecided: the recommendation says so and names the evaluation that would decide it. The pick's "
    "line names every task where it is significantly worse than the baseline. (The Pareto frontier "
    "of score against memory is drawn for reference.)"
)


@dataclass(frozen=True)
class Candidate:
    """One variant's standing against the baseline and the budget."""

    variant: str
    memory_bytes: int | None
    """Weight memory (bytes; None when unknown)."""
    accuracy: float
    """Mean over tasks of its accuracy on the items it shares with the baseline (fraction; the
    baseline's own for the baseline)."""
    task_accuracy: Mapping[str, float]
    truncation_rate: float
    """Mean over tasks (fraction)."""
    fits: bool
    """Whether it fits the budget."""
    on_frontier: bool
    """Whether it lies on the Pareto frontier of score against memory."""
    reason: str
    """Why it was picked or why it lost."""
    delta: float = 0.0
    """Its paired difference from the baseline (fraction, mean over tasks)."""
    serving: VariantCapacity | None = None
    """Capacity and throughput on the budget's GPU (None without a GPU budget)."""


@dataclass(frozen=True)
class Recommendation:
    """The pick for `budget_bytes` (None = no limit), the others best first, and the frontier
    (variant names by increasing memory). `pick` is None when nothing qualifies. `undecided`
    names smaller candidates the data cannot yet rule in or out, and `next_evaluation` the
    cheapest evaluation that would decide (None when decided). `caveats` are what the pick's line
    must say besides: the tasks where the pick is significantly worse than the baseline, that an
    unsized baseline is still the reference, tasks two candidates share no items on. `decisions`
    holds every verdict behind the pick: (variant, against, task) -> compare's decision."""

    budget_bytes: int | None
    rule: str
    pick: Candidate | None
    runners_up: tuple[Candidate, ...]
    frontier: tuple[str, ...]
    baseline: str
    margin: float = DEFAULT_MARGIN
    undecided: tuple[str, ...] = ()
    next_evaluation: str | None = None
    decisions: Mapping[tuple[str, str, str], Decision] = field(default_factory=dict, repr=False)
    gpu: str | None = None
    """The GPU budget described ("H200 (150 GB, tp=1)"); None for a weight budget or none."""
    caveats: tuple[str, ...] = ()
    best: str | None = None
    """The candidate the others are measured against (the pick, or the one it is equivalent to)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (`recommend --json`): the pick and every candidate with its reason, the
        undecided candidates and the evaluation that would decide, and each pairwise decision."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "decisions"}
        data["pick"] = asdict(self.pick) if self.pick else None
        data["runners_up"] = [asdict(c) for c in self.runners_up]
        data["summary"] = self.summary()
        data["decisions"] = [
            {"variant": a, "against": b, "task": t, **asdict(d)} for (a, b, t), d in self.decisions.items()
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
        for caveat in self.caveats:
            text += f" {caveat}"
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
    if margin is not None and margin != analysis.margin:
        analysis = with_margin(analysis, margin)
    reasons, memory = _exclusions(analysis, budget_bytes)
    served = _served(analysis, gpu, config, reasons)
    candidates = [name for name in analysis.variant_names if name not in reasons]
    scores = {name: _score(analysis, name) for name in candidates}
    race = _race(analysis, candidates, scores, memory)
    reasons.update(race.reasons)
    frontier = pareto_frontier({n: (float(memory[n]), scores[n]) for n in candidates})
    built = {
        n: _candidate(analysis, n, memory.get(n), n in candidates, n in frontier, reasons[n], served.get(n))
        for n in analysis.variant_names
    }
    others = sorted(
        (c for name, c in built.items() if name != race.pick),
        key=lambda c: (not c.fits, -_finite(c.delta), c.memory_bytes or 0, c.variant),
    )
    return Recommendation(
        budget_bytes=budget_bytes,
        rule=RULE.format(margin=100 * analysis.margin, items=min_items_for_equivalence(analysis.margin)),
        pick=built[race.pick] if race.pick is not None else None,
        runners_up=tuple(others),
        frontier=frontier,
        baseline=analysis.baseline,
        margin=analysis.margin,
        undecided=race.undecided,
        next_evaluation=race.next_evaluation,
        decisions=race.decisions,
        gpu=gpu.describe() if gpu is not None else None,
        caveats=_caveats(analysis, race, memory),
        best=race.best,
    )


def with_margin(analysis: Analysis, margin: float) -> Analysis:
    """`analysis` with another equivalence margin (fraction): every comparison decided again."""
    again = [
        compare_pair(
            analysis.results,
            c.variant,
            c.baseline,
            c.task,
            n_boot=analysis.n_boot,
            seed=analysis.seed,
            margin=margin,
            mismatches=c.mismatches,
            kind=c.kind,
        )
        for c in analysis.comparisons
    ]
    return replace(analysis, margin=margin, comparisons=as_family(again))


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


@dataclass(frozen=True)
class _Standing:
    """A candidate against another, task by task (`verdicts`: task -> its decision on this one
    minus the other; a task they share no items on has an undecided one with no items)."""

    verdicts: Mapping[str, Decision]

    def tasks(self, *verdicts: str) -> list[str]:
        return [t for t, d in self.verdicts.items() if d.verdict in verdicts]

    @property
    def unshared(self) -> list[str]:
        return [t for t, d in self.verdicts.items() if d.items == 0]

    @property
    def dominated(self) -> bool:
        """Worse on some task (and not equivalent there), better on none."""
        return bool(self.tasks(VERDICT_WORSE)) and not self.tasks(VERDICT_BETTER)

    @property
    def equivalent(self) -> bool:
        """Equivalent on every task (so on items shared on every task)."""
        return all(d.verdict == VERDICT_EQUIVALENT for d in self.verdicts.values())


@dataclass(frozen=True)
class _Race:
    """The outcome of the rule: the best candidate, the pick, each candidate's reason, the smaller
    ones left undecided and what would decide them, and the verdicts it rests on."""

    best: str | None = None
    pick: str | None = None
    reasons: Mapping[str, str] = field(default_factory=dict)
    undecided: tuple[str, ...] = ()
    next_evaluation: str | None = None
    decisions: Mapping[tuple[str, str, str], Decision] = field(default_factory=dict)


def _race(
    analysis: Analysis, candidates: list[str], scores: Mapping[str, float], memory: Mapping[str, int]
) -> _Race:
    """`RULE` applied to `candidates` (names that fit, with known memory)."""
    if not candidates:
        return _Race()
    decisions = _pairwise(analysis, candidates)
    standing = {
        (a, b): _Standing({t: _verdict(decisions, a, b, t) for t in analysis.tasks})
        for a in candidates
        for b in candidates
        if a != b
    }
    out = {a: [b for b in candidates if b != a and standing[(a, b)].dominated] for a in candidates}
    alive = [n for n in candidates if not out[n]] or candidates  # a cycle of losses rules nobody out
    best = max(alive, key=lambda n: (_lower_bound(analysis, n), -memory[n], n))
    equivalent = [best] + [n for n in alive if n != best and standing[(n, best)].equivalent]
    pick = min(equivalent, key=lambda n: (memory[n], n))
    smaller = [n for n in alive if n not in equivalent and memory[n] < memory[pick]]
    undecided = tuple(sorted(smaller, key=lambda n: (memory[n], n)))
    words = _Words(analysis, standing, memory, best, pick)
    reasons = {n: words.reason(n, out[n] if n not in alive else [], n in undecided) for n in candidates}
    needed = _next_evaluation(undecided, best, standing) if undecided else None
    return _Race(best, pick, reasons, undecided, needed, decisions)


def _pairwise(analysis: Analysis, candidates: Sequence[str]) -> dict[tuple[str, str, str], Decision]:
    """Every pair of candidates on every task, decided by compare's rule (`decide` on the items both
    ran) and Holm-corrected as one family: (a, b, task) -> the decision on a - b, each pair once."""
    results = analysis.results
    keys = [(a, b, t) for i, a in enumerate(candidates) for b in candidates[i + 1 :] for t in analysis.tasks]
    found = [
        decide([paired_items(results.select(a, t), results.select(b, t))], analysis.margin)
        for a, b, t in keys
    ]
    return dict(zip(keys, in_family(found), strict=True))


def _verdict(decisions: Mapping[tuple[str, str, str], Decision], a: str, b: str, task: str) -> Decision:
    """The decision on a - b from the one stored for the pair either way round."""
    if (a, b, task) in decisions:
        return decisions[(a, b, task)]
    d = decisions[(b, a, task)]
    flip = {VERDICT_BETTER: VERDICT_WORSE, VERDICT_WORSE: VERDICT_BETTER}
    return replace(
        d,
        delta=-d.delta,
        ci95=(-d.ci95[1], -d.ci95[0]),
        ci90=(-d.ci90[1], -d.ci90[0]),
        verdict=flip.get(d.verdict, d.verdict),
    )


def _lower_bound(analysis: Analysis, name: str) -> float:
    """The lower end of the 95% CI of `name`'s paired difference from the baseline, mean over tasks
    (0 for the baseline; -inf when a task shares no two items with it): the candidate the others
    are measured against is the one the data best support, not a high score on a few items."""
    if name == analysis.baseline:
        return 0.0
    results, base = analysis.results, analysis.baseline
    pairs = [paired_items(results.select(name, t), results.select(base, t)) for t in analysis.tasks]
    low = decide(pairs, analysis.margin).ci95[0]
    return -math.inf if math.isnan(low) else low


class _Words:
    """Why each candidate was picked or lost, in words."""

    def __init__(
        self,
        analysis: Analysis,
        standing: Mapping[tuple[str, str], _Standing],
        memory: Mapping[str, int],
        best: str,
        pick: str,
    ) -> None:
        self.analysis, self.standing, self.memory = analysis, standing, memory
        self.best, self.pick = best, pick

    def reason(self, name: str, beaten_by: Sequence[str], undecided: bool) -> str:
        best, pick = self.best, self.pick
        if name == pick:
            return "the best candidate that fits" if pick == best else self._equivalence(name)
        if beaten_by:
            other = beaten_by[0]
            st = self.standing[(name, other)]
            lost = "; ".join(f"{t} ({_ci(st.verdicts[t], 95)})" for t in st.tasks(VERDICT_WORSE))
            return f"worse than {other} on {lost}"
        if name == best:
            saved = format_size(self.memory[name] - self.memory[pick])
            return f"the best candidate, but {pick} is equivalent and {saved} smaller"
        st = self.standing[(name, best)]
        unshared = f"; shares no items with {best} on {', '.join(st.unshared)}" if st.unshared else ""
        if st.equivalent:
            extra = format_size(self.memory[name] - self.memory[pick])
            if best == pick:
                return f"equivalent to {pick}, and {extra} larger"
            return f"equivalent to {best} but {extra} larger than {pick}"
        open_ = {t: d for t, d in st.verdicts.items() if d.verdict != VERDICT_EQUIVALENT and d.items}
        shown = "; ".join(f"{t}: {_ci(d, 90)}" for t, d in open_.items())
        if undecided:
            needed = _cheapest_need(st)
            tail = f": {needed.reason}" if needed is not None else ""
            return f"undecided against {best} ({shown}){unshared}{tail}"
        return f"not shown equivalent to {best} ({shown}){unshared}, and larger than {pick}"

    def _equivalence(self, name: str) -> str:
        st = self.standing[(name, self.best)]
        saved = format_size(self.memory[self.best] - self.memory[name])
        shown = "; ".join(f"{t}: {_ci(d, 90)}" for t, d in st.verdicts.items())
        within = f"within ±{100 * self.analysis.margin:g}"
        return f"equivalent to {self.best}, the best candidate ({shown}, {within}), and {saved} smaller"


def _ci(d: Decision, level: int) -> str:
    low, high = d.ci95 if level == 95 else d.ci90
    return f"{100 * d.delta + 0.0:+.1f} pts, {level}% CI [{100 * low:+.1f}, {100 * high:+.1f}]"


def _cheapest_need(standing: _Standing) -> SamplesNeeded | None:
    """The cheapest samples likely to decide the tasks `standing` leaves open."""
    open_ = [d for d in standing.verdicts.values() if d.verdict != VERDICT_EQUIVALENT]
    needs = [d.samples_needed for d in open_ if d.samples_needed is not None]
    decidable = [n for n in needs if n.extra is not None]
    if decidable:
        return min(decidable, key=lambda n: n.extra or 0)
    return needs[0] if needs else None


def _caveats(analysis: Analysis, race: _Race, memory: Mapping[str, int]) -> tuple[str, ...]:
    """What the pick's line must say besides why it won: where it is significantly worse than the
    baseline (compare's verdicts), and that a baseline outside the race is still the reference."""
    if race.pick is None or race.pick == analysis.baseline:
        return ()
    notes = []
    base = analysis.baseline
    if base not in memory:
        notes.append(
            f"It is measured against {base}, the reference, whose memory is unknown (so it is no "
            f"candidate): {_score(analysis, race.pick) * 100:+.1f} pts from it."
        )
    lost = [
        c
        for t in analysis.tasks
        if (c := analysis.comparison(race.pick, t)) is not None
        and c.verdict in (VERDICT_WORSE, VERDICT_TRUNCATION)
    ]
    if lost:
        notes.append(
            f"It is significantly worse than {base} on "
            + "; ".join(f"{c.task} ({_ci(c.decision, 95)})" for c in lost)
            + " — the score is a mean over tasks."
        )
    return tuple(notes)


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
            if info.name == analysis.baseline:
                reasons[info.name] += "; still the reference every candidate is measured against"
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


def _next_evaluation(
    undecided: Sequence[str], best: str, standing: Mapping[tuple[str, str], _Standing]
) -> str:
    """The cheapest evaluation that would decide one of the undecided candidates against `best`."""
    options = []
    for name in undecided:
        needed = _cheapest_need(standing[(name, best)])
        if needed is not None and needed.extra is not None:
            options.append((needed.extra, name, needed))
    if not options:
        return (
            "more samples per item cannot decide it on these items (too few shared items, or the spread "
            "between them is too wide): evaluate on more items, or accept the margin"
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
