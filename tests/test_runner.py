"""The run spec (presets, YAML + overrides, hashing) and the resumable runner.

The runner tests drive the real AIME25 task on its local fixture file with a scripted engine that
implements our Engine protocol, so every row's content is known in advance; the end-to-end tests
with the real transformers engine are in test_cli_eval.py.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from quantscope.analysis import load_results, summarize
from quantscope.engines.base import ChatRequest, Generation, ProgressCallback
from quantscope.errors import QuantscopeError
from quantscope.evaluate.runner import COMMIT_SECONDS, ProgressUpdate, run_eval
from quantscope.evaluate.spec import SAMPLING_PRESETS, RunSpec, TaskSpec, load_spec
from quantscope.quantize.weight_memory import weight_memory
from quantscope.store.database import Store
from quantscope.tasks import get_task

AIME = Path(__file__).parent / "data" / "aime25.jsonl"
N_ITEMS = 6


class ScriptedEngine:
    """Answers right on even seeds, wrong on odd ones; seed 2 runs into the cap."""

    name = "scripted"

    def __init__(self, fail_on_call: int | None = None) -> None:
        targets = {s.prompt: s.target for s in get_task("aime25", path=str(AIME)).load()}
        self.targets = targets
        self.requests: list[ChatRequest] = []
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.closed = False

    def generate(self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise RuntimeError("engine died")
        out = []
        for request in requests:
            self.requests.append(request)
            seed = request.sampling.seed
            answer = self.targets[request.messages[0].content] if seed % 2 == 0 else "-1"
            cut = seed == 2
            tokens = request.sampling.max_tokens if cut else 10 + seed
            thinking = "thought " * seed
            out.append(
                Generation(
                    text=f"{thinking}</think>\\boxed{{{answer}}}",
                    thinking=thinking,
                    answer="" if cut else f"\\boxed{{{answer}}}",
                    completion_tokens=tokens,
                    thinking_tokens=tokens if cut else seed,
                    finish_reason="length" if cut else "stop",
                    seconds=0.01,
                )
            )
        if progress is not None:
            progress(len(requests))
        return out

    def close(self) -> None:
        self.closed = True


def spec(**fields) -> RunSpec:
    base = {"model": "scripted-model", "tasks": [f"aime25={AIME}"], "max_tokens": 64, "batch_size": 4}
    return RunSpec.model_validate(base | fields)


# ---- spec ---------------------------------------------------------------------------------


def test_spec_defaults_and_presets() -> None:
    default = spec()
    assert default.variant_name == "scripted-model"
    assert default.tasks == (TaskSpec(name="aime25", path=str(AIME)),)
    assert default.sampling() == SAMPLING_PRESETS["qwen3.5-thinking"].__class__(
        temperature=1.0, top_p=0.95, top_k=20, max_tokens=64, presence_penalty=1.5
    )
    instruct = spec(thinking=False).sampling()
    assert (instruct.temperature, instruct.top_p, instruct.presence_penalty) == (0.7, 0.8, 1.5)
    reasoning = spec(thinking=False, preset="qwen3.5-instruct-reasoning").sampling()
    assert (reasoning.top_k, reasoning.presence_penalty, reasoning.repetition_penalty) == (40, 2.0, 1.0)
    assert spec(presence_penalty=0.0, min_p=0.05).sampling().presence_penalty == 0.0
    assert spec(min_p=0.05).sampling().min_p == 0.05
    assert spec(preset="greedy").sampling().temperature == 0.0
    tuned = spec(preset="qwen3.5-thinking-precise", top_k=40).sampling()
    assert (tuned.temperature, tuned.top_p, tuned.top_k) == (0.6, 0.95, 40)
    assert RunSpec(model="Qwen/Qwen3.5-9B", tasks=["aime25"]).max_tokens == 32768
    assert RunSpec(model="Qwen/Qwen3.5-9B/", tasks="aime25").variant_name == "Qwen3.5-9B"


def test_generation_hash_covers_generation_settings_only() -> None:
    task = spec().tasks[0]
    same = spec().generation_hash(task)
    for changed in (
        {"max_tokens": 65},
        {"temperature": 0.5},
        {"thinking": False},
        {"seed": 1},
        {"presence_penalty": 0.0},
        {"min_p": 0.1},
        {"repetition_penalty": 1.1},
    ):
        assert spec(**changed).generation_hash(task) != same, changed
    for unchanged in ({"k": 8}, {"limit": 2}, {"batch_size": 1}, {"variant": "x"}):
        assert spec(**unchanged).generation_hash(task) == same, unchanged


def test_yaml_spec_with_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "model: some/model\ntasks:\n  - aime25\n  - {name: math500, path: m.jsonl}\n"
        "k: 4\nmax_tokens: 2048\npreset: greedy\n"
    )
    loaded = load_spec(path, {"k": 2, "limit": None, "seed": 3})
    assert (loaded.k, loaded.max_tokens, loaded.seed, loaded.limit) == (2, 2048, 3, None)
    assert [t.name for t in loaded.tasks] == ["aime25", "math500"]
    assert loaded.tasks[1].path == "m.jsonl"
    assert load_spec(path, {"tasks": ["gpqa_diamond"]}).tasks == (TaskSpec(name="gpqa_diamond"),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: m\ntasks: [aime25]\ntemprature: 0.6\n", "temprature: Extra inputs are not permitted"),
        ("model: m\ntasks: [aime25]\npreset: hot\n", "unknown preset 'hot'"),
        ("model: m\ntasks: []\n", "tasks"),
        ("model: m\ntasks: [aime25]\nk: 0\n", "k: Input should be greater than or equal to 1"),
        ("- model\n", "must be a mapping"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_specs_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(QuantscopeError, match=r"bad\.yaml") as error:
        load_spec(path)
    assert message in str(error.value)
    with pytest.raises(QuantscopeError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def weights_bytes(model: str) -> int | None:
    """The weight memory the runner records for a local checkpoint (no hub lookup)."""
    return weight_memory(model, hub=False).nbytes


def test_weights_bytes_of_a_checkpoint(tiny_qwen3_dir: Path) -> None:
    expected = (tiny_qwen3_dir / "model.safetensors").stat().st_size
    assert weights_bytes(str(tiny_qwen3_dir)) == expected
    assert weights_bytes("Qwen/Qwen3.5-9B") is None


# ---- runner -------------------------------------------------------------------------------


def test_run_writes_every_item_and_sample_with_its_seed(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    updates: list[ProgressUpdate] = []
    with Store(tmp_path) as store:
        summary = run_eval(spec(k=3, seed=0), store, engine=engine, progress=updates.append)
        rows = store.rows()
        results = load_results(store)
    (task,) = summary.tasks
    assert (task.items, task.expected, task.stored_before, task.generated) == (N_ITEMS, 18, 0, 18)
    assert task.tokens == sum(r["completion_tokens"] for r in rows)
    assert len(rows) == 18 and not engine.closed  # a passed-in engine stays open
    assert {r["seed"] for r in rows} == {0, 1, 2}
    assert all(r["seed"] == r["sample"] for r in rows)
    assert all(r.sampling.temperature == 1.0 and r.enable_thinking for r in engine.requests)
    by_sample = {s: [r for r in rows if r["sample"] == s] for s in range(3)}
    assert all(r["correct"] == 1 for r in by_sample[0])
    assert all(r["correct"] == 0 and r["extracted"] == "-1" for r in by_sample[1])
    assert all(r["finish_reason"] == "length" and r["correct"] == 0 for r in by_sample[2])
    assert all(r["answer_tokens"] == r["completion_tokens"] - r["thinking_tokens"] for r in rows)
    metrics = summarize(results)
    assert metrics.accuracy == pytest.approx(1 / 3)
    assert metrics.truncation_rate == pytest.approx(1 / 3)
    assert metrics.pass_at_k == 1.0
    assert updates[0].done == 0 and updates[-1].done == updates[-1].total == 18
    assert [u.done for u in updates] == sorted(u.done for u in updates)
    assert updates[-1].tokens == task.tokens


def test_resume_generates_only_what_is_missing(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        with pytest.raises(RuntimeError, match="engine died"):
            run_eval(spec(k=2), store, engine=ScriptedEngine(fail_on_call=2))  # chunk 1 of 3 committed
        assert store.count() == 4
        engine = ScriptedEngine()
        summary = run_eval(spec(k=2), store, engine=engine)
        assert (summary.tasks[0].stored_before, summary.tasks[0].generated) == (4, 8)
        assert len(engine.requests) == 8 and store.count() == 12
        more = run_eval(spec(k=3), store, engine=ScriptedEngine())  # raising k adds sample 2 only
        assert more.tasks[0].generated == N_ITEMS
        assert store.count() == 18
        assert store.done_keys("scripted-model", "aime25") == {
            (str(i), j) for i in range(N_ITEMS) for j in range(3)
        }


def test_a_complete_run_builds_no_engine(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        run_eval(spec(), store, engine=ScriptedEngine())
        # A transformers engine for "scripted-model" cannot load; nothing is pending, so none is built.
        summary = run_eval(spec(), store)
    assert summary.tasks[0].generated == 0 and summary.tasks[0].stored_before == N_ITEMS


def test_an_unknown_engine_is_named_when_there_is_work(tmp_path: Path) -> None:
    with Store(tmp_path) as store, pytest.raises(QuantscopeError, match="unknown engine 'no-such-engine'"):
        run_eval(spec(engine="no-such-engine"), store)


def test_changed_settings_are_refused_not_mixed(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        run_eval(spec(limit=2), store, engine=ScriptedEngine())
        with pytest.raises(QuantscopeError, match=r"max_tokens 64 -> 128.*new --variant name"):
            run_eval(spec(max_tokens=128), store, engine=ScriptedEngine())
        run_eval(spec(max_tokens=128, variant="longer"), store, engine=ScriptedEngine())
        assert store.count(variant="scripted-model") == 2
        assert store.count(variant="longer") == N_ITEMS


def test_variant_metadata_is_registered(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    with Store(tmp_path) as store:
        run_eval(
            spec(model=str(tiny_qwen3_dir), variant="q", recipe="bf16", baseline=True, limit=1),
            store,
            engine=ScriptedEngine(),
        )
        (variant,) = store.variants()
    assert variant.model_path == str(tiny_qwen3_dir.resolve())
    assert variant.memory_bytes == weights_bytes(str(tiny_qwen3_dir))
    assert (variant.recipe, variant.is_baseline) == ("bf16", True)


def test_thinking_off_uses_the_instruct_preset(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    with Store(tmp_path) as store:
        run_eval(spec(thinking=False, limit=1), store, engine=engine)
        (run,) = [store.run(h) for h in store.spec_hashes("scripted-model", "aime25")]
    assert not engine.requests[0].enable_thinking
    assert (run.temperature, run.top_p, run.top_k, run.thinking_mode) == (0.7, 0.8, 20, False)


def test_a_run_stored_before_settings_were_recorded_still_resumes(tmp_path: Path) -> None:
    import sqlite3

    # quantscope 0.1 had no penalties, so its runs are of a penalty-free preset
    first = spec(k=1, preset="qwen3.5-thinking-precise")
    task = first.tasks[0]
    with Store(tmp_path) as store:
        run_eval(first, store, engine=ScriptedEngine())
    # rewrite the run as quantscope 0.1 left it: its own hash formula, no settings recorded
    db = sqlite3.connect(tmp_path / "quantscope.db")
    old = first.v1_hash(task)
    with db:
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("UPDATE runs SET spec_hash = ?, settings_json = NULL", (old,))
        db.execute("UPDATE results SET spec_hash = ?, prompt_sha = NULL", (old,))
    db.close()
    with Store(tmp_path) as store:
        # its v1 hash never saw penalties: turning one on is still other settings
        with pytest.raises(QuantscopeError, match=r"presence_penalty 0.0 -> 1.5"):
            run_eval(spec(k=2, preset=first.preset, presence_penalty=1.5), store, engine=ScriptedEngine())
        more = run_eval(spec(k=2, preset=first.preset), store, engine=ScriptedEngine())
        assert (more.tasks[0].stored_before, more.tasks[0].generated) == (N_ITEMS, N_ITEMS)
        assert store.spec_hashes("scripted-model", "aime25") == {old}
        assert store.run(old).settings_json is not None  # filled in by the resumed run
        with pytest.raises(QuantscopeError, match=r"max_tokens 64 -> 32"):
            run_eval(spec(k=3, preset=first.preset, max_tokens=32), store, engine=ScriptedEngine())


def test_every_variant_gets_a_memory_figure_and_its_source(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    files = weights_bytes(str(tiny_qwen3_dir))
    with Store(tmp_path) as store:
        run_eval(spec(variant="given", memory_bytes=123, limit=1), store, engine=ScriptedEngine())
        run_eval(
            spec(variant="served", memory_from=str(tiny_qwen3_dir), limit=1), store, engine=ScriptedEngine()
        )
        run_eval(spec(variant="unknown", engine="openai", limit=1), store, engine=ScriptedEngine())
        found = {v.name: (v.memory_bytes, v.memory_source) for v in store.variants()}
        with pytest.raises(QuantscopeError, match="--memory-from /nowhere: no weights found"):
            run_eval(spec(variant="x", memory_from="/nowhere", limit=1), store, engine=ScriptedEngine())
    assert found == {
        "given": (123, "given"),
        "served": (files, f"files of {tiny_qwen3_dir}"),
        "unknown": (None, None),
    }


class RuleEngine(ScriptedEngine):
    """Answers right unless `wrong(item index, seed)`; never truncates."""

    def __init__(self, wrong) -> None:
        super().__init__()
        self.wrong = wrong
        self.index = {s.prompt: int(s.id) for s in get_task("aime25", path=str(AIME)).load()}

    def generate(self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None):
        out = []
        for request in requests:
            self.requests.append(request)
            prompt, seed = request.messages[0].content, request.sampling.seed
            answer = "-1" if self.wrong(self.index[prompt], seed) else self.targets[prompt]
            out.append(
                Generation(
                    f"t</think>\\\\boxed{{{answer}}}", "t", f"\\\\boxed{{{answer}}}", 12, 2, "stop", 0.01
                )
            )
        if progress is not None:
            progress(len(requests))
        return out


def test_sampling_until_decided_adds_matching_samples_to_both_sides(tmp_path: Path) -> None:
    from quantscope.evaluate.until_decided import eval_until_decided

    with Store(tmp_path) as store:
        base_engine = RuleEngine(lambda item, seed: False)
        run_eval(spec(variant="base", baseline=True, k=2), store, engine=base_engine)
        variant = RuleEngine(
            lambda item, seed: item % 2 == 1 and seed % 2 == 0
        )  # half the odd items' samples wrong
        summary = eval_until_decided(
            spec(variant="v", k=2), store, max_k=4, engine=variant, baseline_engine=base_engine
        )
        counts = {name: _counts(store, name) for name in ("v", "base")}
        again = eval_until_decided(
            spec(variant="v", k=2), store, max_k=4, engine=variant, baseline_engine=base_engine
        )
        assert store.count("v") == sum(counts["v"].values())  # a rerun adds nothing twice
    assert summary.baseline == "base" and 1 <= len(summary.rounds) <= 3
    assert summary.added == sum(counts["v"].values()) - 2 * N_ITEMS > 0
    assert counts["v"] == counts["base"]  # the baseline got matching samples on the same items
    # issue 27: every item of the undecided task, whatever its outcomes (the agreeing even ones too)
    assert set(counts["v"].values()) == {4}
    assert {r.sampling.seed for r in variant.requests} <= {0, 1, 2, 3}  # sample j keeps seed j
    assert again.added == 0
    assert summary.adjusted("aime25") == pytest.approx(summary.decisions["aime25"].delta, abs=0.02)


def test_sampling_until_decided_catches_up_with_a_baseline_that_has_more_samples(tmp_path: Path) -> None:
    """Issue 27, defect 5: baseline -k 4, variant -k 2: every baseline count was above the look's
    cap, so nothing was added and the procedure stopped at once, undecided."""
    from quantscope.evaluate.until_decided import eval_until_decided

    with Store(tmp_path) as store:
        base_engine = RuleEngine(lambda item, seed: False)
        run_eval(spec(variant="base", baseline=True, k=4), store, engine=base_engine)
        variant = RuleEngine(lambda item, seed: item % 2 == 1 and seed % 2 == 0)
        summary = eval_until_decided(
            spec(variant="v", k=2), store, max_k=6, engine=variant, baseline_engine=base_engine
        )
        counts = {name: _counts(store, name) for name in ("v", "base")}
    assert summary.rounds[0].decisions["aime25"].verdict == "undecided"
    assert summary.added > 0 and min(counts["v"].values()) >= 4  # caught up with the baseline's 4
    assert counts["v"] == counts["base"]


def _counts(store: Store, variant: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item, _ in store.done_keys(variant, "aime25"):
        counts[item] = counts.get(item, 0) + 1
    return counts


class WatchedEngine(ScriptedEngine):
    """Streams one completion, then waits until another connection to the store sees it (or gives
    up after `patience` s) before streaming the rest: how long a finished generation sits in memory
    before a kill could no longer lose it."""

    def __init__(self, database: Path, patience: float) -> None:
        super().__init__()
        self.database, self.patience = database, patience
        self.seen_after: float | None = None

    def stream(self, requests: Sequence[ChatRequest]):
        outcomes = self.generate(requests)
        yield 0, outcomes[0]
        start = time.monotonic()
        while time.monotonic() - start < self.patience:
            if self._committed() > 0:
                self.seen_after = time.monotonic() - start
                break
            time.sleep(0.05)
        yield from enumerate(outcomes[1:], start=1)

    def _committed(self) -> int:
        try:  # a reader of its own, as `quantscope analyse` during a run would be
            with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=1) as db:
                return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0


def test_a_finished_generation_is_committed_within_the_commit_window(tmp_path: Path) -> None:
    """README: completions are committed as they finish, at most ~2 s of work lost to a kill. The
    first completion alone (a batch of 4 is not full) must reach the database while the engine
    still holds the rest."""
    engine = WatchedEngine(tmp_path / "quantscope.db", patience=COMMIT_SECONDS + 3)
    with Store(tmp_path) as store:
        run_eval(spec(k=1), store, engine=engine)
        assert store.count("scripted-model") == N_ITEMS
    assert engine.seen_after is not None, "the first completion was not committed while the run went on"
    assert engine.seen_after <= COMMIT_SECONDS + 1.0
