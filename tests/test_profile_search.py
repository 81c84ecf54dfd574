"""The knapsack behind the recipe search: optimal against brute force, never over budget."""

from __future__ import annotations

import itertools
import random

import pytest

from quantscope.errors import QuantscopeError
from quantscope.profile.search import solve_knapsack


def _brute_force(options: list[list[tuple[int, float]]], capacity: int) -> float:
    best = float("inf")
    for picks in itertools.product(*(range(len(item)) for item in options)):
        cost = sum(options[i][p][0] for i, p in enumerate(picks))
        if cost <= capacity:
            best = min(best, sum(options[i][p][1] for i, p in enumerate(picks)))
    return best


def test_knapsack_matches_brute_force_and_respects_capacity() -> None:
    rng = random.Random(0)
    for _ in range(60):
        items = []
        for _ in range(rng.randint(1, 6)):
            full = rng.randint(100, 5000)
            items.append([(full, 0.0), (full // 2, rng.random()), (full // 4, rng.random() * 3)])
        low = sum(min(c for c, _ in item) for item in items)
        high = sum(max(c for c, _ in item) for item in items)
        capacity = rng.randint(low, high)
        chosen = solve_knapsack(items, capacity)
        cost = sum(items[i][c][0] for i, c in enumerate(chosen))
        damage = sum(items[i][c][1] for i, c in enumerate(chosen))
        assert cost <= capacity
        assert damage == pytest.approx(_brute_force(items, capacity), abs=1e-12)


def test_knapsack_with_coarse_resolution_still_fits() -> None:
    # 30k items' worth of bytes at a capacity far above the 20k-bin resolution.
    items = [[(10**9 + k, 0.0), (3 * 10**8 + k, 1.0 + k / 100)] for k in range(40)]
    capacity = 40 * 3 * 10**8 + 5 * 10**9
    chosen = solve_knapsack(items, capacity)
    assert sum(items[i][c][0] for i, c in enumerate(chosen)) <= capacity
    kept = [i for i, c in enumerate(chosen) if c == 0]
    assert len(kept) == 7  # 5 GB of headroom buys 7 upgrades of 0.7 GB
    assert kept == list(range(33, 40))  # the most damaging units are the ones kept


def test_knapsack_prefers_free_savings_and_rejects_impossible_budgets() -> None:
    items = [[(1000, 0.0), (250, 0.0)], [(1000, 0.0), (250, 0.5)]]
    assert solve_knapsack(items, 10_000) == [1, 0]  # no damage -> take the bytes
    with pytest.raises(QuantscopeError, match="smallest needs 500 bytes"):
        solve_knapsack(items, 499)
