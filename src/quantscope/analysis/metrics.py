"""Reasoning-aware metrics per (variant, task), computed from the store's recorded token counts.

Everything here is a pure function over numpy arrays (plus `load_results`, which reads them out
of a `Store` without touching the generated text). Definitions:

- accuracy (avg@k): the mean over items of each item's fraction of correct samples, so an item
  with more samples does not weigh more; its 95% CI is a seeded bootstrap over items.
- pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) per item (n samples, c correct),
  averaged over items.
- maj@k: per item, the answer most of its samples extracted (majority vote, as lighteval and
  NeMo-Skills report AIME), answers counted as one when the task's judge would call them equal
  (`tasks.answer_equality`: "042" and "42" on AIME, `\\frac` and `\\dfrac` on MATH-500); the item
  counts as correct when the samples giving that answer were judged correct. Ties go to a correct
  answer only if no wrong answer ties with it.
- truncation rate: the mean over items of each item's fraction of samples whose finish_reason is
  "length" (hit the cap), like accuracy: an item with more samples does not weigh more. Every
  table, finding and level line uses this one definition.
- accuracy at budget B (B <= the run's cap, tokens): a sample counts as correct at B only when it
  was correct and finished within B completion tokens; anything longer would have been cut at B.
  No re-generation is needed: with the same seed, a run capped at B produces the same prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from quantscope.analysis.thinking import ThinkingLength, thinking_censored, thinking_length
from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    from quantscope.store.database import Store

DEFAULT_BOOTSTRAP = 1000
DEFAULT_BUDGET_POINTS = 16


@dataclass(frozen=True, eq=False)
class Results:
    """A columnar view of result rows: one array entry per (variant, task, item, sample).

    Token counts are int64 tokens, 0 where unknown (an import without counts), which
    `tokens_known` marks: token statistics read `counted()`; `max_tokens` is each row's
    generation cap; `seconds` float;
    `spec_hash` names the run a row came from and `prompt_sha` fingerprints its item's prompt and
    target (None for rows stored before fingerprints were kept).
    """

    variant: np.ndarray
    task: np.ndarray
    item_id: np.ndarray
    sample: np.ndarray
    correct: np.ndarray
    truncated: np.ndarray
    completion_tokens: np.ndarray
    thinking_tokens: np.ndarray
    answer_tokens: np.ndarray
    max_tokens: np.ndarray
    seconds: np.ndarray
    spec_hash: np.ndarray
    prompt_sha: np.ndarray
    extracted: np.ndarray
    tokens_known: np.ndarray

    def __len__(self) -> int:
        return int(self.correct.shape[0])

    def pairs(self) -> list[tuple[str, str]]:
        """The distinct (variant, task) pairs present, sorted."""
        return sorted({(str(v), str(t)) for v, t in zip(self.variant, self.task, strict=True)})

    def select(self, variant: str | None = None, task: str | None = None) -> Results:
        """The rows of one variant and/or task."""
        mask = np.ones(len(self), dtype=bool)
        if variant is not None:
            mask &= self.variant == variant
        if task is not None:
            mask &= self.task == task
        return self.take(mask)

    def take(self, index: np.ndarray) -> Results:
        """The rows picked by a boolean mask or an index array."""
        return Results(**{name: getattr(self, name)[index] for name in _FIELDS})

    def counted(self) -> Results:
        """The rows whose token counts are known (all of them, unless some were imported without)."""
        return self if self.tokens_known.all() else self.take(self.tokens_known)


_FIELDS = tuple(Results.__dataclass_fields__)


def results_from_columns(columns: dict[str, Sequence]) -> Results:
    """Build `Results` from plain columns (as `Store.columns` returns them, or from a test).

    Needs variant, task, item_id, sample, correct, finish_reason, completion_tokens,
    thinking_tokens, answer_tokens, max_tokens, seconds; spec_hash and prompt_sha are optional.
    """
    finish = np.asarray(columns["finish_reason"], dtype=object)
    unknown = [None] * len(finish)
    tokens = {name: _counts(columns[name]) for name in _TOKEN_COLUMNS}
    known = np.logical_and.reduce([k for _, k in tokens.values()]) if len(finish) else np.ones(0, bool)
    return Results(
        # fixed-width strings, not objects: selecting a variant's rows compares them, ~10x faster
        variant=np.asarray(columns["variant"], dtype=str),
        task=np.asarray(columns["task"], dtype=str),
        item_id=np.asarray(columns["item_id"], dtype=str),
        sample=np.asarray(columns["sample"], dtype=np.int64),
        correct=np.asarray(columns["correct"], dtype=bool),
        truncated=finish == "length",
        completion_tokens=tokens["completion_tokens"][0],
        thinking_tokens=tokens["thinking_tokens"][0],
        answer_tokens=tokens["answer_tokens"][0],
        max_tokens=np.asarray(columns["max_tokens"], dtype=np.int64),
        seconds=np.asarray(columns["seconds"], dtype=np.float64),
        spec_hash=np.asarray(columns.get("spec_hash", unknown), dtype=object),
        prompt_sha=np.asarray(columns.get("prompt_sha", unknown), dtype=object),
        extracted=np.asarray(columns.get("extracted", unknown), dtype=object),
        tokens_known=known,
    )


_TOKEN_COLUMNS = ("completion_tokens", "thinking_tokens", "answer_tokens")


def _counts(column: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
    """(counts as int64 with unknown as 0, which are known) of one token column (None: unknown)."""
    known = np.fromiter((v is not None for v in column), dtype=bool, count=len(column))
    if known.all():
        return np.asarray(column, dtype=np.int64), known
    return np.asarray([0 if v is None else v for v in column], dtype=np.int64), known


def load_results(store: Store, variant: str | None = None, task: str | None = None) -> Results:
    """Read the numeric columns of the store's rows (optionally one variant / task) into `Results`."""
    names = (
        "variant",
        "task",
        "item_id",
        "sample",
        "correct",
        "finish_reason",
        "completion_tokens",
        "thinking_tokens",
        "answer_tokens",
        "max_tokens",
        "seconds",
        "spec_hash",
        "prompt_sha",
        "extracted",
    )
    return results_from_columns(store.columns(names, variant=variant, task=task))


# ---- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenStats:
    """Mean, median and 90th percentile of a token count over samples (tokens; NaN when empty)."""

    mean: float
    median: float
    p90: float


@dataclass(frozen=True)
class BudgetCurve:
    """Accuracy (avg@k) and truncation rate had generation been capped at each budget (tokens)."""

    budgets: tuple[int, ...]
    accuracy: tuple[float, ...]
    truncation_rate: tuple[float, ...]


@dataclass(frozen=True)
class TaskMetrics:
    """The metrics of one (variant, task).

    `k` is the smallest number of samples any item has (pass@k uses it); `max_tokens` the
    generation cap (tokens); accuracies are fractions in [0, 1]; `accuracy_finished` is the
    accuracy among samples that were not truncated (NaN when all were); token statistics are
    over all samples, truncated ones included (the cap standing in for a cut length), while
    `thinking` is the Kaplan–Meier median thinking with generations cut while thinking censored
    (`analysis.thinking`), the figure to read once the cap binds. Token statistics, `thinking`
    and the budget curve leave out rows whose counts are unknown (NaN / empty when all are).
    """

    variant: str
    task: str
    n_items: int
    n_samples: int
    k: int
    max_tokens: int
    accuracy: float
    ci_low: float
    ci_high: float
    pass_at_k: float
    truncation_rate: float
    maj_at_k: float
    accuracy_finished: float
    thinking_tokens: TokenStats
    answer_tokens: TokenStats
    completion_tokens: TokenStats
    mean_seconds: float
    budget_curve: BudgetCurve = field(default_factory=lambda: BudgetCurve((), (), ()))
    thinking: ThinkingLength = field(default_factory=lambda: thinking_length(np.zeros(0), np.zeros(0)))


# ---- pure functions -----------------------------------------------------------------------


def item_index(item_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Map each row's item id to 0..n_items-1; returns (index per row, n_items)."""
    _, inverse = np.unique(item_ids.astype(str), return_inverse=True)
    return inverse.reshape(-1), int(inverse.max()) + 1 if inverse.size else 0


def per_item_mean(values: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Each item's mean of `values` (rows grouped by the `items` index)."""
    counts = np.bincount(items, minlength=n_items)
    sums = np.bincount(items, weights=values.astype(np.float64), minlength=n_items)
    return sums / np.maximum(counts, 1)


def avg_at_k(correct: np.ndarray, items: np.ndarray, n_items: int) -> float:
    """Accuracy as the mean over items of each item's fraction of correct samples (NaN: no rows)."""
    if n_items == 0:
        return float("nan")
    return float(per_item_mean(correct, items, n_items).mean())


@lru_cache(maxsize=2)
def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of `n` items is drawn in each of `n_boot` resamples with replacement, the
    draws those of `default_rng(seed)`: shape (n_boot, n), float64, read-only. Every seeded
    bootstrap over items here is `counts @ values / n`: the same draws as indexing with them, a
    matrix product instead of n_boot × n gathers (35 -> 4 ms at 12,500 items), and made once per
    (n, n_boot, seed): a study's comparisons resample the same items many times (100 MB each at
    12,500 items, so two are kept)."""
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    counts = np.empty((n_boot, n))
    for row, drawn in enumerate(draws):  # row by row: each count vector stays in cache (25x faster)
        counts[row] = np.bincount(drawn, minlength=n)
    counts.flags.writeable = False
    return counts


def bootstrap_ci(
    item_scores: np.ndarray, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """A percentile bootstrap CI of the mean of per-item scores, resampling items (seeded).

    Returns (low, high); (NaN, NaN) when there are no items.
    """
    n = item_scores.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    means = resample_counts(n, n_boot, seed) @ item_scores.astype(np.float64) / n
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Unbiased pass@k per item: 1 - C(n-c, k) / C(n, k) for n samples of which c are correct.

    Computed as a running product, so it stays exact-ish for any n; every n must be >= k.
    """
    n = np.asarray(n, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    if k < 1 or np.any(n < k):
        raise QuantscopeError(f"pass@{k} needs at least {k} samples per item (k >= 1)")
    miss = np.ones_like(n)
    for i in range(k):
        miss *= np.clip(n - c - i, 0.0, None) / (n - i)
    return 1.0 - miss


def majority_accuracy(results: Results, same: AnswerEquality | None = None) -> float:
    """maj@k: the fraction of items whose majority answer (over their samples) is correct (NaN: no rows).

    Answers vote together when `same(a, b)` (the task's judge's equality; default: equal text);
    every correct answer equals the gold, so the correct ones are one class without asking. A
    sample that extracted no answer votes for "no answer", which is never correct; a tie between a
    correct and a wrong answer counts as wrong (a vote that does not decide is no majority).
    """
    items, n_items = item_index(results.item_id)
    if n_items == 0:
        return float("nan")
    # Most items need no vote count: more than half their samples correct (with an answer) is a
    # majority whatever the others said, none correct is none. Only the rest are counted here.
    k = np.bincount(items, minlength=n_items)
    hits = np.bincount(items, weights=results.correct.astype(np.float64), minlength=n_items)
    unanswered = results.correct & np.fromiter((a is None for a in results.extracted), bool, len(results))
    odd = np.bincount(items, weights=unanswered.astype(np.float64), minlength=n_items) > 0
    sure = (2 * hits > k) & ~odd
    counted = (hits > 0) & ~sure
    wins = int(sure.sum())
    order = np.argsort(items, kind="stable")
    ends = np.cumsum(k)
    for item in np.flatnonzero(counted):
        rows = order[ends[item] - k[item] : ends[item]]
        samples = [
            (None if results.extracted[r] is None else str(results.extracted[r]), bool(results.correct[r]))
            for r in rows
        ]
        classes = _answer_classes(samples, same)
        top = max(len(members) for members in classes)
        leaders = [members for members in classes if len(members) == top]
        wins += all(members[0][0] is not None and all(ok for _, ok in members) for members in leaders)
    return wins / n_items


AnswerEquality = Callable[[str, str], bool]
"""Whether two extracted answers of one task are the same answer, as its judge compares them."""


def _answer_classes(
    samples: Sequence[tuple[str | None, bool]], same: AnswerEquality | None
) -> list[list[tuple[str | None, bool]]]:
    """The samples grouped by answer: the correct ones together, no-answer together, and each wrong
    answer with the first earlier class whose answer `same` calls equal."""
    classes: list[list[tuple[str | None, bool]]] = []
    for answer, correct in samples:
        home = next((c for c in classes if _same_class(c[0], (answer, correct), same)), None)
        if home is None:
            classes.append([(answer, correct)])
        else:
            home.append((answer, correct))
    return classes


def _same_class(
    first: tuple[str | None, bool], sample: tuple[str | None, bool], same: AnswerEquality | None
) -> bool:
    (a, a_ok), (b, b_ok) = first, sample
    if a is None or b is None or a_ok != b_ok:
        return a is None and b is None
    if a_ok or a == b:
        return True
    return same is not None and same(a, b)


def truncation_rate(truncated: np.ndarray, item_ids: np.ndarray) -> float:
    """The mean over items of each item's fraction of samples that hit the token cap (NaN when
    there are none): the one truncation rate of every table (module docstring)."""
    if truncated.size == 0:
        return float("nan")
    items, n_items = item_index(item_ids)
    return float(per_item_mean(truncated, items, n_items).mean())


def token_stats(tokens: np.ndarray) -> TokenStats:
    """Mean / median / p90 of token counts (tokens)."""
    if tokens.size == 0:
        nan = float("nan")
        return TokenStats(nan, nan, nan)
    mean = float(tokens.mean())
    median, p90 = np.percentile(tokens, [50.0, 90.0])
    return TokenStats(mean, float(median), float(p90))


def correct_at_budget(results: Results, budget: int) -> np.ndarray:
    """Per row: would this sample have been correct had generation been capped at `budget` tokens?

    Only rows that finished within `budget` completion tokens keep their judgement. `budget`
    may not exceed any row's cap: what a longer generation would have said is unknown.
    """
    _check_budget(results, budget)
    return results.correct & ~results.truncated & (results.completion_tokens <= budget)


def truncated_at_budget(results: Results, budget: int) -> np.ndarray:
    """Per row: would this sample have been cut had generation been capped at `budget` tokens?"""
    _check_budget(results, budget)
    return results.truncated | (results.completion_tokens > budget)


def accuracy_at_budget(results: Results, budget: int) -> float:
    """Accuracy (avg@k) of one (variant, task) had generation been capped at `budget` tokens."""
    items, n_items = item_index(results.item_id)
    return avg_at_k(correct_at_budget(results, budget), items, n_items)


def forced_curve(results: Results, forced: Mapping[tuple[str, int, int], bool]) -> BudgetCurve:
    """Accuracy (avg@k) at each forced budget of one (variant, task): a sample that finished within
    B keeps its judgement, one that did not counts as its forced answer at B (`forced`: (item id,
    sample, budget) -> correct; `quantscope.evaluate.forced`). A sample with no forced answer at B (its
    text did not re-tokenize to the engine's tokens) is left out at B. Truncation rates are those
    of the censored curve at the same budgets."""
    budgets = sorted({b for _, _, b in forced})
    if len(results) == 0 or not budgets:
        return BudgetCurve((), (), ())
    accuracy = []
    for budget in budgets:
        finished = ~results.truncated & (results.completion_tokens <= budget)
        keys = zip(results.item_id.astype(str), results.sample.astype(int), strict=True)
        answered = [forced.get((item, sample, budget)) for item, sample in keys]
        known = finished | np.array([a is not None for a in answered])
        correct = np.where(finished, results.correct, np.array([bool(a) for a in answered]))
        items, n_items = item_index(results.item_id[known])
        accuracy.append(avg_at_k(correct[known], items, n_items))
    truncation = tuple(truncation_rate(truncated_at_budget(results, b), results.item_id) for b in budgets)
    return BudgetCurve(tuple(budgets), tuple(accuracy), truncation)


def default_budgets(cap: int, points: int = DEFAULT_BUDGET_POINTS) -> tuple[int, ...]:
    """An evenly spaced grid of `points` budgets from cap/points up to the cap (tokens)."""
    grid = np.rint(np.linspace(cap / points, cap, points)).astype(np.int64)
    return tuple(sorted({max(1, int(b)) for b in grid}))


def budget_curve(results: Results, budgets: Sequence[int] | None = None) -> BudgetCurve:
    """Accuracy and truncation rate at each budget (default: `default_budgets` of the cap)."""
    if len(results) == 0:
        return BudgetCurve((), (), ())
    cap = int(results.max_tokens.min())
    grid = tuple(int(b) for b in (budgets if budgets is not None else default_budgets(cap)))
    items, n_items = item_index(results.item_id)
    accuracy = tuple(avg_at_k(correct_at_budget(results, b), items, n_items) for b in grid)
    # the mean over items of each item's cut share (`truncation_rate`), items indexed once
    truncation = tuple(
        float(per_item_mean(truncated_at_budget(results, b), items, n_items).mean()) for b in grid
    )
    return BudgetCurve(grid, accuracy, truncation)


def summarize(
    results: Results,
    variant: str | None = None,
    task: str | None = None,
    *,
    budgets: Sequence[int] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> TaskMetrics:
    """All metrics of one (variant, task); `results` may hold more, `variant`/`task` pick one.

    `budgets` sets the budget curve's grid (tokens, each at most the cap); the CI uses `n_boot`
    bootstrap resamples of items seeded by `seed`.
    """
    results = results.select(variant, task)
    found = results.pairs()
    if len(found) != 1:
        what = "no rows" if not found else f"{len(found)} (variant, task) pairs"
        raise QuantscopeError(f"summarize needs the rows of exactly one variant and task, got {what}")
    ((name, task_name),) = found
    from quantscope.tasks.registry import answer_equality  # lazy: the task's judge module

    same = answer_equality(task_name)
    items, n_items = item_index(results.item_id)
    scores = per_item_mean(results.correct, items, n_items)
    counts = np.bincount(items, minlength=n_items)
    hits = np.bincount(items, weights=results.correct.astype(np.float64), minlength=n_items)
    k = int(counts.min())
    low, high = bootstrap_ci(scores, n_boot=n_boot, seed=seed, level=level)
    finished = ~results.truncated
    counted = results.counted()  # token figures over the rows whose counts are known
    return TaskMetrics(
        variant=name,
        task=task_name,
        n_items=n_items,
        n_samples=len(results),
        k=k,
        max_tokens=int(results.max_tokens.min()),
        accuracy=float(scores.mean()),
        ci_low=low,
        ci_high=high,
        pass_at_k=float(pass_at_k(counts, hits, k).mean()),
        truncation_rate=truncation_rate(results.truncated, results.item_id),
        maj_at_k=majority_accuracy(results, same),
        accuracy_finished=float(results.correct[finished].mean()) if finished.any() else float("nan"),
        thinking_tokens=token_stats(counted.thinking_tokens),
        answer_tokens=token_stats(counted.answer_tokens),
        completion_tokens=token_stats(counted.completion_tokens),
        mean_seconds=float(results.seconds.mean()),
        budget_curve=budget_curve(counted, budgets),
        thinking=thinking_length(
            counted.thinking_tokens, thinking_censored(counted.truncated, counted.answer_tokens)
        ),
    )


def summarize_tasks(store: Store, variant: str, tasks: Sequence[str]) -> list[TaskMetrics]:
    """`summarize` of one variant on each of `tasks` (those with rows), read from `store`."""
    results = load_results(store, variant=variant)
    present = set(results.task.tolist())
    return [summarize(results, variant, task) for task in tasks if task in present]


def summarize_all(results: Results, **options: object) -> list[TaskMetrics]:
    """`summarize` for every (variant, task) pair in `results`, sorted by variant then task."""
    return [summarize(results, v, t, **options) for v, t in results.pairs()]  # type: ignore[arg-type]


def _check_budget(results: Results, budget: int) -> None:
    if budget < 1:
        raise QuantscopeError(f"budget {budget} must be a positive number of tokens")
    if len(results) and budget > int(results.max_tokens.min()):
        raise QuantscopeError(
            f"budget {budget} tokens exceeds the run's cap of {int(results.max_tokens.min())}: "
            "accuracy above the cap is unknown without re-running with a larger --max-tokens"
        )
