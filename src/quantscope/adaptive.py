"""`quantscope eval --until-decided`: evaluate a variant, then add samples until its verdict against
the baseline is decided on every task (or `max_k` samples per item are reached).

Each round decides every task (`analysis.sequential.plan_round`, with its alpha-spending rule)
and generates one more sample, for the variant and for the baseline alike, of the items where the
two disagree most. The new samples are ordinary rows: sample j of an item has seed `seed + j` on
both sides, so a killed run resumes and a later fixed-k run reuses them. The baseline is generated
again from the spec its own rows were stored with (model, engine, settings), so both sides keep
identical settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from quantscope.analysis.compare import choose_baseline, variant_infos
from quantscope.analysis.decide import DEFAULT_MARGIN, Decision, PairedItems, paired_items
from quantscope.analysis.metrics import load_results
from quantscope.analysis.sequential import RULE, RoundPlan, plan_round, planned_looks
from quantscope.engines.base import Engine
from quantscope.errors import QuantscopeError
from quantscope.runner import RunProgress, RunSpec, RunSummary, build_engine, run_eval
from quantscope.store import Store

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

    Raises QuantscopeError when the variant is its own baseline or the baseline lacks a task. The
    engines passed in are used and left open; the ones built here are closed at the end.
    """
    if spec.k < 2:
        raise QuantscopeError(
            "--until-decided starts from at least 2 samples per item (-k 2): with one, the variance within "
            "an item is unknown and the rounds that follow would target items on a single coin flip"
        )
    if max_k <= spec.k:
        raise QuantscopeError(f"--max-k {max_k} must be above -k {spec.k}: give a larger --max-k")
    first = run_eval(spec, store, engine, progress)
    base = _baseline(store, spec, baseline)
    base_spec = baseline_spec(store, base, spec)
    owned: list[Engine] = []
    rounds: list[RoundPlan] = []
    added = 0
    try:
        for look in range(planned_looks(spec.k, max_k)):
            plan = plan_round(_paired(store, spec, base), look, k0=spec.k, max_k=max_k, margin=margin)
            rounds.append(plan)
            if on_round is not None:
                on_round(plan)
            if plan.done:
                break
            if engine is None:
                engine = _owned(spec, owned)
            if baseline_engine is None:
                baseline_engine = _owned(base_spec, owned)
            added += _extend(store, spec, engine, plan.extend, progress)
            _extend(store, base_spec, baseline_engine, plan.extend, progress)
    finally:
        for built in owned:
            built.close()
    return AdaptiveSummary(first, base, tuple(rounds), added)


def _owned(spec: RunSpec, owned: list[Engine]) -> Engine:
    engine = build_engine(spec)
    owned.append(engine)
    return engine


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


def _extend(
    store: Store,
    spec: RunSpec,
    engine: Engine,
    extend: Mapping[str, tuple[str, ...]],
    progress: RunProgress | None,
) -> int:
    """One more sample, on `spec`'s side, of every item in `extend` (task -> item ids)."""
    counts = {t: _counts(store, spec.variant_name, t) for t in extend}
    wanted = {t: {item: counts[t].get(item, 0) + 1 for item in items} for t, items in extend.items()}
    summary = run_eval(spec, store, engine, progress, samples_per_item=wanted)
    return sum(task.generated for task in summary.tasks)


def _counts(store: Store, variant: str, task: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item, _ in store.done_keys(variant, task):
        counts[item] = counts.get(item, 0) + 1
    return counts
