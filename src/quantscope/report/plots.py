"""The report's figures, built with plotly from an `Analysis` (and a `Recommendation`).

Each function returns a plain JSON-ready figure dict (`data` + `layout`) that the HTML report
hands to `Plotly.newPlot`. Variants keep one colour across every figure.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative

from quantscope.analysis.compare import Analysis
from quantscope.analysis.recommend import Recommendation
from quantscope.util import size_unit

CDF_POINTS = 200
_HEIGHT = 400


def variant_colors(analysis: Analysis) -> dict[str, str]:
    """One colour per variant, in analysis order (the baseline gets the first)."""
    palette = qualitative.D3 + qualitative.Set2
    return {name: palette[i % len(palette)] for i, name in enumerate(analysis.variant_names)}


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    layout = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "template": "plotly_white",
        "height": _HEIGHT,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": y}},
        "legend": {"orientation": "h", "y": -0.2},
    }
    layout.update(extra)
    return layout


def _plain(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON data (numpy arrays become lists)."""
    return json.loads(pio.to_json(fig, validate=False))


def pareto_figure(analysis: Analysis, recommendation: Recommendation) -> dict[str, Any]:
    """Mean accuracy over tasks (%) against weight memory, the Pareto frontier, budget and pick.

    Variants with unknown memory are left out. With one task the error bars are its 95% CI.
    """
    points = [
        c for c in recommendation.candidates if c.memory_bytes is not None and not math.isnan(c.accuracy)
    ]
    unit, scale = size_unit(max((c.memory_bytes or 0) for c in points) if points else 1)
    colors = variant_colors(analysis)
    fig = go.Figure()
    by_name = {c.variant: c for c in points}
    frontier = [by_name[n] for n in recommendation.frontier if n in by_name]
    if len(frontier) > 1:
        fig.add_trace(
            go.Scatter(
                x=[(c.memory_bytes or 0) / scale for c in frontier],
                y=[100 * c.accuracy for c in frontier],
                mode="lines",
                line={"color": "#999", "dash": "dot", "shape": "hv"},
                name="Pareto frontier (fits)",
                hoverinfo="skip",
            )
        )
    single = len(analysis.tasks) == 1
    for c in points:
        metric = analysis.metric(c.variant, analysis.tasks[0]) if single else None
        picked = recommendation.pick is not None and c.variant == recommendation.pick.variant
        per_task = "<br>".join(f"{t}: {100 * a:.1f}%" for t, a in c.task_accuracy.items())
        fig.add_trace(
            go.Scatter(
                x=[(c.memory_bytes or 0) / scale],
                y=[100 * c.accuracy],
                mode="markers+text",
                text=[c.variant + (" ★" if picked else "")],
                textposition="top center",
                marker={
                    "size": 16 if picked else 11,
                    "color": colors.get(c.variant, "#444"),
                    "symbol": "star" if picked else ("circle" if c.fits else "circle-open"),
                    "line": {"width": 1, "color": "#222"},
                },
                error_y=(
                    {
                        "type": "data",
                        "symmetric": False,
                        "array": [100 * (metric.ci_high - metric.accuracy)],
                        "arrayminus": [100 * (metric.accuracy - metric.ci_low)],
                    }
                    if metric is not None
                    else None
                ),
                name=c.variant,
                hovertemplate=f"<b>{_hover(c.variant)}</b><br>%{{x:.3g}} {unit}<br>{per_task}<extra></extra>",
            )
        )
    shapes = []
    if recommendation.budget_bytes is not None:
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": recommendation.budget_bytes / scale,
                "x1": recommendation.budget_bytes / scale,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#c0392b", "dash": "dash"},
            }
        )
    title = "Accuracy vs memory" + (
        f" (budget {recommendation.budget_bytes / scale:.3g} {unit})" if recommendation.budget_bytes else ""
    )
    fig.update_layout(
        **_layout(
            title, f"weight memory ({unit})", "accuracy, mean over tasks (%)", shapes=shapes, showlegend=False
        )
    )
    return _plain(fig)


def truncation_figure(analysis: Analysis) -> dict[str, Any]:
    """Truncation rate (% of samples that hit the cap) per variant, one bar group per task."""
    fig = go.Figure()
    names = list(analysis.variant_names)
    colors = variant_colors(analysis)
    single = len(analysis.tasks) == 1
    for task in analysis.tasks:
        rates = [analysis.metric(v, task) for v in names]
        fig.add_trace(
            go.Bar(
                x=names,
                y=[100 * m.truncation_rate if m else None for m in rates],
                name=task,
                marker={"color": [colors[v] for v in names]} if single else None,
                text=[f"{100 * m.truncation_rate:.1f}%" if m else "" for m in rates],
                textposition="outside",
                hovertemplate="%{x}: %{y:.1f}% truncated<extra>" + _hover(task) + "</extra>",
            )
        )
    layout = _layout("Truncated at the token cap", "variant", "samples truncated (%)", barmode="group")
    layout["yaxis"]["rangemode"] = "tozero"
    fig.update_layout(**layout, showlegend=len(analysis.tasks) > 1)
    return _plain(fig)


def budget_figure(analysis: Analysis, task: str) -> dict[str, Any]:
    """Accuracy (%) had generation been capped at each budget (tokens), one line per variant."""
    colors = variant_colors(analysis)
    fig = go.Figure()
    for m in analysis.metrics:
        if m.task != task:
            continue
        fig.add_trace(
            go.Scatter(
                x=list(m.budget_curve.budgets),
                y=[100 * a for a in m.budget_curve.accuracy],
                mode="lines+markers",
                name=m.variant,
                line={"color": colors.get(m.variant), "width": 3 if m.variant == analysis.baseline else 2},
                marker={"size": 5},
                hovertemplate=f"{_hover(m.variant)}: %{{y:.1f}}% at %{{x}} tokens<extra></extra>",
            )
        )
        forced = analysis.forced.get((m.variant, task))
        if forced is not None and forced.budgets:
            fig.add_trace(
                go.Scatter(
                    x=list(forced.budgets),
                    y=[100 * a for a in forced.accuracy],
                    mode="lines+markers",
                    name=f"{m.variant} (forced)",
                    line={"color": colors.get(m.variant), "width": 2, "dash": "dash"},
                    marker={"size": 7, "symbol": "diamond"},
                    hovertemplate=f"{_hover(m.variant)} forced to answer: %{{y:.1f}}% at %{{x}} tokens"
                    "<extra></extra>",
                )
            )
    title = f"Accuracy at a token budget — {task}"
    if any(t == task for _, t in analysis.forced):
        title += " (solid: finished within it; dashed: forced to answer there)"
    fig.update_layout(**_layout(title, "token budget", "accuracy (%)"))
    return _plain(fig)


def thinking_cdf_figure(analysis: Analysis, task: str) -> dict[str, Any]:
    """Empirical CDF of thinking tokens per variant on `task` (truncated samples sit at the cap)."""
    colors = variant_colors(analysis)
    fig = go.Figure()
    for name in analysis.variant_names:
        rows = analysis.results.select(name, task).counted()
        if len(rows) == 0:
            continue
        x, y = ecdf(rows.thinking_tokens)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                line={
                    "shape": "hv",
                    "color": colors.get(name),
                    "width": 3 if name == analysis.baseline else 2,
                },
                name=name,
                hovertemplate=f"{_hover(name)}: %{{y:.0f}}% think ≤ %{{x}} tokens<extra></extra>",
            )
        )
    layout = _layout(f"Thinking length — {task}", "thinking tokens", "samples (%, cumulative)")
    layout["yaxis"]["range"] = [0, 101]
    fig.update_layout(**layout)
    return _plain(fig)


def ecdf(values: np.ndarray, points: int = CDF_POINTS) -> tuple[list[float], list[float]]:
    """An empirical CDF (x: sorted values, y: % of samples ≤ x), thinned to at most `points` steps."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = ordered.size
    if n == 0:
        return [], []
    index = np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(np.int64))
    return [0.0, *ordered[index].tolist()], [0.0, *(100.0 * (index + 1) / n).tolist()]


def _hover(text: str) -> str:
    """Plotly renders hover text as HTML: escape names that come from the user."""
    return html.escape(text)


def all_figures(analysis: Analysis, recommendation: Recommendation) -> dict[str, dict[str, Any]]:
    """Every figure of the report, keyed by the id of the element it is drawn into."""
    figures = {
        "plot-pareto": pareto_figure(analysis, recommendation),
        "plot-truncation": truncation_figure(analysis),
    }
    for i, task in enumerate(analysis.tasks):
        figures[f"plot-budget-{i}"] = budget_figure(analysis, task)
        figures[f"plot-thinking-{i}"] = thinking_cdf_figure(analysis, task)
    return figures
