"""Analysis over the store: per (variant, task) metrics, budget curves (and, later, comparison and
recommendation). Everything reads the store through `load_results`, never the generated text.
"""

from quantscope.analysis.metrics import (
    BudgetCurve,
    Results,
    TaskMetrics,
    TokenStats,
    accuracy_at_budget,
    budget_curve,
    load_results,
    summarize,
    summarize_all,
)

__all__ = [
    "BudgetCurve",
    "Results",
    "TaskMetrics",
    "TokenStats",
    "accuracy_at_budget",
    "budget_curve",
    "load_results",
    "summarize",
    "summarize_all",
]
