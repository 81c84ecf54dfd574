"""Compare: paired accuracy deltas, truncation, thinking inflation, baseline and memory, over real stores."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from quantscope.analysis.compare import (
    VERDICT_BETTER,
    VERDICT_EQUIVALENT,
    VERDICT_TRUNCATION,
    VERDICT_UNDECIDED,
    VERDICT_WORSE,
    VariantInfo,
    analyze,
    choose_baseline,
    paired_delta,
    truncation_explains,
)
from quantscope.analysis.metrics import load_results
from quantscope.errors import QuantscopeError
from quantscope.store.database import Store
from quantscope.store.rows import ResultRow, RunRecord, Variant


@dataclass(frozen=True)
class Outcome:
    """One stored generation as a test describes it (tokens are completion tokens)."""

    item: str
    sample: int
    correct: bool
    truncated: bool = False
    tokens: int = 100
    thinking: int | None = None
    text: str = "<think>1+1=2</think>\\boxed{2}"


def add_variant(
    store: Store,
    name: str,
    outcomes: Sequence[Outcome],
    *,
    memory: int | None,
    recipe: str | None = None,
    baseline: bool = False,
    task: str = "synthetic",
    cap: int = 400,
    model_path: str | None = None,
    temperature: float = 1.0,
    prompt_sha: str | None = None,
) -> None:
    """Write a variant, its run record and its rows through the Store API."""
    store.put_variant(Variant(name, model_path or f"/models/{name}", memory, recipe, baseline))
    spec_hash = f"{name}-{task}"
    store.record_run(
        RunRecord(
            spec_hash,
            name,
            task,
            "transformers",
            model_path or f"/models/{name}",
            True,
            temperature,
            0.95,
            20,
            cap,
            0,
            "{}",
            0.0,
        )
    )
    rows = []
    for o in outcomes:
        tokens = cap if o.truncated else o.tokens
        thinking = tokens if o.truncated else (o.thinking if o.thinking is not None else tokens - 10)
        rows.append(
            ResultRow(
                variant=name,
                task=task,
                item_id=o.item,
                sample=o.sample,
                spec_hash=spec_hash,
                seed=o.sample,
                target="2",
                text=o.text,
                thinking=o.text.partition("</think>")[0],
                answer=o.text.partition("</think>")[2],
                completion_tokens=tokens,
                thinking_tokens=thinking,
                answer_tokens=tokens - thinking,
                finish_reason="length" if o.truncated else "stop",
                seconds=0.5,
                correct=o.correct and not o.truncated,
                extracted="2" if o.correct else None,
                created=0.0,
                prompt_sha=prompt_sha or f"sha-{o.item}",
            )
        )
    store.write_results(rows)


def outcomes(
    n_items: int, k: int, correct, truncated=lambda i, j: False, tokens=lambda i, j: 100
) -> list[Outcome]:
    """n_items × k outcomes from per-(item, sample) rules."""
    return [
        Outcome(f"i{i:03d}", j, bool(correct(i, j)), bool(truncated(i, j)), int(tokens(i, j)))
        for i in range(n_items)
        for j in range(k)
    ]


N = 150
"""Items of the study store: enough for "equivalent" at ±2 points (149: `min_items_for_equivalence`)."""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store shaped like the seed study: bf16, an FP8 twin, a variant losing accuracy to
    truncation (thinks 1.5x longer, finished answers as good), and a broken one (no truncation)."""
    path = tmp_path_factory.mktemp("study")
    with Store(path) as store:
        add_variant(store, "bf16", outcomes(N, 2, lambda i, j: i % 10 != 0), memory=16_000, recipe="bf16")
        add_variant(store, "fp8", outcomes(N, 2, lambda i, j: i % 10 != 0), memory=8_500, recipe="fp8")
        add_variant(
            store,
            "w4-long",
            outcomes(
                N, 2, lambda i, j: i % 10 != 0, truncated=lambda i, j: i % 3 == 1, tokens=lambda i, j: 150
            ),
            memory=4_600,
            recipe="w4a16",
        )
        add_variant(store, "w4-broken", outcomes(N, 2, lambda i, j: i % 2 == 0), memory=4_500, recipe="w4a16")
        add_variant(store, "big-better", outcomes(N, 2, lambda i, j: True), memory=30_000)
    return path


def test_identical_variant_has_zero_delta_and_is_equivalent(study: Path) -> None:
    with Store(study) as store:
        analysis = analyze(store)
    assert analysis.baseline == "bf16"
    c = analysis.comparison("fp8", "synthetic")
    assert c is not None
    assert c.paired_items == N
    # issue 27: agreement on every item is no zero-width interval (the floor of one discordant pair)
    assert c.delta == 0.0 and c.delta_ci_low < -0.01 and c.delta_ci_high > 0.01
    assert not c.significant and c.verdict == VERDICT_EQUIVALENT  # issue 11: equivalence needs a CI
    assert c.inflation.median_all == pytest.approx(1.0)


def test_a_handful_of_agreeing_items_is_not_equivalent(tmp_path: Path) -> None:
    """Issue 27, defect 2: 60 items on which both sides agree read "equivalent", CI [0, 0]; fewer
    than 149 items cannot rule out ±2 points even when every one agrees."""
    with Store(tmp_path) as store:
        add_variant(store, "base", outcomes(60, 2, lambda i, j: i % 10 != 0), memory=10, baseline=True)
        add_variant(store, "same", outcomes(60, 2, lambda i, j: i % 10 != 0), memory=5)
        add_variant(store, "one", outcomes(1, 1, lambda i, j: True), memory=4)
        analysis = analyze(store)
    same, one = analysis.comparison("same", "synthetic"), analysis.comparison("one", "synthetic")
    assert (
        same is not None and same.verdict == VERDICT_UNDECIDED and same.delta_ci_low < 0 < same.delta_ci_high
    )
    needed = same.decision.samples_needed
    assert needed is not None and "needs at least 149 items" in needed.reason
    # one shared item, which the variant got right and the baseline wrong: no verdict (was +100 [+100, +100])
    assert one is not None and one.verdict == VERDICT_UNDECIDED and not one.significant


def test_truncation_explains_the_loss(study: Path) -> None:
    with Store(study) as store:
        c = analyze(store).comparison("w4-long", "synthetic")
    assert c is not None
    # a third of items are cut at the cap: 20 of 60 items; 2 of those 20 were wrong anyway.
    assert c.truncation_rate == pytest.approx(20 / 60)
    assert c.truncation_delta == pytest.approx(20 / 60)
    assert c.delta == pytest.approx(-18 / 60)
    assert c.significant and c.delta_ci_high < 0
    # among finished generations the variant is exactly as good as the baseline
    assert c.accuracy_finished == pytest.approx(36 / 40)
    assert c.baseline_accuracy_finished == pytest.approx(0.9)
    assert c.explained_by_truncation and c.verdict == VERDICT_TRUNCATION
    # finished thinking 140 vs 90 tokens; all includes 400-token truncated ones
    assert c.inflation.median_finished == pytest.approx(140 / 90)
    assert c.inflation.mean_finished == pytest.approx(140 / 90)
    assert c.inflation.mean_all == pytest.approx((40 * 140 + 20 * 400) / 60 / 90)


def test_real_accuracy_loss_is_not_blamed_on_truncation(study: Path) -> None:
    with Store(study) as store:
        analysis = analyze(store)
    broken = analysis.comparison("w4-broken", "synthetic")
    better = analysis.comparison("big-better", "synthetic")
    assert broken is not None and better is not None
    assert broken.delta == pytest.approx(0.5 - 0.9)
    assert broken.verdict == VERDICT_WORSE and not broken.explained_by_truncation
    assert broken.truncation_delta == 0.0
    assert better.delta == pytest.approx(0.1) and better.verdict == VERDICT_BETTER
    assert better.delta_ci_low > 0


def test_ci_matches_an_independent_bootstrap(study: Path) -> None:
    with Store(study) as store:
        results = load_results(store)
    ours = results.select("w4-broken", "synthetic")
    theirs = results.select("bf16", "synthetic")
    delta, low, high, paired = paired_delta(ours, theirs, n_boot=2000, seed=3)
    # per-item differences are exactly -1 (30 items), +1 (6 items) or 0; resample them by hand
    diff = np.array([float(i % 2 == 0) - float(i % 10 != 0) for i in range(N)])
    rng = np.random.default_rng(3)
    means = diff[rng.integers(0, N, size=(2000, N))].mean(axis=1)
    assert (delta, low, high, paired) == pytest.approx((diff.mean(), *np.percentile(means, [2.5, 97.5]), N))


def test_pairing_uses_only_shared_items(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        add_variant(store, "base", outcomes(10, 1, lambda i, j: i < 5), memory=10, baseline=True)
        # the variant ran only the first 4 items, all right; the baseline got those right too
        add_variant(store, "v", outcomes(4, 1, lambda i, j: True), memory=5)
        c = analyze(store).comparison("v", "synthetic")
    assert c is not None
    assert c.paired_items == 4
    assert c.delta == 0.0
    # issue 11: accuracies shown next to a delta are computed on the same items (was 0.5, the
    # baseline's own accuracy over all ten of its items); coverage is kept apart
    assert c.baseline_accuracy == pytest.approx(1.0) and c.accuracy == pytest.approx(1.0)
    assert (c.items, c.baseline_items) == (4, 10)
    assert c.coverage == "4 shared items (v ran 4, base ran 10)"


def test_truncation_rule_edges() -> None:
    # loss of 10 points, 10 more points truncated, finished accuracy holds: explained
    assert truncation_explains(-0.10, 0.10, 0.9, 0.9)[0]
    # the same truncation but finished accuracy collapsed: the model is broken, not just long-winded
    assert not truncation_explains(-0.10, 0.10, 0.9, 0.6)[0]
    # truncation too small to account for half the loss
    assert not truncation_explains(-0.30, 0.05, 0.9, 0.9)[0]
    # no loss, nothing to explain
    assert not truncation_explains(0.02, 0.10, 0.9, 0.9)[0]
    # everything truncated: finished accuracy unknown, so it cannot be said to hold
    assert not truncation_explains(-0.5, 0.6, 0.9, math.nan)[0]


def test_baseline_choice() -> None:
    def info(
        name: str, recipe: str | None = None, memory: int | None = None, marked: bool = False
    ) -> VariantInfo:
        return VariantInfo(name, "/m", recipe, memory, "store" if memory else None, marked)

    assert choose_baseline([info("a", "w4a16", 5), info("b", "bf16", 10)]) == "b"
    assert choose_baseline([info("a", "bf16", 5), info("b", None, 3, marked=True)]) == "b"
    assert choose_baseline([info("a", None, 5), info("b", None, 10)]) == "b"
    assert choose_baseline([info("a", "bf16", 5), info("b")], requested="b") == "b"
    with pytest.raises(QuantscopeError, match="--baseline 'c' is not in the store"):
        choose_baseline([info("a"), info("b")], requested="c")
    with pytest.raises(QuantscopeError, match="pass --baseline"):
        choose_baseline([info("a"), info("b")])


def test_memory_from_the_manifest_or_the_files(tmp_path: Path) -> None:
    quantized = tmp_path / "q"
    quantized.mkdir()
    (quantized / "quantscope.json").write_text(json.dumps({"tensor_bytes": 1234}))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.safetensors").write_bytes(b"x" * 777)
    with Store(tmp_path / "store") as store:
        add_variant(
            store,
            "base",
            outcomes(3, 1, lambda i, j: True),
            memory=None,
            baseline=True,
            model_path=str(plain),
        )
        add_variant(store, "q", outcomes(3, 1, lambda i, j: True), memory=None, model_path=str(quantized))
        add_variant(store, "given", outcomes(3, 1, lambda i, j: True), memory=99)
        add_variant(store, "unknown", outcomes(3, 1, lambda i, j: True), memory=None)
        analysis = analyze(store)
    found = {v.name: (v.memory_bytes, v.memory_source) for v in analysis.variants}
    assert found == {
        "base": (777, "files"),
        "q": (1234, "manifest"),
        "given": (99, "store"),
        "unknown": (None, None),
    }


def test_budget_curves_share_one_grid_per_task(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        add_variant(
            store,
            "base",
            outcomes(8, 1, lambda i, j: True, tokens=lambda i, j: 50 + 10 * i),
            memory=10,
            baseline=True,
            cap=400,
        )
        add_variant(
            store, "v", outcomes(8, 1, lambda i, j: True, tokens=lambda i, j: 100 + 10 * i), memory=5, cap=200
        )
        analysis = analyze(store, allow_mismatch=True)  # different caps: refused unless allowed (issue 11)
    base, v = (analysis.metric(n, "synthetic") for n in ("base", "v"))
    assert base is not None and v is not None
    assert base.budget_curve.budgets == v.budget_curve.budgets == analysis.budgets["synthetic"]
    assert max(analysis.budgets["synthetic"]) == 200  # the smaller cap: above it v's accuracy is unknown
    assert base.budget_curve.accuracy[-1] == 1.0  # all base finish within 120 tokens


def test_empty_store_and_unknown_task_are_clear_errors(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        with pytest.raises(QuantscopeError, match="holds no results"):
            analyze(store)
        add_variant(store, "base", outcomes(2, 1, lambda i, j: True), memory=1, baseline=True)
        with pytest.raises(QuantscopeError, match="no results for task"):
            analyze(store, tasks=["aime25"])


# ---- issue 11: verdicts you can trust ------------------------------------------------------


def test_a_loss_on_noise_is_not_blamed_on_truncation(tmp_path: Path) -> None:
    """Defect 3: -2.5 pts with a 95% CI of [-7.5, 0.0] used to be reported as 'loss mostly explained
    by truncation'; a loss that is not significant explains nothing."""
    with Store(tmp_path) as store:
        add_variant(store, "base", outcomes(40, 1, lambda i, j: True), memory=10, baseline=True)
        add_variant(store, "v", outcomes(40, 1, lambda i, j: True, truncated=lambda i, j: i == 7), memory=5)
        c = analyze(store).comparison("v", "synthetic")
    assert c is not None
    assert c.delta == pytest.approx(-0.025)
    from scipy import stats

    oracle = stats.ttest_rel([1.0] * 7 + [0.0] + [1.0] * 32, [1.0] * 40)  # item 7 cut, so wrong
    assert (c.delta_ci_low, c.delta_ci_high) == pytest.approx(tuple(oracle.confidence_interval()))
    assert not c.significant and not c.explained_by_truncation
    assert c.verdict == VERDICT_UNDECIDED
    assert c.decision.samples_needed is not None


def test_variants_generated_under_other_settings_are_refused_unless_allowed(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        add_variant(store, "base", outcomes(10, 1, lambda i, j: True), memory=10, baseline=True)
        add_variant(store, "longer", outcomes(10, 1, lambda i, j: True), memory=5, cap=800)
        with pytest.raises(
            QuantscopeError, match=r"cannot compare 'longer'.*max_tokens 400 -> 800.*--allow-mismatch"
        ):
            analyze(store)
        c = analyze(store, allow_mismatch=True).comparison("longer", "synthetic")
    assert c is not None and c.mismatches == ("max_tokens 400 -> 800",)


def test_items_with_another_prompt_are_not_paired_silently(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        add_variant(store, "base", outcomes(10, 1, lambda i, j: True), memory=10, baseline=True)
        add_variant(store, "other-data", outcomes(10, 1, lambda i, j: True), memory=5, prompt_sha="changed")
        with pytest.raises(QuantscopeError, match=r"prompt or target of 10 of 10 shared items"):
            analyze(store)


def test_a_settings_study_compares_one_model_under_two_temperatures(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        kw = {"memory": 10, "model_path": "/models/9b"}
        add_variant(
            store, "9b-t0.6", outcomes(20, 2, lambda i, j: i % 4 != 0), baseline=True, temperature=0.6, **kw
        )
        add_variant(store, "9b-t1.0", outcomes(20, 2, lambda i, j: i % 2 != 0), temperature=1.0, **kw)
        add_variant(store, "other", outcomes(20, 2, lambda i, j: True), memory=5, temperature=1.0)
        with pytest.raises(QuantscopeError, match=r"temperature 0\.6 -> 1\.0"):
            analyze(store, tasks=["synthetic"])
        with pytest.raises(QuantscopeError, match="a settings study compares runs of one model"):
            analyze(store, settings_study=True)
    with Store(tmp_path / "study") as store:
        add_variant(
            store, "9b-t0.6", outcomes(20, 2, lambda i, j: i % 4 != 0), baseline=True, temperature=0.6, **kw
        )
        add_variant(store, "9b-t1.0", outcomes(20, 2, lambda i, j: i % 2 != 0), temperature=1.0, **kw)
        c = analyze(store, settings_study=True).comparison("9b-t1.0", "synthetic")
    assert c is not None and c.kind == "settings" and c.mismatches == ()
    assert c.delta == pytest.approx(-0.25) and c.verdict == "worse"


def test_compare_json_carries_items_delta_ci_verdict_and_samples_needed(study: Path) -> None:
    from typer.testing import CliRunner

    from quantscope.cli import app

    result = CliRunner().invoke(app, ["compare", "--store", str(study), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the one-line note of a first signal pass goes to stderr
    by_variant = {c["variant"]: c for c in data["comparisons"]}
    assert by_variant["fp8"]["verdict"] == "equivalent" and by_variant["fp8"]["paired_items"] == N
    assert by_variant["w4-broken"]["decision"]["ci95"][1] < 0
    assert data["margin"] == 0.02 and "Holm's step-down over the 4 tests" in data["note"]


# ---- README: `compare` refuses another thinking mode or chat template --------------------------


def _eval_tiny(model: Path, store: Path, variant: str, *flags: str) -> None:
    """`quantscope eval` with the transformers engine on a tiny model: two greedy synthetic items."""
    from typer.testing import CliRunner

    from quantscope.cli import app

    args = ["eval", str(model), "--engine", "transformers", "--task", "synthetic", "--variant", variant]
    args += ["--preset", "greedy", "--limit", "2", "--max-tokens", "4", "--store", str(store), *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def _compare(store: Path, *flags: str):
    from typer.testing import CliRunner

    from quantscope.cli import app

    result = CliRunner().invoke(app, ["compare", "--store", str(store), "--json", *flags])
    return result.exit_code, " ".join(result.output.split())


def test_compare_refuses_another_thinking_mode(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _eval_tiny(tiny_qwen3_dir, store, "base", "--baseline")
    _eval_tiny(tiny_qwen3_dir, store, "no-think", "--no-thinking")
    code, output = _compare(store)
    assert code != 0
    assert "cannot compare 'no-think' with 'base'" in output and "--allow-mismatch" in output
    assert "thinking True -> False" in output
    # Compared anyway with --allow-mismatch, and the output says what differed.
    code, output = _compare(store, "--allow-mismatch")
    assert code == 0, output
    data = json.loads(output)
    assert data["allowed_mismatch"] is True
    assert [(c["variant"], c["mismatches"]) for c in data["comparisons"]] == [
        ("no-think", ["thinking True -> False"])
    ]


def test_compare_refuses_another_chat_template(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other-template"
    shutil.copytree(tiny_qwen3_dir, other)
    template = other / "chat_template.jinja"
    template.write_text("{# another revision of the template #}" + template.read_text())
    store = tmp_path / "store"
    _eval_tiny(tiny_qwen3_dir, store, "base", "--baseline")
    _eval_tiny(other, store, "new-template")
    code, output = _compare(store)
    assert code != 0
    assert "cannot compare 'new-template' with 'base'" in output
    # The template is the one difference named (same thinking mode, sampling, cap and items).
    assert re.search(r"generated differently \(served chat_template_sha '\w+' -> '\w+'\)", output), output


def test_cot_token_inflation_ratio_is_paired_over_items(tmp_path: Path) -> None:
    """The CoT Token Inflation Ratio (arXiv 2606.25519): variant ÷ baseline mean thinking tokens, each
    item's mean over its samples, over the items both ran (an item only one side ran is left out);
    its 95% CI agrees with scipy's paired percentile bootstrap of the same statistic."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng(5)
    hard = rng.integers(50, 300, size=N + 10)  # item difficulty: both sides think longer on the same items
    ours = {(i, j): int(hard[i] * 1.3 + rng.integers(0, 40)) for i in range(N) for j in range(2)}
    theirs = {(i, j): int(hard[i] + rng.integers(0, 40)) for i in range(N + 10) for j in range(2)}
    with Store(tmp_path) as store:
        rows = outcomes(N + 10, 2, lambda i, j: True, tokens=lambda i, j: theirs[i, j] + 10)
        add_variant(store, "bf16", rows, memory=10, recipe="bf16")
        rows = outcomes(N, 2, lambda i, j: True, tokens=lambda i, j: ours[i, j] + 10)
        add_variant(store, "w4", rows, memory=4, recipe="w4a16")
        c = analyze(store).comparison("w4", "synthetic")
    assert c is not None
    top = np.array([(ours[i, 0] + ours[i, 1]) / 2 for i in range(N)])
    bottom = np.array([(theirs[i, 0] + theirs[i, 1]) / 2 for i in range(N)])  # the shared items only
    cot = c.cot_token_inflation_ratio
    assert cot.ratio == pytest.approx(top.mean() / bottom.mean()) and cot.items == N
    reference = bootstrap(
        (top, bottom),
        lambda a, b, axis=-1: a.mean(axis=axis) / b.mean(axis=axis),
        paired=True,
        n_resamples=20_000,
        method="percentile",
        random_state=np.random.default_rng(0),
    ).confidence_interval
    assert cot.ci95 == pytest.approx((reference.low, reference.high), abs=0.01)
    assert 1.2 < cot.ci95[0] < cot.ci95[1] < 1.4
