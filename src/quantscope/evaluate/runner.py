"""The eval runner: (variant × task × k samples) -> one judged row per generation in the store.

A `RunSpec` says what to evaluate and how (model, engine, tasks, thinking, sampling, cap, k,
seed, limit). `run_eval` registers the variant, loads every task, and streams every (item,
sample) pair the store does not hold yet through the engine, which keeps its own queue full
(continuous batching in vLLM, `concurrency` requests in flight to a server). Completions are
judged and committed as they arrive, in transactions of at most `batch_size` rows or 2 s, from a
writer thread. Killing a run loses at most what was in flight and the last commit window, never
duplicates a row, and running the same spec again resumes where it stopped. A request that fails
after the engine's retries is recorded in the store's failures while the others go on; the run
reports it (`TaskRun.failed`) and a rerun retries it.

Seeds: sample j of every item is generated with seed `spec.seed + j`, so raising `k` later adds
new samples without changing the existing ones, and the same spec regenerates the same rows.

Resuming is only allowed under the same output settings (`settings.OutputSettings`: model,
engine, output-changing engine options, what the engine serves, task, thinking, sampling, cap,
seed), stored with each run; a spec that differs in any of them is refused rather than mixed
in. `k` and `limit` are not settings: raising them extends a run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantscope.engines.base import (
    Engine,
    Generation,
    Outcome,
    RequestFailure,
    SamplingParams,
)
from quantscope.engines.registry import output_engine_options
from quantscope.errors import QuantscopeError
from quantscope.evaluate.requests import chat_request, engine_stream
from quantscope.evaluate.spec import RunSpec, TaskSpec
from quantscope.quantize.weight_memory import variant_memory
from quantscope.store.database import Store
from quantscope.store.rows import Failure, ResultRow, RunRecord, Variant
from quantscope.store.settings import (
    OutputSettings,
    current_environment,
    differences,
    run_record,
    text_fingerprint,
)
from quantscope.tasks.base import Sample, Task

if TYPE_CHECKING:
    from quantscope.evaluate.forced import ForcedSummary

# ---- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressUpdate:
    """Where a task's run stands."""

    task: str
    done: int
    """(item, sample) generations stored, earlier ones included, of `total`."""
    total: int
    tokens: int
    """Completion tokens of the generations this run produced."""
    seconds: float
    """Wall time of this run so far (s)."""
    failed: int = 0
    """Requests that failed after their retries."""
    in_flight: int = 0
    """Requests sent and not finished."""
    finished: int = 0
    """Generations this run produced."""

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens per second of this run (0 before anything finished)."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left, from tokens: the requests left, at the mean length of this run's finished
        ones, at this run's token rate. None until something finished."""
        left = self.total - self.done - self.failed
        if left <= 0:
            return 0.0
        if self.finished == 0 or self.tokens == 0:
            return None
        return left * (self.tokens / self.finished) / self.tokens_per_second


RunProgress = Callable[[ProgressUpdate], None]


@dataclass(frozen=True)
class TaskRun:
    """What a run did for one task."""

    task: str
    spec_hash: str
    items: int
    expected: int
    """Rows the task has once done: items × k."""
    stored_before: int
    """Rows already there when the run began."""
    generated: int
    """Rows this run wrote."""
    tokens: int
    """Completion tokens generated, over `seconds` of wall time."""
    seconds: float
    failed: int = 0
    """Requests that failed after their retries (recorded in the store's failures; a rerun
    retries them)."""
    first_failure: str | None = None


@dataclass(frozen=True)
class RunSummary:
    """The result of `run_eval`: the variant name and one `TaskRun` per task, in spec order."""

    variant: str
    tasks: tuple[TaskRun, ...]
    forced: tuple[ForcedSummary, ...] = ()

    @property
    def failed(self) -> int:
        """Requests of every task that failed after their retries."""
        return sum(t.failed for t in self.tasks)


@dataclass(frozen=True)
class _Plan:
    """One task of a run, ready to generate."""

    spec: TaskSpec
    task: Task
    samples: tuple[Sample, ...]
    settings: OutputSettings
    spec_hash: str
    pending: tuple[tuple[Sample, int], ...]
    """(item, sample index) pairs the store lacks."""
    expected: int
    """Rows the task has once done: items × k."""


# ---- running ------------------------------------------------------------------------------


def run_eval(
    spec: RunSpec,
    store: Store,
    engine: Engine | None = None,
    progress: RunProgress | None = None,
    *,
    samples_per_item: Mapping[str, Mapping[str, int]] | None = None,
    make_engine: Callable[[RunSpec], Engine] | None = None,
) -> RunSummary:
    """Generate, judge and store every (item, sample) of every task that the store lacks.

    `engine` is used as given (and left open) when passed; otherwise one is built from the spec
    only if there is work to do, and closed at the end. `progress` receives `ProgressUpdate`s.
    `samples_per_item` (task -> item id -> samples) asks for more than `spec.k` samples of some
    items (sampling until decided); sample j keeps seed `spec.seed + j`. All tasks are loaded and
    checked against the store before anything is generated. `make_engine` builds the engine
    instead of `build_engine` (e.g. one running in a Ray actor: `sweep.ray_jobs.RayEngine`).
    """
    variant = spec.variant_name
    memory = variant_memory(spec.model, spec.memory_bytes, spec.memory_from, hub=spec.engine != "openai")
    store.put_variant(
        Variant(
            name=variant,
            model_path=spec.model_ref,
            memory_bytes=memory.nbytes,
            recipe=spec.recipe,
            is_baseline=spec.baseline,
            memory_source=memory.source,
        )
    )
    more = samples_per_item or {}
    plans = [_plan(spec, task_spec, store, more.get(task_spec.name, {})) for task_spec in spec.tasks]
    owned: Engine | None = None
    try:
        runs = []
        for plan in plans:
            if plan.pending:
                if engine is None:
                    engine = owned = (make_engine or build_engine)(spec)
                plan = _start(spec, plan, store, engine)
            runs.append(_run_task(spec, plan, store, engine, progress))
        forced = []
        if spec.forced_budgets:
            from quantscope.evaluate.forced import run_forced

            for plan in plans:
                if engine is None:
                    engine = owned = (make_engine or build_engine)(spec)
                forced.append(run_forced(spec, plan.task, plan.samples, store, engine))
    finally:
        if owned is not None:
            owned.close()
    return RunSummary(variant=variant, tasks=tuple(runs), forced=tuple(forced))


def build_engine(spec: RunSpec) -> Engine:
    """The engine `spec` names, built for its model with its engine options (and server URL)."""
    from quantscope.engines import get_engine

    options = dict(spec.engine_options)
    if spec.base_url is not None:
        options["base_url"] = spec.base_url
    return get_engine(spec.engine, spec.model, **options)


def load_task(task_spec: TaskSpec) -> Task:
    """The task a TaskSpec names, built with its options (and local file)."""
    from quantscope.tasks import get_task

    options = dict(task_spec.options)
    if task_spec.path is not None:
        options["path"] = task_spec.path
    return get_task(task_spec.name, **options)


def _plan(spec: RunSpec, task_spec: TaskSpec, store: Store, more: Mapping[str, int]) -> _Plan:
    task = load_task(task_spec)
    samples = tuple(task.load(limit=spec.limit))
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise QuantscopeError(f"task {task_spec.name!r} has duplicate item ids; each item needs a unique id")
    settings = spec.output_settings(task_spec)
    spec_hash = resume_hash(spec, task_spec, settings, store)
    done = store.done_keys(spec.variant_name, task_spec.name)
    wanted = {s.id: max(spec.k, more.get(s.id, 0)) for s in samples}
    pending = tuple((s, j) for s in samples for j in range(wanted[s.id]) if (s.id, j) not in done)
    return _Plan(task_spec, task, samples, settings, spec_hash, pending, sum(wanted.values()))


def resume_hash(spec: RunSpec, task_spec: TaskSpec, settings: OutputSettings, store: Store) -> str:
    """The spec hash (variant, task) continues under: that of its stored rows when they were generated
    under `settings`, else (no rows yet) the settings' own hash.

    Raises QuantscopeError naming what changed when stored rows came from other settings: a rerun
    under other settings is refused, never mixed in. Runs stored before their settings were
    recorded (schema 1) match when their hash is the one quantscope 0.1 gave the same spec.
    """
    stored = [store.run(h) for h in sorted(store.spec_hashes(spec.variant_name, task_spec.name))]
    for run in stored:
        changed = _changes(spec, task_spec, settings, run)
        if changed:
            raise QuantscopeError(
                f"variant {spec.variant_name!r} already has {task_spec.name!r} rows generated with other "
                f"settings ({', '.join(changed)}): rerun with the same settings to resume, or pick a new "
                "--variant name"
            )
    return stored[0].spec_hash if stored and stored[0] is not None else settings.hash


def _changes(
    spec: RunSpec, task_spec: TaskSpec, settings: OutputSettings, run: RunRecord | None
) -> list[str]:
    if run is None:
        return []
    if run.settings_json is not None:
        stored = OutputSettings.from_json(run.settings_json)
        # An option an earlier release counted as an output setting and the engine now declares
        # throughput only (e.g. openai's abort_after) no longer tells the runs apart.
        kept = output_engine_options(stored.engine, stored.engine_options)
        return differences(replace(stored, engine_options=kept), settings)
    if run.spec_hash == spec.v1_hash(task_spec):
        return _v1_penalties(spec)
    new = _run_record(spec, task_spec, run.spec_hash)
    names = ("model_path", "engine", "thinking_mode", "temperature", "top_p", "top_k", "max_tokens", "seed")
    changed = [
        f"{f} {getattr(run, f)} -> {getattr(new, f)}" for f in names if getattr(run, f) != getattr(new, f)
    ]
    return changed or ["task file or options"]


def _v1_penalties(spec: RunSpec) -> list[str]:
    """quantscope 0.1 had no min_p or penalties, so its runs generated with them off: a spec that
    turns one on is other settings, though its v1 hash (which never saw them) matches."""
    sampling, off = spec.sampling(), SamplingParams()
    names = ("min_p", "presence_penalty", "repetition_penalty")
    return [
        f"{n} {getattr(off, n)!r} -> {getattr(sampling, n)!r}"
        for n in names
        if getattr(sampling, n) != getattr(off, n)
    ]


def _start(spec: RunSpec, plan: _Plan, store: Store, engine: Engine) -> _Plan:
    """Before generating: add what the engine serves to the settings, check it against the stored
    rows too (another chat template, a server serving another model), and record the run."""
    served = getattr(engine, "served", None)
    settings = replace(plan.settings, served=served() if callable(served) else {})
    resume_hash(spec, plan.spec, settings, store)
    environment = current_environment(str(getattr(engine, "device_name", "")))
    store.record_run(_run_record(spec, plan.spec, plan.spec_hash))
    _record_strata(plan, store)
    store.set_run_settings(plan.spec_hash, settings.to_json(), environment.to_json())
    return replace(plan, settings=settings)


def _record_strata(plan: _Plan, store: Store) -> None:
    """Record each item's level (the task's `stratify` field of its metadata), so analysis can
    report per level from the store alone; a task without levels records nothing."""
    key = plan.task.stratify
    strata = {s.id: str(s.metadata[key]) for s in plan.samples if key and s.metadata.get(key) is not None}
    if strata:
        store.write_strata(plan.spec.name, key, strata)


def _run_record(spec: RunSpec, task_spec: TaskSpec, spec_hash: str) -> RunRecord:
    return run_record(spec.output_settings(task_spec), spec.variant_name, spec_hash, spec.model_dump_json())


def _run_task(
    spec: RunSpec, plan: _Plan, store: Store, engine: Engine | None, progress: RunProgress | None
) -> TaskRun:
    """Stream the plan's pending requests through the engine; a writer thread judges and commits
    each completion as it arrives (see `_Writer`), so a slow judge never stalls the engine."""
    total, stored_before = plan.expected, plan.expected - len(plan.pending)
    start, tokens, finished, failures = time.perf_counter(), 0, 0, 0

    def report(in_flight: int) -> None:
        if progress is not None:
            done = stored_before + finished
            seconds = time.perf_counter() - start
            progress(
                ProgressUpdate(plan.spec.name, done, total, tokens, seconds, failures, in_flight, finished)
            )

    report(0)
    first_failure: str | None = None
    if plan.pending:
        assert engine is not None  # run_eval builds one whenever something is pending
        requests = [chat_request(spec, s, j) for s, j in plan.pending]
        writer = _Writer(spec, plan, store.path)
        try:
            for index, outcome in engine_stream(engine, requests, spec.batch_size):
                writer.put(index, outcome)
                if isinstance(outcome, RequestFailure):
                    failures += 1
                    first_failure = first_failure or _describe(plan.pending[index], outcome)
                else:
                    finished += 1
                    tokens += outcome.completion_tokens
                report(len(requests) - finished - failures)
        finally:
            writer.close()
        report(0)
    return TaskRun(
        task=plan.spec.name,
        spec_hash=plan.spec_hash,
        items=len(plan.samples),
        expected=total,
        stored_before=stored_before,
        generated=finished,
        tokens=tokens,
        seconds=time.perf_counter() - start,
        failed=failures,
        first_failure=first_failure,
    )


def _describe(key: tuple[Sample, int], failure: RequestFailure) -> str:
    sample, index = key
    return f"item {sample.id} sample {index} after {failure.attempts} attempt(s): {failure.error}"


COMMIT_SECONDS = 2.0
"""The longest a finished generation waits in memory before it is committed (kill -9 loses at most
this window plus what was in flight)."""


class _Writer:
    """Judges completions and commits them from its own thread, on its own connection to the store
    (a Store belongs to one thread), in transactions of at most `spec.batch_size` rows or
    `COMMIT_SECONDS`. A failure is recorded in the store's failures (a later success for the same
    key clears it); nothing is ever written twice, since the rows of a key are keyed in the store."""

    def __init__(self, spec: RunSpec, plan: _Plan, path: Path) -> None:
        self._spec, self._plan, self._path = spec, plan, path
        self._queue: queue.Queue[tuple[int, Outcome] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="quantscope-writer", daemon=True)
        self._thread.start()

    def put(self, index: int, outcome: Outcome) -> None:
        """Queue one completion; raises the writer's error if it has stopped."""
        self._raise_error()
        self._queue.put((index, outcome))

    def close(self) -> None:
        """Commit everything queued and stop; raises the writer's error if it had one."""
        self._queue.put(None)
        self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise QuantscopeError(f"writing results to {self._path} failed: {self._error}") from self._error

    def _run(self) -> None:
        try:
            with Store(self._path) as store:
                self._drain(store)
        except BaseException as error:  # reported to the generating thread by put / close
            self._error = error

    def _drain(self, store: Store) -> None:
        batch: list[ResultRow | Failure] = []  # judged, not committed yet
        deadline = 0.0
        while True:
            wait = max(deadline - time.monotonic(), 0.0) if batch else None
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:  # the commit window closed
                batch = self._commit(store, batch)
                continue
            if item is None:
                self._commit(store, batch)
                return
            if not batch:
                deadline = time.monotonic() + COMMIT_SECONDS
            batch.append(self._judge(*item))
            if len(batch) >= self._spec.batch_size:
                batch = self._commit(store, batch)

    def _judge(self, index: int, outcome: Outcome) -> ResultRow | Failure:
        sample, j = self._plan.pending[index]
        if isinstance(outcome, RequestFailure):
            return _failure(self._spec, self._plan, sample, j, outcome)
        return _row(self._spec, self._plan, sample, j, outcome)

    @staticmethod
    def _commit(store: Store, batch: list[ResultRow | Failure]) -> list[ResultRow | Failure]:
        # The text is read here once, while it is in memory: its trace signals are stored with the
        # rows (issue 31), so analysis reads numbers. An import against the pipeline's direction:
        # signal_table is a pure function of the text, owned by analysis, which also reads it.
        from quantscope.analysis.signal_table import signal_batch

        rows = [r for r in batch if isinstance(r, ResultRow)]
        store.write_results(rows, signal_batch(rows))
        store.write_failures(f for f in batch if isinstance(f, Failure))
        return []


def _key(spec: RunSpec, plan: _Plan, sample: Sample, index: int) -> dict[str, Any]:
    """What names a request's row in the store, a generation's or a failure's: (variant, task,
    item, sample) and the settings it ran under."""
    return {
        "variant": spec.variant_name,
        "task": plan.spec.name,
        "item_id": sample.id,
        "sample": index,
        "spec_hash": plan.spec_hash,
    }


def _failure(spec: RunSpec, plan: _Plan, sample: Sample, index: int, failure: RequestFailure) -> Failure:
    key = _key(spec, plan, sample, index)
    return Failure(**key, error=failure.error, attempts=failure.attempts, created=time.time())


def _row(spec: RunSpec, plan: _Plan, sample: Sample, index: int, generation: Generation) -> ResultRow:
    judgement = plan.task.judge(sample, generation.answer)
    return ResultRow(
        **_key(spec, plan, sample, index),
        seed=spec.seed + index,
        target=sample.target,
        **asdict(generation),  # text, thinking, answer, token counts, finish_reason, seconds: as generated
        answer_tokens=max(generation.completion_tokens - generation.thinking_tokens, 0),
        **asdict(judgement),  # correct, extracted
        created=time.time(),
        prompt_sha=text_fingerprint(sample.prompt, sample.target),
    )
