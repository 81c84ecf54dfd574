"""The HTML report: one self-contained file (plotly's JS inlined, no network) from an `Analysis`.

`render(analysis, recommendation, examples)` returns the page as a string (`build.build_report`
writes it atomically). Every piece of text that comes from the store (model
generations, targets, variant and task names) goes through `html.escape`; the figures travel as
JSON inside a `<script type="application/json">` block with `<`, `>` and `&` escaped, so no
stored string can end a script element.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any

import numpy as np

from quantscope.analysis.capacity import CAPACITY_COLUMNS, CAPACITY_NOTE, capacity_cells
from quantscope.analysis.compare import TRUNCATION_RULE, Analysis, Comparison
from quantscope.analysis.decide import family_note
from quantscope.analysis.levels import levels_note
from quantscope.analysis.metrics import TaskMetrics
from quantscope.analysis.recommend import Candidate, Recommendation
from quantscope.analysis.thinking import median_text
from quantscope.report.plots import all_figures
from quantscope.util import format_size, json_ready, pct, points, pts, ratio, tokens

if TYPE_CHECKING:
    from quantscope.analysis.decide import Delta
    from quantscope.analysis.levels import LevelResult, TaskLevels
    from quantscope.analysis.traces import TraceReport
    from quantscope.store.database import Store

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
    completion_tokens: int | None
    thinking_tokens: int | None
    target: str
    extracted: str | None
    thinking: str
    answer: str


# ---- choosing examples --------------------------------------------------------------------


def select_examples(store: Store, analysis: Analysis, per_variant: int = 3) -> dict[str, list[Example]]:
    """A few generations per variant, the telling ones first: for a quantized variant, items the
    baseline got right and it got wrong (truncated ones first), then a correct one; for the
    baseline, a correct and a wrong one. Reads only the chosen rows' text from `store`."""
    chosen: dict[str, list[tuple[str, str, int, str]]] = {}
    for name in analysis.variant_names:
        picks: list[tuple[str, str, int, str]] = []
        for task in analysis.tasks:
            picks.extend(_pick_rows(analysis, name, task))
        chosen[name] = _spread(picks, per_variant)
    rows = store.generations((name, *pick[:3]) for name, picks in chosen.items() for pick in picks)
    return {
        name: [
            _to_example(name, pick, rows[(name, *pick[:3])]) for pick in picks if (name, *pick[:3]) in rows
        ]
        for name, picks in chosen.items()
    }


def _to_example(name: str, pick: tuple[str, str, int, str], row: Mapping[str, Any]) -> Example:
    task, item, sample, why = pick
    return Example(
        name, task, item, sample, why, bool(row["correct"]), row["finish_reason"], row["completion_tokens"],
        row["thinking_tokens"], row["target"], row["extracted"], row["thinking"], row["answer"],
    )  # fmt: skip


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


# ---- formatting ---------------------------------------------------------------------------


def _size(value: int | None) -> str:
    return "unknown" if value is None else format_size(int(value))


def _delta_cell(c: Comparison | None) -> str:
    if c is None:
        return "<td class='muted'>baseline</td>"
    cls = "" if not c.significant else ("bad" if c.delta < 0 else "good")
    mark = "*" if c.significant else ""
    return (
        f"<td class='{cls}'>{pts(c.delta)}{mark} "
        f"<span class='muted'>[{pts(c.delta_ci_low)}, {pts(c.delta_ci_high)}]</span></td>"
    )


def _verdict_cell(c: Comparison | None) -> str:
    if c is None:
        return "<td class='text muted'>reference</td>"
    cls = {"better": "good", "worse": "bad", "worse: mostly truncation": "warn", "undecided": "muted"}.get(
        c.verdict, ""
    )
    allowed = " <span class='muted'>(allowed mismatch)</span>" if c.mismatches else ""
    return f"<td class='text {cls}'>{escape(c.verdict)}{allowed}</td>"


def _table(head: Sequence[str], rows: Sequence[str], text_columns: Collection[int] = (0,)) -> str:
    """A table; header cells of `text_columns` (indices) are left-aligned like their text cells."""
    cells = "".join(
        f"<th class='text'>{escape(h)}</th>" if i in text_columns else f"<th>{escape(h)}</th>"
        for i, h in enumerate(head)
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# ---- sections -----------------------------------------------------------------------------


def _section(section_id: str, heading: str, body: str, note: str = "") -> str:
    """One report section: its heading, its body and an optional note under it (all HTML)."""
    note_html = f"<p class='note'>{note}</p>" if note else ""
    return f"<section id='{section_id}'><h2>{heading}</h2>{body}{note_html}</section>"


def _recommendation_section(rec: Recommendation) -> str:
    serving = rec.gpu is not None
    rows = []
    for c in rec.candidates:
        picked = rec.pick is not None and c.variant == rec.pick.variant
        held = "".join(f"<td>{escape(cell)}</td>" for cell in capacity_cells(c.serving)) if serving else ""
        rows.append(
            f"<tr class='{'picked' if picked else ''}'><td>{escape(c.variant)}{' ★' if picked else ''}</td>"
            f"<td>{_size(c.memory_bytes)}</td><td>{pct(c.accuracy)}</td><td>{pct(c.truncation_rate)}</td>"
            f"{held}<td>{'yes' if c.fits else 'no'}</td><td>{'yes' if c.on_frontier else ''}</td>"
            f"<td class='text'>{escape(c.reason)}</td></tr>"
        )
    head = ["variant", "memory", "accuracy", "truncated", *(CAPACITY_COLUMNS if serving else ()), "fits"]
    table = _table([*head, "frontier", "why"], rows, (0, len(head) + 1))
    note = f"<p class='rule'>{escape(CAPACITY_NOTE)}</p>" if serving else ""
    body = (
        f"<div class='reco'><p class='pick'>{escape(rec.summary())}</p>{table}"
        f"<p class='rule'><b>Rule.</b> {escape(rec.rule)}</p>{note}</div>"
    )
    return _section("recommendation", "Recommendation", body)


def _findings(analysis: Analysis) -> str:
    notes = []
    for c in analysis.comparisons:
        if c.mismatches:
            notes.append(
                f"<div class='finding'><b>{escape(c.variant)}</b> on <b>{escape(c.task)}</b> was compared "
                f"although it was generated differently: {escape('; '.join(c.mismatches))}.</div>"
            )
        if c.explained_by_truncation:
            notes.append(
                f"<div class='finding'><b>{escape(c.variant)}</b> on <b>{escape(c.task)}</b>: accuracy "
                f"loss mostly explained by truncation — {pts(c.delta)} pts overall, but "
                f"{pct(c.accuracy_finished)} correct among finished generations (baseline "
                f"{pct(c.baseline_accuracy_finished)}); it hit the cap {pts(c.truncation_delta)} pts more "
                f"often and thinks {ratio(c.inflation.median_finished)} as long (median, finished). A "
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
            f"<td>{pct(cand.accuracy if cand else math.nan)}</td>"
            f"<td>{'–' if not comps else pts(delta)}</td>"
            f"<td>{pct(cand.truncation_rate if cand else math.nan)}</td>"
            f"<td>{'1.00×' if info.name == analysis.baseline else ratio(infl)}</td>"
            f"<td class='text'>{escape(verdict)}</td></tr>"
        )
    head = ["variant", "recipe", "weight memory", "accuracy", "Δ vs baseline (pts)", "truncated"]
    table = _table([*head, "thinking × (median, finished)", "verdict"], rows, (0, 1, 7))
    note = (
        f"Accuracy and truncation are means over tasks ({escape(', '.join(analysis.tasks))}); Δ is the "
        f"mean paired difference against <b>{escape(analysis.baseline)}</b>. Per-task confidence intervals "
        "are below."
    )
    return _section("summary", "Summary", table + _evaluated(analysis) + _findings(analysis), note)


def _evaluated(analysis: Analysis) -> str:
    """What was evaluated, for every variant that is not its checkpoint as stored (twins)."""
    lines = [
        f"<li><b>{escape(info.name)}</b>: {escape(info.evaluated)}</li>"
        for info in analysis.variants
        if info.evaluated
    ]
    if not lines:
        return ""
    return f"<p class='note'>What was evaluated:</p><ul class='evaluated'>{''.join(lines)}</ul>"


def _task_rows(analysis: Analysis, task: str) -> list[str]:
    rows = []
    for info in analysis.variants:
        m: TaskMetrics | None = analysis.metric(info.name, task)
        if m is None:
            continue
        c = analysis.comparison(info.name, task)
        cls = "baseline" if info.name == analysis.baseline else ""
        trunc_delta = "" if c is None else f" <span class='muted'>({pts(c.truncation_delta)})</span>"
        inflation = (
            "–" if c is None else f"{ratio(c.inflation.median_all)} / {ratio(c.inflation.median_finished)}"
        )
        items = (
            str(m.n_items)
            if c is None or c.paired_items == c.baseline_items == c.items
            else (f"{c.paired_items} <span class='muted'>of {c.baseline_items}</span>")
        )
        accuracy = (
            f"{pct(m.accuracy)} <span class='muted'>[{pct(m.ci_low)}, {pct(m.ci_high)}]</span>"
            if c is None
            else pct(c.accuracy)
        )
        rows.append(
            f"<tr class='{cls}'><td>{escape(m.variant)}</td><td>{items}</td><td>{m.k}</td>"
            f"<td>{accuracy}</td>"
            f"{_delta_cell(c)}<td>{pct(m.pass_at_k)}</td><td>{pct(m.maj_at_k)}</td>"
            f"<td>{pct(m.truncation_rate)}{trunc_delta}</td>"
            f"<td>{pct(m.accuracy_finished)}</td>"
            f"<td>{median_text(m.thinking)} / {tokens(m.thinking_tokens.mean)}</td>"
            f"<td>{inflation}</td>{_verdict_cell(c)}</tr>"
        )
    return rows


def _tasks_section(analysis: Analysis) -> str:
    parts = []
    head = ["variant", "items", "k", "accuracy", "Δ pts [95% CI]", "pass@k", "maj@k", "truncated (Δ)"]
    head += [
        "acc. finished",
        "thinking tok median (cut-aware) / mean",
        "thinking × median (cut-aware) / finished",
        "verdict",
    ]
    for task in analysis.tasks:
        caps = ", ".join(
            f"{c:,}" if c else "?" for c in sorted({m.max_tokens for m in analysis.metrics if m.task == task})
        )
        parts.append(
            f"<h3>{escape(task)} <span class='muted'>(cap {caps} tokens)"
            f"</span></h3>{_table(head, _task_rows(analysis, task), (0, len(head) - 1))}"
        )
    note = (
        "Accuracy is the baseline's own (with its 95% CI) and, for a variant, its accuracy on the items it "
        "shares with the baseline; items reads 'shared of the baseline's' when the variant ran fewer. "
        "* significant: the paired t-test over items rejects no difference after Holm's correction (the 95% "
        f"CI shown is its own). Equivalent: the paired 90% CI lies within ±{100 * analysis.margin:g} points. "
        "Truncated is the mean over items of each item's share of samples cut at the cap. The cut-aware "
        "median thinking is the Kaplan–Meier median: a generation cut at the cap while thinking counts as at "
        "least its length (≥N: half or more were cut, the median lies beyond the cap); the mean counts it at "
        "the cap. Thinking × is the variant's median over the baseline's, cut-aware or over the generations "
        "that finished. "
        f"{escape(family_note(len(analysis.comparisons), analysis.margin))} {escape(TRUNCATION_RULE)}."
    )
    return _section("tasks", "Per task", "".join(parts) + _undecided(analysis), note)


def _findings_section(analysis: Analysis, traces: TraceReport | None, levels: Sequence[TaskLevels]) -> str:
    """The finding per variant and task in words, at the top (`traces.thinking_findings`)."""
    from quantscope.analysis.traces import thinking_findings

    if traces is None or not analysis.comparisons:
        return ""
    items = []
    for line in thinking_findings(analysis, traces, levels):
        head, _, rest = line.partition(": ")
        items.append(f"<li><b>{escape(head)}</b>: {escape(rest)}</li>")
    note = (
        "Against the baseline, on the items both ran: the median thinking tokens (Kaplan–Meier, a "
        "generation cut while thinking counting as at least its length, with the ratio's bootstrap 95% "
        "CI over items), the truncation rate (significant: the paired bootstrap 95% CI over items "
        "excludes 0), the level where it rose most when it rose "
        "significantly there (see 'By level'), the accuracy verdict, and the trace signals that moved "
        "significantly (see 'Why thinking differs')."
    )
    return _section("findings", "Findings", f"<ul class='findings'>{''.join(items)}</ul>", note)


def _traces_section(traces: TraceReport | None) -> str:
    """Why thinking differs (`analysis.traces`): per task, the baseline's signals and each
    variant's with its paired delta and 95% CI over items."""
    if traces is None or not traces.stats:
        return ""
    head = ["variant", "loops", "truncated while looping", "truncated while progressing"]
    head += ["hesitations / 1k thinking tokens", "found, not given", "first found at (median)"]
    comparisons = {(c.variant, c.task): c for c in traces.comparisons}
    parts = []
    for task in sorted({s.task for s in traces.stats}):
        rows = []
        for stat in sorted(
            (s for s in traces.stats if s.task == task),
            key=lambda s: (s.variant != traces.baseline, s.variant),
        ):
            c = comparisons.get((stat.variant, task))
            cells = [
                _trace_cell(stat.loop_rate, c and c.loop_rate),
                _trace_cell(stat.truncated_looping, c and c.truncated_looping),
                _trace_cell(stat.truncated_progressing, c and c.truncated_progressing),
                _trace_cell(stat.hesitations_per_k, c and c.hesitations_per_k, rate=True),
                _trace_cell(stat.not_committed, c and c.not_committed),
                f"<td>{pct(stat.first_found, 0)}</td>",
            ]
            rows.append(f"<tr><td class='text'>{escape(stat.variant)}</td>{''.join(cells)}</tr>")
        false = traces.stat(traces.baseline, task)
        fp = ""
        if false is not None and false.false_found is not None:
            rate = pct(false.false_found)
            fp = f" <span class='muted'>(found-detector false positives on the baseline: {rate})</span>"
        parts.append(f"<h3>{escape(task)}{fp}</h3>{_table(head, rows)}")
    markers = ", ".join(traces.rules.markers)
    note = (
        "Read from the stored text, no judge model. Loops: the generation ends in a block of characters "
        f"repeated at least {traces.rules.loop_repeats} times ({traces.rules.loop_chars}+ characters; the "
        "cap may cut the last copy anywhere, and runs without spaces such as '5555…' count). Truncated "
        "while looping / progressing: hit the cap in a loop / not in one. Hesitations: the markers "
        f"{escape(markers)} where they open a sentence or clause ('But wait' and 'Hmm, wait' once; 'but', "
        "'however' in prose are not hesitations) per 1,000 thinking tokens. Found, not given (math "
        "tasks): the gold answer stated as a conclusion in the thinking (a box, 'the answer is', 'final "
        "answer', a sentence opening 'So', 'Thus', 'Therefore'; intervals with their brackets) while "
        "the final answer is wrong or missing; first found: where that statement starts, as a "
        "share of the thinking. A variant's cells add its paired difference from the baseline with the "
        "bootstrap 95% CI over items; * marks a CI that excludes 0. The false-positive rate is how "
        "often another item's answer is 'found' in the baseline's correct traces."
    )
    return _section("traces", "Why thinking differs", "".join(parts), note)


def _levels_section(levels: Sequence[TaskLevels], baseline: str) -> str:
    """Per task with levels (`analysis.levels`): one row per level, one column per variant; each
    cell the accuracy with its paired delta, the truncation rate with its paired change, and
    the median thinking tokens (Kaplan–Meier, cut generations censored)."""
    if not levels:
        return ""
    parts = []
    for task in levels:
        names = list(dict.fromkeys(r.variant for r in task.results))
        rows = []
        for level in task.levels:
            cells = "".join(_level_cell(task.result(name, level)) for name in names)
            rows.append(f"<tr><td class='text'>{escape(task.key)} {escape(level)}</td>{cells}</tr>")
        parts.append(f"<h3>{escape(task.task)}</h3>{_table([task.key, *names], rows)}")
    note = (
        f"Each level's items alone, each variant against {escape(baseline)} on them: accuracy (its paired "
        "delta in points, coloured by the verdict on that level), the share of samples cut off at the cap "
        "(mean over items; the change, * when the paired t-test over the level's items rejects no change) "
        "and the median thinking tokens (Kaplan–Meier: a generation cut while thinking counts as at least "
        "its length; ≥N when half or more were cut). A level holds fewer items than its task, so its "
        "intervals are wider: an undecided level is not a tie. " + escape(levels_note(levels))
    )
    return _section("levels", "By level", "".join(parts), note)


def _level_cell(result: LevelResult | None) -> str:
    if result is None:
        return "<td class='muted'>–</td>"
    m, c, cut = result.metrics, result.comparison, result.truncation
    accuracy, truncated = pct(m.accuracy), pct(m.truncation_rate)
    cls = ""
    if c is not None:
        accuracy += f" <span class='muted'>{pts(c.delta)}</span>"
        cls = {"better": "good", "worse": "bad", "worse: mostly truncation": "warn"}.get(c.verdict, "")
    if cut is not None and cut.items:
        truncated += f" <span class='muted'>{pts(cut.delta)}{'*' if cut.significant else ''}</span>"
    return (
        f"<td class='{cls}'>{accuracy}<br><span class='muted'>cut</span> {truncated}"
        f"<br><span class='muted'>median</span> {median_text(m.thinking)}</td>"
    )


def _trace_cell(value: float, delta: Delta | None, *, rate: bool = False) -> str:
    shown = points(value, rate=True) if rate else pct(value)
    if not delta or delta.items == 0:
        return f"<td>{shown}</td>"
    cls = "warn" if delta.significant and delta.delta > 0 else ""
    mark = "*" if delta.significant else ""
    ci = f"[{points(delta.ci_low, rate=rate)}, {points(delta.ci_high, rate=rate)}]"
    change = points(delta.delta, rate=rate, signed=True) + mark
    return f"<td class='{cls}'>{shown} {change} <span class='muted'>{ci}</span></td>"


def _undecided(analysis: Analysis) -> str:
    lines = [
        f"<li><b>{escape(c.variant)}</b> on {escape(c.task)}: {escape(c.decision.samples_needed.reason)}</li>"
        for c in analysis.comparisons
        if c.decision.samples_needed is not None
    ]
    return (
        f"<p class='note'>What would decide the undecided comparisons:</p><ul>{''.join(lines)}</ul>"
        if lines
        else ""
    )


def _plots_section(analysis: Analysis) -> str:
    plots = ["pareto", "truncation"] + [
        f"{kind}-{i}" for i in range(len(analysis.tasks)) for kind in ("budget", "thinking")
    ]
    grid = (
        "<div class='grid'>"
        + "".join(f"<div class='plot' id='plot-{name}'></div>" for name in plots)
        + "</div>"
    )
    note = (
        "Accuracy at a budget counts a sample as correct only when it was correct and finished within that "
        "many tokens, computed from the recorded token counts (one run at the cap). Open markers in the "
        "accuracy–memory plot do not fit the budget; ★ is the pick."
    )
    return _section("plots", "Accuracy, memory and thinking", grid, note)


def _clip(text: str) -> str:
    if len(text) <= CLIP_HEAD + CLIP_TAIL + 200:
        return escape(text)
    omitted = len(text) - CLIP_HEAD - CLIP_TAIL
    return (
        f"{escape(text[:CLIP_HEAD])}\n\n[… {omitted:,} characters omitted …]\n\n{escape(text[-CLIP_TAIL:])}"
    )


def _length(e: Example) -> str:
    if e.completion_tokens is None or e.thinking_tokens is None:
        return "token counts unknown"
    return f"{e.completion_tokens:,} tokens ({e.thinking_tokens:,} thinking)"


def _example(e: Example) -> str:
    tag = (
        "<span class='tag cut'>truncated</span>"
        if e.finish_reason == "length"
        else ("<span class='tag ok'>correct</span>" if e.correct else "<span class='tag wrong'>wrong</span>")
    )
    return (
        f"<details class='example'><summary>{escape(e.task)} · item {escape(e.item_id)} · sample {e.sample} "
        f"{tag} <span class='muted'>— {escape(e.why)}; {_length(e)}</span></summary><div class='body'>"
        f"<div>target <code>{escape(e.target)}</code> · extracted "
        f"<code>{escape(e.extracted or '—')}</code></div>"
        f"<div class='muted'>thinking</div><pre class='gen'>{_clip(e.thinking)}</pre>"
        f"<div class='muted'>answer</div><pre class='gen'>{_clip(e.answer)}</pre></div></details>"
    )


def _examples_section(examples: Mapping[str, Sequence[Example]]) -> str:
    parts = [
        f"<h3>{escape(name)}</h3>{''.join(_example(e) for e in items)}"
        for name, items in examples.items()
        if items
    ]
    return _section("examples", "Example generations", "".join(parts))


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
    traces: TraceReport | None = None,
    levels: Sequence[TaskLevels] = (),
) -> str:
    """The whole report as one HTML string (plotly.js inlined: works offline, no CDN); `traces`
    adds the section on why thinking differs, `levels` the one per level."""
    from plotly.offline import get_plotlyjs

    from quantscope import __version__

    figures = json_ready(all_figures(analysis, recommendation))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(
        (
            f"<main><h1>{escape(title)}</h1><p class='meta'>{escape(source)} · baseline "
            f"<b>{escape(analysis.baseline)}</b> · {len(analysis.variants)} variants · tasks "
            f"{escape(', '.join(analysis.tasks))} · {len(analysis.results):,} generations · {when}</p>",
            _findings_section(analysis, traces, levels),
            _recommendation_section(recommendation),
            _summary_section(analysis, recommendation),
            _plots_section(analysis),
            _tasks_section(analysis),
            _levels_section(levels, analysis.baseline),
            _traces_section(traces),
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
