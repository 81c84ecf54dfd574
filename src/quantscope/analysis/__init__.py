"""Analysis over the store: per (variant, task) metrics and budget curves (`metrics`), paired
comparisons with the baseline (`compare`), and the pick for a memory budget (`recommend`).
Everything reads the store's numeric columns through `load_results`, never the generated text.
"""

from quantscope.analysis.compare import Analysis, Comparison, analyze
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
from quantscope.analysis.recommend import Recommendation, recommend

__all__ = [
    "Analysis",
    "BudgetCurve",
    "Comparison",
    "Recommendation",
    "Results",
    "TaskMetrics",
    "TokenStats",
    "accuracy_at_budget",
    "analyze",
    "budget_curve",
    "load_results",
    "recommend",
    "summarize",
    "summarize_all",
]
