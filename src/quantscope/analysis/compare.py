"""Compare every variant with a baseline on every task: what quantization cost, and why.

`analyze(store)` reads the store once and returns an `Analysis`: per (variant, task) metrics on a
common budget grid, and one `Comparison` per (variant, task) against the baseline (BF16 by
default). Every comparison is paired on the items both sides ran (per item, the mean over its k
samples), and everything shown next to its delta is computed on those same items; coverage
("ran 10 of 40 items") is kept apart. A comparison holds:

- the accuracy delta (variant - baseline) with its decision (`analysis.decide`, Student-t over
  items): better, worse, equivalent (paired 90% CI inside ±margin, TOST, on enough items) or
  undecided, and for an undecided one the samples likely to decide it. The comparisons of one
  analysis are one family: better / worse are Holm-corrected over all of them (`as_family`);
- the truncation-rate delta (`metrics.truncation_rate`: mean over items) and the accuracy among
  finished generations on both sides;
- thinking-token inflation: variant / baseline ratio of the median thinking tokens over all
  samples, generations cut while thinking censored (the Kaplan–Meier median, `analysis.thinking`:
  NaN once half of a side is cut, never the cap over the cap), and of the median and the mean
  over finished ones only; `mean_all` is the raw mean, the cap standing in for a cut length;
- the CoT Token Inflation Ratio (Lian et al. 2026, "Quantization Inflates Reasoning", arXiv
  2606.25519, the name the literature uses for this ratio): the variant's mean thinking tokens ÷
  the baseline's, paired over the items both ran, with a paired bootstrap CI over those items
  (`cot_token_inflation`);
- comparability: both sides must share the cap, thinking mode, sampling, chat template and
  items (`analysis.comparability`); `analyze` refuses otherwise unless told to allow it.

Truncation rule (`explained_by_truncation`, verdict "worse: mostly truncation"): the loss is
significant (verdict worse), the variant truncates more than the baseline, the accuracy it would
lose if each extra truncated sample had been right at the baseline's finished-accuracy rate
covers at least half of the loss, and its own accuracy among finished generations holds (no more
than half the loss below the baseline's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from quantscope.analysis.comparability import run_settings, same_model, setting_mismatches, unknown_settings
from quantscope.analysis.decide import (
    DEFAULT_MARGIN,
    VERDICT_BETTER,
    VERDICT_EQUIVALENT,
    VERDICT_UNDECIDED,
    VERDICT_WORSE,
    Decision,
    bootstrap_means,
    decide,
    family_note,
    in_family,
    paired_items,
    seeded_resampled_means,
)
from quantscope.analysis.metrics import (
    DEFAULT_BOOTSTRAP,
    BudgetCurve,
    Results,
    TaskMetrics,
    default_budgets,
    forced_curve,
    item_index,
    load_results,
    per_item_mean,
    summarize,
    truncation_rate,
)
from quantscope.analysis.thinking import km_median, thinking_censored
from quantscope.errors import QuantscopeError
from quantscope.quantize.weight_memory import variant_memory
from quantscope.util import json_ready

if TYPE_CHECKING:
    from quantscope.store.settings import OutputSettings
from quantscope.numerics.twin_marker import describe_twin
from quantscope.store.database import Store
from quantscope.store.rows import Variant

BASELINE_RECIPES = ("bf16", "fp16")
VERDICT_TRUNCATION = "worse: mostly truncation"
VERDICTS = (VERDICT_BETTER, VERDICT_WORSE, VERDICT_TRUNCATION, VERDICT_EQUIVALENT, VERDICT_UNDECIDED)
TRUNCATION_RULE = (
    "'worse: mostly truncation' means: the loss is significant, the variant hits the cap more often, "
    "the extra truncations at the baseline's finished accuracy cover at least half of the loss, and "
    "its accuracy among finished generations is within half the loss of the baseline's"
)


@dataclass(frozen=True)
class VariantInfo:
    """A stored variant as analysis sees it: `memory_bytes` is its weight memory (bytes, None when
    unknown) and `memory_source` says where that number came from ("store", "manifest", "files")."""

    name: str
    model_path: str
    recipe: str | None
    memory_bytes: int | None
    memory_source: str | None
    is_baseline: bool
    evaluated: str | None = None
    """What evaluating `model_path` measured when it is not the checkpoint as stored: an evaluation
    twin's description (`numerics.twin_marker.describe_twin`); None for a checkpoint evaluated as it is."""


@dataclass(frozen=True)
class Inflation:
    """Variant / baseline ratios of thinking tokens (1.0 = same length; NaN when undefined).
    `median_all` is the ratio of Kaplan–Meier medians (cut generations censored)."""

    median_all: float
    mean_all: float
    median_finished: float
    mean_finished: float


COT_INFLATION_DEFINITION = (
    "CoT Token Inflation Ratio (Lian et al. 2026, arXiv 2606.25519): the variant's reasoning length ÷ "
    "the baseline's (quantized ÷ full precision), paired over the items both ran: the mean over those "
    "items of each item's mean thinking tokens over its samples, variant over baseline (a generation cut "
    "at the cap counts its thinking so far, so a side that hits the cap more is understated); ci95: "
    "percentile bootstrap over those items, resampled together on both sides; 1.0 = same length"
)


@dataclass(frozen=True)
class CotInflation:
    """The CoT Token Inflation Ratio of one comparison (`COT_INFLATION_DEFINITION`): `ratio` =
    variant ÷ baseline mean thinking tokens over the `items` both ran (NaN when the baseline thinks
    0 tokens on them), `ci95` its paired percentile-bootstrap 95% CI over those items (`n_boot`
    resamples)."""

    ratio: float
    ci95: tuple[float, float]
    items: int
    n_boot: int


@dataclass(frozen=True)
class Comparison:
    """One variant against the baseline on one task (see the module docstring).

    Accuracies and rates are fractions in [0, 1], all over the `paired_items` both sides ran
    (`items` and `baseline_items` are what each side ran: its coverage); `delta*` are variant
    minus baseline, with the 95% CI of `decision`; `truncation_cost` is the accuracy the extra
    truncations would cost at the baseline's finished accuracy (fraction). `mismatches` lists the
    settings the two sides differ in (empty unless the comparison was allowed anyway) and `kind`
    is "variant", or "settings" in a settings study of one model. `unknown_settings` names the
    comparable settings a side did not record ("max_tokens of NAME": runs imported from a harness
    that does not write them): the comparison rests on them unchecked.
    """

    variant: str
    baseline: str
    task: str
    paired_items: int
    items: int
    baseline_items: int
    accuracy: float
    baseline_accuracy: float
    delta: float
    delta_ci_low: float
    delta_ci_high: float
    significant: bool
    truncation_rate: float
    baseline_truncation_rate: float
    truncation_delta: float
    accuracy_finished: float
    baseline_accuracy_finished: float
    truncation_cost: float
    explained_by_truncation: bool
    inflation: Inflation
    cot_token_inflation_ratio: CotInflation
    verdict: str
    decision: Decision
    mismatches: tuple[str, ...] = ()
    kind: str = "variant"
    unknown_settings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (`compare --json`): every field, the decision with its CIs and the
        samples that would decide it, the coverage and the comparability mismatches."""
        return json_ready({**asdict(self), "coverage": self.coverage})

    @property
    def coverage(self) -> str:
        """What the comparison rests on, e.g. "10 items (variant ran 10 of the baseline's 40)"."""
        if self.items == self.baseline_items == self.paired_items:
            return f"{self.paired_items} items"
        return (
            f"{self.paired_items} shared items ({self.variant} ran {self.items}, {self.baseline} ran "
            f"{self.baseline_items})"
        )


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything the report and the recommendation need, computed once from a store.

    `metrics` are per (variant, task) with budget curves on one grid per task (`budgets`, tokens);
    `comparisons` are per (non-baseline variant, task); `results` are the numeric rows;
    `settings` the output settings of every run (by spec hash); `margin` the equivalence margin
    (fraction); `allowed_mismatch` whether incomparable pairs were compared anyway.
    """

    baseline: str
    tasks: tuple[str, ...]
    variants: tuple[VariantInfo, ...]
    metrics: tuple[TaskMetrics, ...]
    comparisons: tuple[Comparison, ...]
    budgets: dict[str, tuple[int, ...]]
    results: Results
    n_boot: int
    seed: int
    margin: float = DEFAULT_MARGIN
    settings: Mapping[str, OutputSettings] = field(default_factory=dict)
    allowed_mismatch: bool = False
    settings_study: bool = False
    forced: Mapping[tuple[str, str], BudgetCurve] = field(default_factory=dict)
    """(variant, task) -> the forced-answer budget curve (`metrics.forced_curve`), where stored."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (`compare --json`): the baseline, margin, variants and comparisons."""
        return json_ready(
            {
                "baseline": self.baseline,
                "margin": self.margin,
                "tasks": list(self.tasks),
                "variants": [asdict(v) for v in self.variants],
                "comparisons": [c.to_dict() for c in self.comparisons],
                "allowed_mismatch": self.allowed_mismatch,
                "settings_study": self.settings_study,
                "forced": [
                    {"variant": v, "task": t, **asdict(curve)}
                    for (v, t), curve in sorted(self.forced.items())
                ],
                "note": family_note(len(self.comparisons), self.margin),
                "definitions": {"cot_token_inflation_ratio": COT_INFLATION_DEFINITION},
            }
        )

    def variant(self, name: str) -> VariantInfo:
        """The variant called `name`; QuantscopeError when there is none."""
        for info in self.variants:
            if info.name == name:
                return info
        raise QuantscopeError(f"no variant {name!r} in this analysis; variants: {self.variant_names}")

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The variants' names, in analysis order (baseline first, then by memory)."""
        return tuple(v.name for v in self.variants)

    def metric(self, variant: str, task: str) -> TaskMetrics | None:
        """The metrics of (variant, task), or None when that pair has no rows."""
        for m in self.metrics:
            if m.variant == variant and m.task == task:
                return m
        return None

    def comparison(self, variant: str, task: str) -> Comparison | None:
        """The comparison of (variant, task) with the baseline, or None."""
        for c in self.comparisons:
            if c.variant == variant and c.task == task:
                return c
        return None


# ---- pure functions -----------------------------------------------------------------------


def paired_delta(
    variant: Results,
    baseline: Results,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float, int]:
    """Accuracy delta (variant - baseline, avg@k) over the items both ran, with a paired bootstrap CI.

    Items are resampled together on both sides, so item difficulty cancels out. Returns
    (delta, ci_low, ci_high, paired_items); NaNs when no item is shared.
    """
    pairs = paired_items(variant, baseline)
    if not len(pairs):
        nan = float("nan")
        return nan, nan, nan, 0
    means = bootstrap_means([pairs], n_boot, seed)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(pairs.diff.mean()), float(low), float(high), len(pairs)


def thinking_inflation(variant: Results, baseline: Results) -> Inflation:
    """Variant / baseline ratios of median and mean thinking tokens, all and finished samples (the
    median of all: Kaplan–Meier, generations cut while thinking censored)."""

    def ratio(ours: np.ndarray, theirs: np.ndarray, stat: str) -> float:
        if ours.size == 0 or theirs.size == 0:
            return float("nan")
        top, bottom = (
            (np.median(ours), np.median(theirs)) if stat == "median" else (ours.mean(), theirs.mean())
        )
        return float(top / bottom) if bottom > 0 else float("nan")

    variant, baseline = variant.counted(), baseline.counted()
    ours_all, theirs_all = variant.thinking_tokens, baseline.thinking_tokens
    ours_fin = variant.thinking_tokens[~variant.truncated]
    theirs_fin = baseline.thinking_tokens[~baseline.truncated]
    ours_km = km_median(ours_all, thinking_censored(variant.truncated, variant.answer_tokens))
    theirs_km = km_median(theirs_all, thinking_censored(baseline.truncated, baseline.answer_tokens))
    return Inflation(
        median_all=float(ours_km / theirs_km) if theirs_km > 0 else float("nan"),
        mean_all=ratio(ours_all, theirs_all, "mean"),
        median_finished=ratio(ours_fin, theirs_fin, "median"),
        mean_finished=ratio(ours_fin, theirs_fin, "mean"),
    )


def cot_token_inflation(
    variant: Results, baseline: Results, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> CotInflation:
    """The CoT Token Inflation Ratio of `variant` over `baseline` (one task each, on the same items:
    `COT_INFLATION_DEFINITION`), with its paired bootstrap 95% CI over the items."""
    ours, theirs = _item_thinking(variant), _item_thinking(baseline)
    nan = float("nan")
    if not (variant.tokens_known.all() and baseline.tokens_known.all()):
        return CotInflation(nan, (nan, nan), 0, n_boot)  # a length ratio over unknown lengths
    if ours.size == 0 or ours.size != theirs.size:
        return CotInflation(nan, (nan, nan), int(min(ours.size, theirs.size)), n_boot)
    # the same item draws on both sides: one resampler (`decide.resampled_means`), one seed each side
    top = seeded_resampled_means(ours, n_boot, seed)
    bottom = seeded_resampled_means(theirs, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = top / bottom
    ratio = float(ours.mean() / theirs.mean()) if theirs.mean() > 0 else nan
    if not np.isfinite(ratios).all():
        return CotInflation(ratio, (nan, nan), int(ours.size), n_boot)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return CotInflation(ratio, (float(low), float(high)), int(ours.size), n_boot)


def _item_thinking(results: Results) -> np.ndarray:
    """Each item's mean thinking tokens over its samples, items in sorted id order."""
    items, n_items = item_index(results.item_id)
    return per_item_mean(results.thinking_tokens, items, n_items)


def truncation_explains(
    delta: float, truncation_delta: float, baseline_finished: float, finished: float
) -> tuple[bool, float]:
    """Whether an accuracy loss is mostly truncation (the module docstring's rule), and its cost.

    Returns (explained, truncation_cost) with the cost as a fraction of accuracy.
    """
    if any(np.isnan(x) for x in (delta, truncation_delta, baseline_finished)):
        return False, float("nan")
    cost = max(0.0, truncation_delta) * baseline_finished
    loss = -delta
    if loss <= 0 or truncation_delta <= 0:
        return False, cost
    holds = not np.isnan(finished) and finished >= baseline_finished - loss / 2
    return bool(cost >= loss / 2 and holds), cost


def compare_pair(
    results: Results,
    variant: str,
    baseline: str,
    task: str,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    margin: float = DEFAULT_MARGIN,
    mismatches: Sequence[str] = (),
    kind: str = "variant",
) -> Comparison:
    """Compare `variant` with `baseline` on `task` (both must have rows in `results`), paired on
    the items both ran; `margin` is the equivalence margin (fraction). The decision is a family of
    one: `as_family` corrects the comparisons shown together. `n_boot` and `seed` drive the CoT Token
    Inflation Ratio's bootstrap; the decision itself is a t interval."""
    ours, theirs = results.select(variant, task), results.select(baseline, task)
    for name, rows in ((variant, ours), (baseline, theirs)):
        if len(rows) == 0:
            raise QuantscopeError(f"no results for variant {name!r} on task {task!r}: evaluate it first")
    pairs = paired_items(ours, theirs)
    shared = list(pairs.item_ids)
    ours_shared, theirs_shared = _on_items(ours, shared), _on_items(theirs, shared)
    trunc = truncation_rate(ours_shared.truncated, ours_shared.item_id)
    base_trunc = truncation_rate(theirs_shared.truncated, theirs_shared.item_id)
    finished, base_finished = _finished_accuracy(ours_shared), _finished_accuracy(theirs_shared)
    comparison = Comparison(
        variant=variant,
        baseline=baseline,
        task=task,
        paired_items=len(shared),
        items=len(set(ours.item_id.astype(str))),
        baseline_items=len(set(theirs.item_id.astype(str))),
        accuracy=float(pairs.mean.mean()) if shared else float("nan"),
        baseline_accuracy=float(pairs.other_mean.mean()) if shared else float("nan"),
        delta=float("nan"),
        delta_ci_low=float("nan"),
        delta_ci_high=float("nan"),
        significant=False,
        truncation_rate=trunc,
        baseline_truncation_rate=base_trunc,
        truncation_delta=trunc - base_trunc,
        accuracy_finished=finished,
        baseline_accuracy_finished=base_finished,
        truncation_cost=float("nan"),
        explained_by_truncation=False,
        inflation=thinking_inflation(ours_shared, theirs_shared),
        cot_token_inflation_ratio=cot_token_inflation(ours_shared, theirs_shared, n_boot, seed),
        verdict=VERDICT_UNDECIDED,
        decision=decide([pairs], margin),
        mismatches=tuple(mismatches),
        kind=kind,
    )
    return with_decision(comparison, comparison.decision)


def with_decision(c: Comparison, decision: Decision) -> Comparison:
    """`c` with `decision` and every field that follows from it: the delta and its CI, whether it
    is significant, the truncation rule and the verdict."""
    explained, cost = truncation_explains(
        decision.delta, c.truncation_delta, c.baseline_accuracy_finished, c.accuracy_finished
    )
    explained = explained and decision.verdict == VERDICT_WORSE
    return replace(
        c,
        delta=decision.delta,
        delta_ci_low=decision.ci95[0],
        delta_ci_high=decision.ci95[1],
        significant=decision.significant,
        truncation_cost=cost,
        explained_by_truncation=explained,
        verdict=VERDICT_TRUNCATION if explained else decision.verdict,
        decision=decision,
    )


def as_family(comparisons: Sequence[Comparison]) -> tuple[Comparison, ...]:
    """`comparisons` as one family: better / worse Holm-corrected over all of them
    (`decide.in_family`), every dependent field redone."""
    decisions = in_family([c.decision for c in comparisons])
    return tuple(with_decision(c, d) for c, d in zip(comparisons, decisions, strict=True))


def _on_items(results: Results, items: Sequence[str]) -> Results:
    return results.take(np.isin(results.item_id.astype(str), list(items)))


def _finished_accuracy(results: Results) -> float:
    finished = ~results.truncated
    return float(results.correct[finished].mean()) if finished.any() else float("nan")


# ---- over a store -------------------------------------------------------------------------


def choose_baseline(variants: Sequence[VariantInfo], requested: str | None = None) -> str:
    """The baseline's name: `requested`, else the only variant, else the one marked baseline, else a
    bf16/fp16 recipe, else the largest variant. QuantscopeError when `requested` is unknown or
    nothing qualifies."""
    names = [v.name for v in variants]
    if requested is not None:
        if requested not in names:
            raise QuantscopeError(
                f"--baseline {requested!r} is not in the store; variants: {', '.join(names)}"
            )
        return requested
    if not variants:
        raise QuantscopeError("the store holds no variants: run `quantscope eval` first")
    if len(variants) == 1:
        return variants[0].name
    for rule in (
        lambda v: v.is_baseline,
        lambda v: (v.recipe or "").lower() in BASELINE_RECIPES or v.name.lower() in BASELINE_RECIPES,
    ):
        marked = [v for v in variants if rule(v)]
        if marked:
            return marked[0].name
    sized = [v for v in variants if v.memory_bytes is not None]
    if sized:
        return max(sized, key=lambda v: v.memory_bytes or 0).name
    raise QuantscopeError(
        "cannot tell which variant is the baseline: pass --baseline NAME (or evaluate one with --baseline)"
    )


def analyze(
    store: Store,
    baseline: str | None = None,
    *,
    tasks: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    margin: float = DEFAULT_MARGIN,
    allow_mismatch: bool = False,
    settings_study: bool = False,
) -> Analysis:
    """Read the store once and compare every variant with the baseline on every task.

    `baseline` defaults to `choose_baseline`'s pick; `tasks` restricts the tasks analysed;
    `margin` is the equivalence margin (fraction). A variant generated under other settings than
    the baseline (cap, thinking, sampling, chat template, items) is refused with a QuantscopeError
    naming the setting, unless `allow_mismatch` (the comparison then lists its mismatches);
    `settings_study` compares runs of one model under different settings on purpose. Budget
    curves of one task share one grid (`default_budgets` of the smallest cap among its variants).
    """
    results = _results(store, tasks)
    present = set(results.variant.tolist())
    infos = [v for v in variant_infos(store) if v.name in present]
    base = choose_baseline(infos, baseline)
    infos.sort(key=lambda v: (v.name != base, -(v.memory_bytes or 0), v.name))
    settings = run_settings(store.runs())
    task_names = tuple(sorted(set(results.task.tolist())))
    budgets = _budget_grids(results.counted(), task_names)
    options = {"n_boot": n_boot, "seed": seed, "margin": margin}
    metrics, comparisons = [], []
    for task in task_names:
        for info in infos:
            rows = results.select(info.name, task)
            if len(rows) == 0:
                continue
            metrics.append(summarize(rows, budgets=budgets[task], n_boot=n_boot, seed=seed))
            if info.name != base and len(results.select(base, task)):
                mismatches, unknown = _comparable(
                    results, info.name, base, task, settings, allow_mismatch, settings_study
                )
                kind = "settings" if settings_study else "variant"
                pair = compare_pair(
                    results, info.name, base, task, mismatches=mismatches, kind=kind, **options
                )
                comparisons.append(replace(pair, unknown_settings=tuple(unknown)))
    return Analysis(
        forced=_forced_curves(store, results),
        baseline=base,
        tasks=task_names,
        variants=tuple(infos),
        metrics=tuple(metrics),
        comparisons=as_family(comparisons),
        budgets=budgets,
        results=results,
        n_boot=n_boot,
        seed=seed,
        margin=margin,
        settings=settings,
        allowed_mismatch=allow_mismatch,
        settings_study=settings_study,
    )


def _budget_grids(counted: Results, tasks: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Each task's budget grid: `default_budgets` of the smallest cap among its rows with known
    token counts (none: no grid, and no budget curve)."""
    caps = {t: counted.max_tokens[counted.task == t] for t in tasks}
    return {t: default_budgets(int(cap.min())) if cap.size else () for t, cap in caps.items()}


def _forced_curves(store: Store, results: Results) -> dict[tuple[str, str], BudgetCurve]:
    """Each (variant, task)'s forced-answer curve from the store's forced answers."""
    answers: dict[tuple[str, str], dict[tuple[str, int, int], bool]] = {}
    for row in store.forced():
        answers.setdefault((row.variant, row.task), {})[(row.item_id, row.sample, row.budget)] = row.correct
    return {
        (variant, task): forced_curve(results.select(variant, task), rows)
        for (variant, task), rows in answers.items()
        if len(results.select(variant, task))
    }


def _results(store: Store, tasks: Sequence[str] | None) -> Results:
    results = load_results(store)
    if tasks is not None:
        unknown = sorted(set(tasks) - set(results.task.tolist()))
        if unknown:
            raise QuantscopeError(f"no results for task(s) {unknown} in {store.path}")
        results = results.take(np.isin(results.task, list(tasks)))
    if len(results) == 0:
        raise QuantscopeError(
            f"{store.path} holds no results yet: run `quantscope eval` (or `quantscope demo`)"
        )
    return results


def _comparable(
    results: Results,
    variant: str,
    base: str,
    task: str,
    settings: Mapping[str, OutputSettings],
    allow: bool,
    settings_study: bool,
) -> tuple[list[str], list[str]]:
    """The mismatches between (variant, task) and the baseline (QuantscopeError unless allowed), and
    the comparable settings either side did not record (`comparability.unknown_settings`)."""
    rows, other = results.select(variant, task), results.select(base, task)
    if settings_study and not same_model(rows, other, settings):
        raise QuantscopeError(
            f"a settings study compares runs of one model: {variant!r} and {base!r} were generated from "
            "different models; drop --settings-study, or pass a --baseline of the same model"
        )
    problems = setting_mismatches(rows, other, settings, settings_study=settings_study)
    if problems and not allow:
        raise QuantscopeError(
            f"cannot compare {variant!r} with {base!r} on {task!r}: they were generated differently "
            f"({'; '.join(problems)}); evaluate both the same way, or pass --allow-mismatch (the report "
            "will say so)"
        )
    return problems, unknown_settings(rows, other, settings)


def variant_infos(store: Store) -> list[VariantInfo]:
    """Every stored variant as analysis sees it (with its memory figure and source), by name."""
    return [_info(v) for v in store.variants()]


def _info(variant: Variant) -> VariantInfo:
    stored = variant.memory_source or "store"  # figures stored before sources were: "store"
    memory = variant_memory(variant.model_path, variant.memory_bytes, hub=False, given_source=stored)
    known = replace(variant, memory_bytes=memory.nbytes, memory_source=memory.source)
    return VariantInfo(**asdict(known), evaluated=describe_twin(variant.model_path))


def budget_curves(analysis: Analysis, task: str) -> dict[str, BudgetCurve]:
    """Each variant's accuracy-at-budget curve on `task`, all on the task's shared grid."""
    return {m.variant: m.budget_curve for m in analysis.metrics if m.task == task}
