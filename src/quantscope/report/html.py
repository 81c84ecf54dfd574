"""The HTML report: one self-contained file (plotly's JS inlined, no network) from an `Analysis`.

`render(analysis, recommendation, examples)` returns the page as a string; `write_atomic` puts it
on disk through a temp file and a rename. Every piece of text that comes from the store (model
generations, targets, variant and task names) goes through `html.escape`; the figures travel as
JSON inside a `<script type="application/json">` block with `<`, `>` and `&` escaped, so no
stored string can end a script element.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from quantscope.analysis.compare import Analysis, Comparison
from quantscope.analysis.metrics import TaskMetrics
from quantscope.analysis.recommend import Candidate, Recommendation
from quantscope.errors import QuantscopeError
from quantscope.recipe import format_size
from quantscope.report.plots import all_figures

CLIP_HEAD = 2500
CLIP_TAIL = 800


@dataclass(frozen=True)
class Example:
    """One stored generation shown in the report, with why it was chosen (`why`).

    Tokens are completion / thinking tokens; `thinking` and `answer` are the raw model text.
    """

    variant: str
    task: str
    item_id: str
    sample: int
    why: str
    correct: bool
    finish_reason: str
    completion_tokens: int
    thinking_tokens: int
    target: str
    extracted: str | None
    thinking: str
    answer: str


# ---- choosing examples --------------------------------------------------------------------


def select_examples(store_path: Path, analysis: Analysis, per_variant: int = 3) -> dict[str, list[Example]]:
    """A few generations per variant, the telling ones first: for a quantized variant, items the
    baseline got right and it got wrong (truncated ones first), then a correct one; for the
    baseline, a correct and a wrong one. Reads only the chosen rows' text from the store."""
    chosen: dict[str, list[tuple[str, str, int, str]]] = {}
    for name in analysis.variant_names:
        picks: list[tuple[str, str, int, str]] = []
        for task in analysis.tasks:
            picks.extend(_pick_rows(analysis, name, task))
        chosen[name] = _spread(picks, per_variant)
    return _fetch(store_path, chosen)


def _pick_rows(analysis: Analysis, name: str, task: str) -> list[tuple[str, str, int, str]]:
    """(task, item_id, sample, why) candidates for one variant and task, best first."""
    rows = analysis.results.select(name, task)
    if len(rows) == 0:
        return []
    order = np.lexsort((rows.sample, rows.item_id.astype(str)))
    keys = [(str(rows.item_id[i]), int(rows.sample[i])) for i in order]
    correct = {k: bool(rows.correct[i]) for k, i in zip(keys, order, strict=True)}
    cut = {k: bool(rows.truncated[i]) for k, i in zip(keys, order, strict=True)}
    base = analysis.results.select(analysis.baseline, task)
    base_correct = {
        (str(i), int(s)): bool(c) for i, s, c in zip(base.item_id, base.sample, base.correct, strict=True)
    }
    picks = []
    if name != analysis.baseline:
        lost = [k for k in keys if not correct[k] and base_correct.get(k)]
        picks += [(task, *k, "baseline right, this variant cut at the cap") for k in lost if cut[k]]
        picks += [(task, *k, "baseline right, this variant wrong") for k in lost if not cut[k]]
    picks += [(task, *k, "correct") for k in keys if correct[k]][:1]
    picks += [(task, *k, "truncated at the cap") for k in keys if cut[k]][:1]
    picks += [(task, *k, "wrong") for k in keys if not correct[k] and not cut[k]][:1]
    return picks


def _spread(picks: list[tuple[str, str, int, str]], limit: int) -> list[tuple[str, str, int, str]]:
    """Up to `limit` picks, one per distinct reason first, never the same row twice."""
    out: list[tuple[str, str, int, str]] = []
    seen: set[tuple[str, str, int]] = set()
    reasons_done: set[str] = set()
    for first_pass in (True, False):
        for task, item, sample, why in picks:
            if len(out) >= limit:
                return out
            key = (task, item, sample)
            if key in seen or (first_pass and why in reasons_done):
                continue
            seen.add(key)
            reasons_done.add(why)
            out.append((task, item, sample, why))
    return out


def _fetch(
    store_path: Path, chosen: Mapping[str, list[tuple[str, str, int, str]]]
) -> dict[str, list[Example]]:
    """Read the chosen rows' text through a read-only connection (the store's `results_full` view)."""
    query = (
        "SELECT correct, finish_reason, completion_tokens, thinking_tokens, target, extracted, thinking, "
        "answer FROM results_full WHERE variant = ? AND task = ? AND item_id = ? AND sample = ?"
    )
    try:
        db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise QuantscopeError(f"cannot read the store {store_path}: {error}") from error
    try:
        examples: dict[str, list[Example]] = {}
        for name, picks in chosen.items():
            examples[name] = []
            for task, item, sample, why in picks:
                row = db.execute(query, (name, task, item, sample)).fetchone()
                if row is not None:
                    examples[name].append(
                        Example(name, task, item, sample, why, bool(row[0]), row[1], row[2], row[3], *row[4:])
                    )
        return examples
    finally:
        db.close()


# ---- formatting ---------------------------------------------------------------------------


def _pct(value: float, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}%"


def _pts(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:+.1f}"


def _ratio(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}×"


def _tokens(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.0f}"


def _size(value: int | None) -> str:
    return "unknown" if value is None else format_size(int(value))


def _delta_cell(c: Comparison | None) -> str:
    if c is None:
        return "<td class='muted'>baseline</td>"
    cls = "" if not c.significant else ("bad" if c.delta < 0 else "good")
    mark = "*" if c.significant else ""
    return (
        f"<td class='{cls}'>{_pts(c.delta)}{mark} "
        f"<span class='muted'>[{_pts(c.delta_ci_low)}, {_pts(c.delta_ci_high)}]</span></td>"
    )


def _verdict_cell(c: Comparison | None) -> str:
    if c is None:
        return "<td class='text muted'>reference</td>"
    cls = {"significantly worse": "bad", "significantly better": "good"}.get(c.verdict, "")
    if c.explained_by_truncation:
        cls = "warn"
    return f"<td class='text {cls}'>{escape(c.verdict)}</td>"


def _table(head: Sequence[str], rows: Sequence[str], text_columns: Collection[int] = (0,)) -> str:
    """A table; header cells of `text_columns` (indices) are left-aligned like their text cells."""
    cells = "".join(
        f"<th class='text'>{escape(h)}</th>" if i in text_columns else f"<th>{escape(h)}</th>"
        for i, h in enumerate(head)
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# ---- sections -----------------------------------------------------------------------------


def _recommendation_section(rec: Recommendation) -> str:
    rows = []
    for c in rec.candidates:
        picked = rec.pick is not None and c.variant == rec.pick.variant
        rows.append(
            f"<tr class='{'picked' if picked else ''}'><td>{escape(c.variant)}{' ★' if picked else ''}</td>"
            f"<td>{_size(c.memory_bytes)}</td><td>{_pct(c.accuracy)}</td><td>{_pct(c.truncation_rate)}</td>"
            f"<td>{'yes' if c.fits else 'no'}</td><td>{'yes' if c.on_frontier else ''}</td>"
            f"<td class='text'>{escape(c.reason)}</td></tr>"
        )
    table = _table(["variant", "memory", "accuracy", "truncated", "fits", "frontier", "why"], rows, (0, 6))
    return (
        "<section id='recommendation'><h2>Recommendation</h2><div class='reco'>"
        f"<p class='pick'>{escape(rec.summary())}</p>{table}"
        f"<p class='rule'><b>Rule.</b> {escape(rec.rule)}</p></div></section>"
    )


def _findings(analysis: Analysis) -> str:
    notes = []
    for c in analysis.comparisons:
        if c.explained_by_truncation:
            notes.append(
                f"<div class='finding'><b>{escape(c.variant)}</b> on <b>{escape(c.task)}</b>: accuracy "
                f"loss mostly explained by truncation — {_pts(c.delta)} pts overall, but "
                f"{_pct(c.accuracy_finished)} correct among finished generations (baseline "
                f"{_pct(c.baseline_accuracy_finished)}); it hit the cap {_pts(c.truncation_delta)} pts more "
                f"often and thinks {_ratio(c.inflation.median_finished)} as long (median, finished). A "
                "larger token budget may recover most of it.</div>"
            )
    return "".join(notes)


def _summary_section(analysis: Analysis, rec: Recommendation) -> str:
    standing = {c.variant: c for c in rec.candidates}
    rows = []
    for info in analysis.variants:
        comps = [analysis.comparison(info.name, t) for t in analysis.tasks]
        comps = [c for c in comps if c is not None]
        cand: Candidate | None = standing.get(info.name)
        delta = float(np.mean([c.delta for c in comps])) if comps else math.nan
        ratios = [c.inflation.median_finished for c in comps if not math.isnan(c.inflation.median_finished)]
        infl = float(np.mean(ratios)) if ratios else math.nan
        verdicts = sorted({c.verdict for c in comps})
        verdict = "; ".join(verdicts) if comps else "reference"
        cls = "baseline" if info.name == analysis.baseline else ""
        if rec.pick is not None and info.name == rec.pick.variant:
            cls += " picked"
        source = f" <span class='muted'>({escape(info.memory_source)})</span>" if info.memory_source else ""
        rows.append(
            f"<tr class='{cls}'><td>{escape(info.name)}</td>"
            f"<td class='text'>{escape(info.recipe or '–')}</td>"
            f"<td>{_size(info.memory_bytes)}{source}</td>"
            f"<td>{_pct(cand.accuracy if cand else math.nan)}</td>"
            f"<td>{'–' if not comps else _pts(delta)}</td>"
            f"<td>{_pct(cand.truncation_rate if cand else math.nan)}</td>"
            f"<td>{'1.00×' if info.name == analysis.baseline else _ratio(infl)}</td>"
            f"<td class='text'>{escape(verdict)}</td></tr>"
        )
    head = ["variant", "recipe", "weight memory", "accuracy", "Δ vs baseline (pts)", "truncated"]
    table = _table([*head, "thinking × (median, finished)", "verdict"], rows, (0, 1, 7))
    return (
        f"<section id='summary'><h2>Summary</h2>{table}<p class='note'>Accuracy and truncation are "
        f"means over tasks ({escape(', '.join(analysis.tasks))}); Δ is the mean paired difference against "
        f"<b>{escape(analysis.baseline)}</b>. Per-task confidence intervals are below.</p>"
        f"{_findings(analysis)}</section>"
    )


def _task_rows(analysis: Analysis, task: str) -> list[str]:
    rows = []
    for info in analysis.variants:
        m: TaskMetrics | None = analysis.metric(info.name, task)
        if m is None:
            continue
        c = analysis.comparison(info.name, task)
        cls = "baseline" if info.name == analysis.baseline else ""
        trunc_delta = "" if c is None else f" <span class='muted'>({_pts(c.truncation_delta)})</span>"
        inflation = (
            "–" if c is None else f"{_ratio(c.inflation.median_all)} / {_ratio(c.inflation.median_finished)}"
        )
        rows.append(
            f"<tr class='{cls}'><td>{escape(m.variant)}</td><td>{m.n_items}</td><td>{m.k}</td>"
            f"<td>{_pct(m.accuracy)} <span class='muted'>[{_pct(m.ci_low)}, {_pct(m.ci_high)}]</span></td>"
            f"{_delta_cell(c)}<td>{_pct(m.pass_at_k)}</td><td>{_pct(m.truncation_rate)}{trunc_delta}</td>"
            f"<td>{_pct(m.accuracy_finished)}</td>"
            f"<td>{_tokens(m.thinking_tokens.median)} / {_tokens(m.thinking_tokens.mean)} / "
            f"{_tokens(m.thinking_tokens.p90)}</td><td>{inflation}</td>{_verdict_cell(c)}</tr>"
        )
    return rows


def _tasks_section(analysis: Analysis) -> str:
    parts = ["<section id='tasks'><h2>Per task</h2>"]
    head = ["variant", "items", "k", "accuracy [95% CI]", "Δ pts [95% CI]", "pass@k", "truncated (Δ)"]
    head += [
        "acc. finished",
        "thinking tok median / mean / p90",
        "thinking × median all / finished",
        "verdict",
    ]
    for task in analysis.tasks:
        caps = {m.max_tokens for m in analysis.metrics if m.task == task}
        parts.append(
            f"<h3>{escape(task)} <span class='muted'>(cap {', '.join(f'{c:,}' for c in sorted(caps))} tokens)"
            f"</span></h3>{_table(head, _task_rows(analysis, task), (0, len(head) - 1))}"
        )
    parts.append(
        "<p class='note'>* significant: the paired bootstrap 95% CI over items excludes 0. Thinking × is "
        "the variant's thinking tokens over the baseline's; 'all' counts truncated samples at the cap, "
        "'finished' only those that ended on their own.</p></section>"
    )
    return "".join(parts)


def _plots_section(analysis: Analysis) -> str:
    parts = [
        "<section id='plots'><h2>Accuracy, memory and thinking</h2><div class='grid'>",
        "<div class='plot' id='plot-pareto'></div><div class='plot' id='plot-truncation'></div>",
    ]
    for i, _task in enumerate(analysis.tasks):
        parts.append(
            f"<div class='plot' id='plot-budget-{i}'></div><div class='plot' id='plot-thinking-{i}'></div>"
        )
    parts.append(
        "</div><p class='note'>Accuracy at a budget counts a sample as correct only when it was correct and "
        "finished within that many tokens, computed from the recorded token counts (one run at the cap). "
        "Open markers in the accuracy–memory plot do not fit the budget; ★ is the pick.</p></section>"
    )
    return "".join(parts)


def _clip(text: str) -> str:
    if len(text) <= CLIP_HEAD + CLIP_TAIL + 200:
        return escape(text)
    omitted = len(text) - CLIP_HEAD - CLIP_TAIL
    return (
        f"{escape(text[:CLIP_HEAD])}\n\n[… {omitted:,} characters omitted …]\n\n{escape(text[-CLIP_TAIL:])}"
    )


def _example(e: Example) -> str:
    tag = (
        "<span class='tag cut'>truncated</span>"
        if e.finish_reason == "length"
        else ("<span class='tag ok'>correct</span>" if e.correct else "<span class='tag wrong'>wrong</span>")
    )
    return (
        f"<details class='example'><summary>{escape(e.task)} · item {escape(e.item_id)} · sample {e.sample} "
        f"{tag} <span class='muted'>— {escape(e.why)}; {e.completion_tokens:,} tokens "
        f"({e.thinking_tokens:,} thinking)</span></summary><div class='body'>"
        f"<div>target <code>{escape(e.target)}</code> · extracted "
        f"<code>{escape(e.extracted or '—')}</code></div>"
        f"<div class='muted'>thinking</div><pre class='gen'>{_clip(e.thinking)}</pre>"
        f"<div class='muted'>answer</div><pre class='gen'>{_clip(e.answer)}</pre></div></details>"
    )


def _examples_section(examples: Mapping[str, Sequence[Example]]) -> str:
    parts = ["<section id='examples'><h2>Example generations</h2>"]
    for name, items in examples.items():
        if items:
            parts.append(f"<h3>{escape(name)}</h3>{''.join(_example(e) for e in items)}")
    parts.append("</section>")
    return "".join(parts)


_DEFINITIONS = """<section id='definitions'><h2>How to read this</h2><dl class='defs'>
<dt>accuracy</dt><dd>avg@k: per item, the fraction of its k samples judged correct; averaged over items.</dd>
<dt>Δ vs baseline</dt><dd>variant minus baseline accuracy over the items both ran, with a paired bootstrap
95% CI (items resampled together on both sides).</dd>
<dt>truncated</dt><dd>share of samples that hit the token cap (finish_reason "length"); they count as
wrong.</dd>
<dt>acc. finished</dt><dd>accuracy among samples that ended on their own. When it holds while accuracy
drops and truncation rises, the loss is mostly truncation: the quantized model thinks longer, not worse.</dd>
<dt>weight memory</dt><dd>bytes of the stored weights: the footprint prediction or the checkpoint's own files
(store / manifest / files); KV cache and activations come on top.</dd></dl></section>"""


# ---- the page -----------------------------------------------------------------------------


def _asset(name: str) -> str:
    return resources.files("quantscope.report").joinpath(name).read_text(encoding="utf-8")


def figures_json(figures: Mapping[str, Any]) -> str:
    """Figures as JSON safe to place inside a `<script>` element (no `<`, `>` or `&` left)."""
    text = json.dumps(figures, separators=(",", ":"), allow_nan=False, default=_json_default)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(value: Any) -> Any:
    """The same data with NaN / infinite floats replaced by None (JSON null: a gap in a plot)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} in a figure")


def render(
    analysis: Analysis,
    recommendation: Recommendation,
    examples: Mapping[str, Sequence[Example]] | None = None,
    *,
    title: str = "quantscope report",
    source: str = "",
) -> str:
    """The whole report as one HTML string (plotly.js inlined: works offline, no CDN)."""
    from plotly.offline import get_plotlyjs

    from quantscope import __version__

    figures = _finite(all_figures(analysis, recommendation))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(
        (
            f"<main><h1>{escape(title)}</h1><p class='meta'>{escape(source)} · baseline "
            f"<b>{escape(analysis.baseline)}</b> · {len(analysis.variants)} variants · tasks "
            f"{escape(', '.join(analysis.tasks))} · {len(analysis.results):,} generations · {when}</p>",
            _recommendation_section(recommendation),
            _summary_section(analysis, recommendation),
            _plots_section(analysis),
            _tasks_section(analysis),
            _examples_section(examples or {}),
            _DEFINITIONS,
            "</main>",
        )
    )
    return Template(_asset("template.html")).substitute(
        version=escape(__version__),
        title=escape(title),
        css=_asset("report.css"),
        plotly=get_plotlyjs(),
        body=body,
        figures=figures_json(figures),
        driver=_asset("report.js"),
    )


def write_atomic(text: str, out: str | Path) -> Path:
    """Write `text` to `out` through a temp file in the same folder and a rename (bytes: UTF-8)."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
