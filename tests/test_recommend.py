"""Recommend: Pareto frontier, the pick under a budget, ties going to the smaller variant, and reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantscope.analysis.compare import analyze
from quantscope.analysis.recommend import pareto_frontier, recommend
from quantscope.errors import QuantscopeError
from quantscope.store import Store
from tests.test_compare import add_variant, outcomes, study  # noqa: F401  (study is a fixture)


def test_frontier_drops_dominated_points() -> None:
    points = {"a": (10.0, 0.5), "b": (20.0, 0.7), "c": (20.0, 0.6), "d": (30.0, 0.7), "e": (5.0, 0.5)}
    # a is dominated by e (smaller, as accurate); c by b; d by b (larger, no better)
    assert pareto_frontier(points) == ("e", "b")
    assert pareto_frontier({"x": (1.0, 0.5), "y": (1.0, 0.5)}) == ("x", "y")
    assert pareto_frontier({}) == ()


def test_pick_under_a_budget_with_reasons(study: Path) -> None:  # noqa: F811
    with Store(study) as store:
        rec = recommend(analyze(store), budget_bytes=20_000)
    assert rec.pick is not None and rec.pick.variant == "fp8"
    assert rec.pick.reason == "the most accurate variant that fits"
    assert rec.frontier == ("w4-broken", "w4-long", "fp8")
    reasons = {c.variant: c.reason for c in rec.runners_up}
    assert reasons["big-better"] == "needs 30.00 kB, over the 20.00 kB budget"
    assert reasons["bf16"].startswith("dominated by fp8 (8.50 kB, 90.0%")
    assert reasons["w4-long"] == "-30.0 pts vs fp8, significant on synthetic"
    assert reasons["w4-broken"] == "-40.0 pts vs fp8, significant on synthetic"
    # fitting runners-up first (best first), then the ones that do not fit
    assert [c.variant for c in rec.runners_up] == ["bf16", "w4-long", "w4-broken", "big-better"]
    assert [c.fits for c in rec.runners_up] == [True, True, True, False]
    assert "Pareto frontier" in rec.rule and "2 points" in rec.rule
    assert rec.summary().startswith("For a 20.00 kB budget: run fp8 (8.50 kB, 90.0% accuracy)")


def test_without_a_budget_the_most_accurate_wins(study: Path) -> None:  # noqa: F811
    with Store(study) as store:
        rec = recommend(analyze(store))
    assert rec.pick is not None and rec.pick.variant == "big-better"
    assert {c.variant: c.reason for c in rec.runners_up}[
        "fp8"
    ] == "-10.0 pts vs big-better, significant on synthetic"


def test_nothing_fits(study: Path) -> None:  # noqa: F811
    with Store(study) as store:
        rec = recommend(analyze(store), budget_bytes=4_000)
    assert rec.pick is None and rec.frontier == ()
    assert all(not c.fits and "over the 4.00 kB budget" in c.reason for c in rec.runners_up)
    assert rec.summary() == "No evaluated variant fits a 4.00 kB budget."
    with Store(study) as store, pytest.raises(QuantscopeError, match="positive size"):
        recommend(analyze(store), budget_bytes=0)


def test_a_tie_goes_to_the_smaller_variant(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        add_variant(store, "base", outcomes(60, 1, lambda i, j: i % 10 != 0), memory=100, recipe="bf16")
        # one item worse than the base: -1.7 points, far from significant
        add_variant(store, "small", outcomes(60, 1, lambda i, j: i % 10 != 0 and i != 7), memory=50)
        analysis = analyze(store)
    rec = recommend(analysis)
    assert rec.pick is not None and rec.pick.variant == "small"
    assert rec.pick.reason == "tied with base, the most accurate that fits (-1.7 pts, n.s.), and 50 B smaller"
    assert rec.runners_up[0].reason == "tied with small (+1.7 pts, not significant) but 50 B larger"
    strict = recommend(analysis, tie_tolerance=0.01)
    assert strict.pick is not None and strict.pick.variant == "base"
    assert strict.runners_up[0].reason == "-1.7 pts vs base (beyond the 1-point tie tolerance)"


def test_variants_missing_a_task_or_memory_are_not_candidates(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        for task in ("a", "b"):
            add_variant(
                store, "base", outcomes(5, 1, lambda i, j: True), memory=100, recipe="bf16", task=task
            )
        add_variant(store, "half", outcomes(5, 1, lambda i, j: True), memory=10, task="a")
        for task in ("a", "b"):
            add_variant(store, "nomem", outcomes(5, 1, lambda i, j: True), memory=None, task=task)
        rec = recommend(analyze(store))
    assert rec.pick is not None and rec.pick.variant == "base"
    reasons = {c.variant: c.reason for c in rec.runners_up}
    assert reasons == {
        "half": "not evaluated on b",
        "nomem": "memory unknown (evaluate a quantscope checkpoint, or pass memory_bytes)",
    }


def test_a_single_variant_is_its_own_baseline_and_unknown_memory_is_said(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        add_variant(store, "only", outcomes(5, 1, lambda i, j: True), memory=None)
        analysis = analyze(store)
    assert analysis.baseline == "only" and analysis.comparisons == ()
    rec = recommend(analysis)
    assert rec.pick is None
    assert rec.summary().startswith("No variant can be recommended (memory unknown")
