"""Forced answers on the bundled reasoner: samples cut at a budget, closed, made to answer; the
cut is the model's own prefix token for token; stored per (sample, budget); resumable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from quantscope.engines.base import chat_prompt
from quantscope.errors import QuantscopeError
from quantscope.evaluate.forced import FORCED_CLOSE, cut_at, needs_forcing
from quantscope.evaluate.requests import chat_request
from quantscope.evaluate.runner import build_engine, load_task, run_eval
from quantscope.evaluate.spec import RunSpec
from quantscope.store.database import Store

BUDGETS = (40, 96)


def toy_spec(**changes: object) -> RunSpec:
    from quantscope.toy import checkpoint_dir

    spec = RunSpec(
        model=str(checkpoint_dir()),
        tasks=[{"name": "synthetic", "options": {"per_level": 2, "levels": [5, 6]}}],
        preset="greedy",
        max_tokens=96,
        engine_options={"device": "cpu", "dtype": "float32"},
        variant="bf16",
        forced_budgets=BUDGETS,
        forced_answer_tokens=24,
    )
    return spec.model_copy(update=changes)


@pytest.fixture(scope="module")
def forced_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("forced")
    with Store.open(path) as store:
        summary = run_eval(toy_spec(), store)
    (forced,) = summary.forced
    assert forced.skipped == 0 and forced.failed == 0, forced
    return path


def test_every_sample_unfinished_at_a_budget_is_forced_there_once(forced_store: Path) -> None:
    with Store.open(forced_store) as store:
        rows = store.rows("bf16", "synthetic")
        forced = store.forced("bf16", "synthetic")
    wanted = {(r["item_id"], r["sample"], b) for r in rows for b in BUDGETS if needs_forcing(r, b)}
    assert {(f.item_id, f.sample, f.budget) for f in forced} == wanted
    assert any(b == 96 for _, _, b in wanted), "no sample hit the cap: the B = cap case is untested"
    assert all(f.answer_tokens <= 24 and f.answer for f in forced)
    # a finished sample within the budget is never forced
    finished = {(r["item_id"], r["sample"]) for r in rows if r["finish_reason"] == "stop"}
    assert all((f.item_id, f.sample) not in finished or f.budget < 96 for f in forced)


def test_the_cut_is_the_models_own_prefix_token_for_token(forced_store: Path) -> None:
    spec = toy_spec()
    engine = build_engine(spec)
    task = load_task(spec.tasks[0])
    samples = {s.id: s for s in task.load()}
    with Store.open(forced_store) as store:
        rows = [r for r in store.rows("bf16", "synthetic") if needs_forcing(r, 40)]
    tokenize = engine.tokenizer
    for row in rows:
        request = chat_request(spec, samples[row["item_id"]], row["sample"])
        continuation = cut_at(tokenize, row, 40)
        forced = replace(request, continuation=continuation)
        own = tokenize.encode(row["text"], add_special_tokens=False)[:40]
        close = (
            tokenize.encode(FORCED_CLOSE, add_special_tokens=False)
            if continuation.endswith(FORCED_CLOSE)
            else []
        )
        prompt = tokenize(chat_prompt(tokenize, request), add_special_tokens=False).input_ids
        assert (
            tokenize(chat_prompt(tokenize, forced), add_special_tokens=False).input_ids
            == prompt + own + close
        )
    engine.close()


def test_a_rerun_forces_nothing_again_and_a_budget_over_the_cap_is_refused(forced_store: Path) -> None:
    with Store.open(forced_store) as store:
        before = len(store.forced())
        again = run_eval(toy_spec(), store)
        assert again.forced[0].generated == 0 and len(store.forced()) == before
        with pytest.raises(QuantscopeError, match="above the cap of 96 tokens"):
            run_eval(toy_spec(forced_budgets=(200,)), store)


def test_the_report_draws_the_forced_curve_beside_the_censored_one(
    forced_store: Path, tmp_path: Path
) -> None:
    from quantscope.report.build import build_report

    written = build_report(forced_store, tmp_path / "report.html")
    curve = written.analysis.forced[("bf16", "synthetic")]
    assert curve.budgets == BUDGETS
    censored = written.analysis.metric("bf16", "synthetic")
    # forcing can only add correct answers to the samples the censored curve counts as wrong
    at_cap = censored.budget_curve.accuracy[censored.budget_curve.budgets.index(96)]
    assert curve.accuracy[-1] >= at_cap - 1e-9
    assert "(forced)" in written.path.read_text()
