"""Metrics: avg@k, bootstrap CI, pass@k, truncation, token stats, accuracy at a budget."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from quantscope.analysis import load_results, summarize, summarize_all
from quantscope.analysis.metrics import (
    accuracy_at_budget,
    bootstrap_ci,
    budget_curve,
    default_budgets,
    pass_at_k,
    results_from_columns,
    token_stats,
)
from quantscope.errors import QuantscopeError
from quantscope.store.database import Store
from quantscope.store.rows import ResultRow, RunRecord, Variant


def make_results(rows: list[tuple[str, int, bool, str, int]], cap: int = 100, variant: str = "v"):
    """rows: (item, sample, correct, finish_reason, completion_tokens); thinking = 3/4 of them."""
    items, samples, correct, finish, tokens = zip(*rows, strict=True)
    thinking = [t * 3 // 4 for t in tokens]
    return results_from_columns(
        {
            "variant": [variant] * len(rows),
            "task": ["t"] * len(rows),
            "item_id": items,
            "sample": samples,
            "correct": correct,
            "finish_reason": finish,
            "completion_tokens": tokens,
            "thinking_tokens": thinking,
            "answer_tokens": [t - h for t, h in zip(tokens, thinking, strict=True)],
            "max_tokens": [cap] * len(rows),
            "seconds": [1.0] * len(rows),
        }
    )


# Item a: both right (20, 60 tokens); item b: one right at 90 tokens, one cut at the cap;
# item c: both wrong, finished.
ROWS = [
    ("a", 0, True, "stop", 20),
    ("a", 1, True, "stop", 60),
    ("b", 0, True, "stop", 90),
    ("b", 1, False, "length", 100),
    ("c", 0, False, "stop", 30),
    ("c", 1, False, "stop", 40),
]


def test_summary_of_a_hand_computed_run() -> None:
    metrics = summarize(make_results(ROWS))
    assert (metrics.variant, metrics.task, metrics.n_items, metrics.n_samples, metrics.k) == (
        "v",
        "t",
        3,
        6,
        2,
    )
    assert metrics.max_tokens == 100
    assert metrics.accuracy == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert metrics.pass_at_k == pytest.approx(2 / 3)  # a and b have a right answer among 2
    assert metrics.truncation_rate == pytest.approx(1 / 6)
    assert metrics.accuracy_finished == pytest.approx(3 / 5)
    assert metrics.completion_tokens.mean == pytest.approx(340 / 6)
    assert metrics.completion_tokens.median == pytest.approx(50.0)
    assert metrics.thinking_tokens.mean == pytest.approx(sum(t * 3 // 4 for *_, t in ROWS) / 6)
    assert metrics.ci_low <= metrics.accuracy <= metrics.ci_high
    assert metrics.budget_curve.budgets[-1] == 100
    assert metrics.budget_curve.accuracy[-1] == pytest.approx(metrics.accuracy)


def test_accuracy_at_budget_counts_longer_generations_as_cut() -> None:
    results = make_results(ROWS)
    assert accuracy_at_budget(results, 100) == pytest.approx(0.5)
    assert accuracy_at_budget(results, 89) == pytest.approx((1.0 + 0.0 + 0.0) / 3)  # b's 90-token answer cut
    assert accuracy_at_budget(results, 59) == pytest.approx((0.5 + 0 + 0) / 3)
    assert accuracy_at_budget(results, 19) == 0.0
    curve = budget_curve(results, [20, 60, 90, 100])
    assert curve.accuracy == pytest.approx((1 / 6, 1 / 3, 0.5, 0.5))
    assert curve.truncation_rate == pytest.approx((5 / 6, 2 / 6, 1 / 6, 1 / 6))
    with pytest.raises(QuantscopeError, match="exceeds the run's cap"):
        accuracy_at_budget(results, 101)
    with pytest.raises(QuantscopeError, match="positive"):
        accuracy_at_budget(results, 0)


def test_default_budget_grid_ends_at_the_cap() -> None:
    assert default_budgets(32768)[-1] == 32768
    assert default_budgets(32768)[0] == 2048
    assert len(default_budgets(32768)) == 16
    assert default_budgets(4, points=16) == (1, 2, 3, 4)


def test_avg_at_k_weighs_items_equally_when_sample_counts_differ() -> None:
    rows = [("a", 0, True, "stop", 5)] + [("b", j, False, "stop", 5) for j in range(3)]
    metrics = summarize(make_results(rows))
    assert metrics.accuracy == pytest.approx(0.5)  # not 1/4
    assert metrics.k == 1


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 5, 2), (8, 3, 8), (4, 4, 2)])
def test_pass_at_k_matches_counting_subsets(n: int, c: int, k: int) -> None:
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(outcomes, k))
    expected = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(np.array([n]), np.array([c]), k)[0] == pytest.approx(expected)
    assert math.comb(n, k) == len(subsets)


def test_pass_at_k_needs_enough_samples() -> None:
    with pytest.raises(QuantscopeError, match="at least 3 samples"):
        pass_at_k(np.array([2]), np.array([1]), 3)


def test_bootstrap_ci_is_seeded_and_sensible() -> None:
    scores = np.random.default_rng(1).random(200) < 0.3
    scores = scores.astype(float)
    first, second = bootstrap_ci(scores, seed=5), bootstrap_ci(scores, seed=5)
    assert first == second
    low, high = first
    assert low < scores.mean() < high
    assert 0.08 < high - low < 0.16  # about ±1.96·sqrt(.3·.7/200) ≈ ±0.064
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([])))


def test_token_stats_and_empty_selection() -> None:
    stats = token_stats(np.arange(1, 11))
    assert (stats.mean, stats.median, stats.p90) == pytest.approx((5.5, 5.5, 9.1))
    with pytest.raises(QuantscopeError, match="no rows"):
        summarize(make_results(ROWS), variant="other")


def test_summarize_all_splits_pairs_and_accuracy_finished_is_nan_when_all_cut() -> None:
    cut = make_results([("a", 0, False, "length", 100)], variant="w")
    both = make_results(ROWS)
    merged = results_from_columns(
        {
            name: list(getattr(both, field)) + list(getattr(cut, field))
            for name, field in [
                ("variant", "variant"),
                ("task", "task"),
                ("item_id", "item_id"),
                ("sample", "sample"),
                ("correct", "correct"),
                ("completion_tokens", "completion_tokens"),
                ("thinking_tokens", "thinking_tokens"),
                ("answer_tokens", "answer_tokens"),
                ("max_tokens", "max_tokens"),
                ("seconds", "seconds"),
            ]
        }
        | {"finish_reason": ["length" if t else "stop" for t in list(both.truncated) + list(cut.truncated)]}
    )
    metrics = summarize_all(merged)
    assert [(m.variant, m.n_samples) for m in metrics] == [("v", 6), ("w", 1)]
    assert math.isnan(metrics[1].accuracy_finished)
    assert metrics[1].truncation_rate == 1.0
    with pytest.raises(QuantscopeError, match="2 \\(variant, task\\) pairs"):
        summarize(merged)


def _fill_store(store: Store, variants: int, items: int, k: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cap = 4096
    for v in range(variants):
        name, spec_hash = f"v{v}", f"h{v}"
        store.put_variant(Variant(name, f"/m/{name}"))
        run = RunRecord(
            spec_hash, name, "t", "transformers", f"/m/{name}", True, 0.6, 0.95, 20, cap, 0, "{}", 0.0
        )
        store.record_run(run)
        rows = []
        for i, j in itertools.product(range(items), range(k)):
            tokens = int(rng.integers(100, cap + 1))
            finish = "length" if tokens == cap else "stop"
            generation = dict(text="x" * 50, thinking="x" * 40, answer="x" * 10)
            rows.append(
                ResultRow(
                    **generation,
                    variant=name,
                    task="t",
                    item_id=f"q{i:04d}",
                    sample=j,
                    spec_hash=spec_hash,
                    seed=j,
                    target="1",
                    completion_tokens=tokens,
                    thinking_tokens=tokens // 2,
                    answer_tokens=tokens - tokens // 2,
                    finish_reason=finish,
                    seconds=1.0,
                    correct=bool(rng.random() < 0.5),
                    extracted="1",
                    created=0.0,
                )
            )
        store.write_results(rows)


def test_load_results_reads_the_store(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        _fill_store(store, variants=2, items=5, k=3)
        results = load_results(store)
        assert len(results) == 30
        assert results.pairs() == [("v0", "t"), ("v1", "t")]
        only = load_results(store, variant="v1")
        assert len(only) == 15 and set(only.variant) == {"v1"}
        metrics = summarize(only)
        assert metrics.n_items == 5 and metrics.k == 3 and metrics.max_tokens == 4096
        assert metrics.accuracy == pytest.approx(float(np.mean(only.correct)))


def test_ten_variants_of_a_thousand_samples_summarize_each_variant(tmp_path: Path) -> None:
    """The size the README's speed claim is about; the time itself is measured by
    benchmarks/analysis_speed.py (a timed assertion fails under load, not on a slow analysis)."""
    with Store(tmp_path) as store:
        _fill_store(store, variants=10, items=250, k=4)
        results = load_results(store)
        metrics = summarize_all(results)
    assert [m.variant for m in metrics] == [f"v{i}" for i in range(10)]
    for m in metrics:
        own = results.correct[results.variant == m.variant]
        assert (m.n_samples, m.n_items, m.k) == (1000, 250, 4)
        assert m.accuracy == pytest.approx(float(np.mean(own)))


def test_majority_vote_over_each_items_samples() -> None:
    from quantscope.analysis.metrics import majority_accuracy

    def results(votes: dict[str, list[tuple[str | None, bool]]]):
        rows = [
            (item, j, ok, "stop", 10) for item, answers in votes.items() for j, (_, ok) in enumerate(answers)
        ]
        made = make_results(rows)
        extracted = [answer for answers in votes.values() for answer, _ in answers]
        return type(made)(**{**made.__dict__, "extracted": np.asarray(extracted, dtype=object)})

    # a: 2 of 3 say the right 7; b: the wrong 5 wins 2-1; c: a 1-1 tie between right and wrong;
    # d: no answer twice beats one right answer
    votes = {
        "a": [("7", True), ("7", True), ("9", False)],
        "b": [("5", False), ("5", False), ("3", True)],
        "c": [("1", True), ("2", False)],
        "d": [(None, False), (None, False), ("4", True)],
    }
    assert majority_accuracy(results(votes)) == pytest.approx(1 / 4)


def test_majority_vote_matches_a_plain_count_of_every_items_votes() -> None:
    """The counted-only-where-needed maj@k against counting every item's votes by hand (plain
    equality: the correct answer is the gold; None is no answer), on seeded random items."""
    from collections import Counter

    from quantscope.analysis.metrics import majority_accuracy

    rng = np.random.default_rng(5)
    for _ in range(30):
        votes = {}
        for item in range(int(rng.integers(1, 40))):
            k = int(rng.integers(1, 7))
            answers = rng.choice(["g", "x", "y", None], size=k, p=[0.45, 0.25, 0.15, 0.15]).tolist()
            votes[f"i{item}"] = [(a, a == "g") for a in answers]
        rows = [(i, j, ok, "stop", 10) for i, answers in votes.items() for j, (_, ok) in enumerate(answers)]
        made = make_results(rows)
        extracted = np.asarray([a for answers in votes.values() for a, _ in answers], dtype=object)
        results = type(made)(**{**made.__dict__, "extracted": extracted})

        def wins(answers: list[tuple[str | None, bool]]) -> bool:
            counts = Counter(a for a, _ in answers)
            top = max(counts.values())
            return [a for a, n in counts.items() if n == top] == ["g"]

        expected = sum(wins(a) for a in votes.values()) / len(votes)
        assert majority_accuracy(results) == pytest.approx(expected)


def test_majority_vote_counts_answers_the_judge_calls_equal_as_one() -> None:
    """Issue 27: maj@k voted on raw boxed strings, so "042" and "42" (AIME) or \\frac and \\dfrac
    (MATH-500) split the wrong answers' vote and a correct minority won."""
    from quantscope.analysis.metrics import majority_accuracy
    from quantscope.tasks.registry import answer_equality

    def item(task: str, answers: list[tuple[str, bool]]):
        made = make_results([("a", j, ok, "stop", 10) for j, (_, ok) in enumerate(answers)])
        extracted = np.asarray([answer for answer, _ in answers], dtype=object)
        return type(made)(**{**made.__dict__, "extracted": extracted}), answer_equality(task)

    aime, same = item("aime25", [("042", False), ("42", False), ("7", True), ("7", True), ("$42$", False)])
    assert majority_accuracy(aime) == 1.0 and majority_accuracy(aime, same) == 0.0
    math, same = item(
        "math500", [("\\frac{1}{2}", False), ("\\dfrac{1}{2}", False), ("\\frac13", True), ("1/3", True)]
    )
    assert majority_accuracy(math) == 1.0 and majority_accuracy(math, same) == 0.0  # a 2-2 tie
    letters, same = item("gpqa_diamond", [("B", False), ("b", False), ("C", True)])
    assert majority_accuracy(letters, same) == 0.0
    assert answer_equality("no-such-task") is None


def test_truncation_rate_is_a_mean_over_items_like_accuracy() -> None:
    """Issue 27: the compare table's rate was per sample, the finding and level lines per item
    (23.6% vs 15.2% after --until-decided gave some items more samples)."""
    rows = [("a", j, False, "length", 100) for j in range(6)] + [(i, 0, True, "stop", 10) for i in "bcd"]
    metrics = summarize(make_results(rows))
    assert metrics.truncation_rate == pytest.approx(1 / 4)  # not 6 / 9


def test_eval_warns_when_the_cap_binds() -> None:
    from rich.console import Console

    from quantscope.cli.views.evaluate import cap_warnings

    cut = summarize(
        make_results([("a", 0, True, "stop", 20), *[(f"x{i}", 0, False, "length", 100) for i in range(3)]])
    )
    fine = summarize(make_results([("a", 0, True, "stop", 20)], variant="w"))
    console = Console(width=200, record=True)
    console.print(cap_warnings([cut, fine]))
    text = console.export_text()
    assert "warning: v on t: 75.0% of generations hit the 100-token cap" in text and " w on " not in text
