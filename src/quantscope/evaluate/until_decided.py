"""`quantscope eval --until-decided`: evaluate a variant, then add samples until its verdict against
the baseline is decided on every task (or `max_k` samples per item are reached).

The loop is `analysis.sequential.until_decided`: each round decides every task (with its
alpha-spending rule) and generates one more sample of every shared item of each undecided task,
for the variant and for the baseline alike (a side with fewer samples of an item first catches up
with the other), never choosing items by their outcomes. The new samples are ordinary rows:
sample j of an item has seed `seed + j` on both sides, so a killed run resumes and a later fixed-k
run reuses them. The baseline is generated again from the spec its own rows were stored with
(model, engine, settings), so both sides keep identical settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from quantscope.analysis.compare import choose_baseline, variant_infos
from quantscope.analysis.decide import DEFAULT_MARGIN, Decision, PairedItems, paired_items
from quantscope.analysis.metrics import load_results
from quantscope.analysis.sequential import RULE, RoundPlan, adjusted_delta, until_decided
from quantscope.engines.base import Engine
from quantscope.errors import QuantscopeError
from quantscope.evaluate.runner import RunProgress, RunSummary, build_engine, run_eval
from quantscope.evaluate.spec import RunSpec
from quantscope.store.database import Store

RoundCallback = Callable[[RoundPlan], None]


@dataclass(frozen=True)
class AdaptiveSummary:
    """What sampling until decided did: the first run's summary, every look's plan (the last one
    holds the final decisions), the baseline it was decided against, and the generations it added
    for each side."""

    first: RunSummary
    baseline: str
    rounds: tuple[RoundPlan, ...]
    added: int
    rule: str = RULE

    @property
    def decisions(self) -> Mapping[str, Decision]:
        """The final decision per task."""
        return self.rounds[-1].decisions if self.rounds else {}

    def adjusted(self, task: str) -> float:
        """`task`'s delta corrected for stopping at the first verdict (`sequential.adjusted_delta`)."""
        return adjusted_delta(self.rounds, task)


def eval_until_decided(
    spec: RunSpec,
    store: Store,
    *,
    max_k: int = 16,
    margin: float = DEFAULT_MARGIN,
    baseline: str | None = None,
    engine: Engine | None = None,
    baseline_engine: Engine | None = None,
    progress: RunProgress | None = None,
    on_round: RoundCallback | None = None,
) -> AdaptiveSummary:
    """Run `spec`, then sample until decided against `baseline` (default: the store's) on every task.

    Raises QuantscopeError when the variant is its own baseline, the baseline lacks a task, or
    `max_k` is not above the spec's k. The engines passed in are used and left open; the ones
    built here are closed at the end.
    """
    if max_k <= spec.k:
        raise QuantscopeError(f"--max-k {max_k} must be above -k {spec.k}: give a larger --max-k")
    first = run_eval(spec, store, engine, progress)
    base = _baseline(store, spec, baseline)
    extender = _Extender(store, spec, baseline_spec(store, base, spec), engine, baseline_engine, progress)
    try:
        rounds = until_decided(
            lambda: _paired(store, spec, base),
            extender,
            k0=spec.k,
            max_k=max_k,
            margin=margin,
            on_round=on_round,
        )
    finally:
        extender.close()
    return AdaptiveSummary(first, base, rounds, extender.added)


class _Extender:
    """Generates a round's planned samples on each side, building an engine for a side only when it
    has work and none was passed in (those built here are closed by `close`)."""

    def __init__(
        self,
        store: Store,
        spec: RunSpec,
        base_spec: RunSpec,
        engine: Engine | None,
        baseline_engine: Engine | None,
        progress: RunProgress | None,
    ) -> None:
        self.store, self.progress = store, progress
        self.sides = {"variant": (spec, engine), "baseline": (base_spec, baseline_engine)}
        self.owned: list[Engine] = []
        self.added = 0
        """Generations added on the variant's side (the baseline's match them)."""

    def __call__(self, plan: RoundPlan) -> None:
        for side, wanted in (("variant", plan.extend), ("baseline", plan.extend_baseline)):
            if not any(wanted.values()):
                continue
            spec, engine = self.sides[side]
            if engine is None:
                engine = build_engine(spec)
                self.owned.append(engine)
                self.sides[side] = (spec, engine)
            summary = run_eval(spec, self.store, engine, self.progress, samples_per_item=wanted)
            self.added += sum(t.generated for t in summary.tasks) if side == "variant" else 0

    def close(self) -> None:
        for engine in self.owned:
            engine.close()


def _baseline(store: Store, spec: RunSpec, requested: str | None) -> str:
    base = choose_baseline(variant_infos(store), requested)
    if base == spec.variant_name:
        raise QuantscopeError(
            f"{spec.variant_name!r} is the store's baseline: --until-decided adds samples to a variant and "
            "its baseline; evaluate the variant under another name, or name the baseline with --against"
        )
    return base


def baseline_spec(store: Store, baseline: str, spec: RunSpec) -> RunSpec:
    """The spec that regenerates `baseline`'s rows on `spec`'s tasks: the one its rows were stored
    with, with `spec`'s tasks, k and limit (QuantscopeError when it has no rows on a task)."""
    stored = {}
    for task in spec.tasks:
        runs = [r for r in store.runs(variant=baseline, task=task.name) if store.count(baseline, task.name)]
        if not runs:
            raise QuantscopeError(
                f"the baseline {baseline!r} has no rows on task {task.name!r}: evaluate it there first"
            )
        stored[task.name] = runs[0]
    first = next(iter(stored.values()))
    data = json.loads(first.spec_json) if first.spec_json not in ("", "{}") else {}
    if not data:
        raise QuantscopeError(f"the baseline {baseline!r} was stored without its run spec: evaluate it again")
    data.update(tasks=[t.model_dump() for t in spec.tasks], k=spec.k, limit=spec.limit, variant=baseline)
    return RunSpec.model_validate(data)


def _paired(store: Store, spec: RunSpec, base: str) -> dict[str, PairedItems]:
    results = load_results(store)
    return {
        t.name: paired_items(results.select(spec.variant_name, t.name), results.select(base, t.name))
        for t in spec.tasks
    }
