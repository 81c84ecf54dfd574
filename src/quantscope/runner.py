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

import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from quantscope.engines.base import (
    ChatRequest,
    Engine,
    Generation,
    Message,
    Outcome,
    RequestFailure,
    SamplingParams,
    stream_in_chunks,
)
from quantscope.errors import QuantscopeError, invalid
from quantscope.memory import variant_memory
from quantscope.records import read_yaml
from quantscope.store.database import Store
from quantscope.store.rows import Failure, ResultRow, RunRecord, Variant
from quantscope.store.settings import (
    OutputSettings,
    current_environment,
    differences,
    output_engine_options,
    text_fingerprint,
)
from quantscope.tasks.base import Sample, Task

if TYPE_CHECKING:
    from quantscope.forced import ForcedSummary

DEFAULT_MAX_TOKENS = 32768
DEFAULT_BATCH_SIZE = 32

# Sampling presets. The Qwen3.5 ones are the model card's "Best Practices" (huggingface.co/Qwen/
# Qwen3.5-397B-A17B, read 2026-12): thinking, general tasks: temperature 1.0, top_p 0.95, top_k 20,
# min_p 0, presence_penalty 1.5; thinking, precise coding tasks: 0.6 / 0.95 / 20 / 0, no presence
# penalty; instruct (thinking off), general: 0.7 / 0.8 / 20 / 0, presence_penalty 1.5; instruct,
# reasoning tasks: 1.0 / 1.0 / 40 / 0, presence_penalty 2.0; repetition_penalty 1.0 in all. The
# card notes the presence penalty (0-2) curbs endless repetition at some cost in language mixing.
# The Qwen3 ones are the Qwen3 cards' (no penalties). "greedy" is for debugging and smoke tests;
# the cards warn greedy decoding makes thinking models loop.
SAMPLING_PRESETS: dict[str, SamplingParams] = {
    "qwen3.5-thinking": SamplingParams(temperature=1.0, top_p=0.95, top_k=20, presence_penalty=1.5),
    "qwen3.5-thinking-precise": SamplingParams(temperature=0.6, top_p=0.95, top_k=20),
    "qwen3.5-instruct": SamplingParams(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5),
    "qwen3.5-instruct-reasoning": SamplingParams(temperature=1.0, top_p=1.0, top_k=40, presence_penalty=2.0),
    "qwen3-thinking": SamplingParams(temperature=0.6, top_p=0.95, top_k=20),
    "qwen3-instruct": SamplingParams(temperature=0.7, top_p=0.8, top_k=20),
    "greedy": SamplingParams(temperature=0.0, top_p=1.0, top_k=0),
}
DEFAULT_THINKING_PRESET = "qwen3.5-thinking"
DEFAULT_INSTRUCT_PRESET = "qwen3.5-instruct"


class TaskSpec(BaseModel):
    """One benchmark of a run: its registry name, an optional local file, and task options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        """`NAME` or `NAME=PATH` (a local JSONL/Parquet file in the task's schema)."""
        name, _, path = text.partition("=")
        return cls(name=name.strip(), path=path.strip() or None)


class RunSpec(BaseModel):
    """What to evaluate and how. Defaults: transformers engine, thinking on with the
    `qwen3.5-thinking` preset (`qwen3.5-instruct` with thinking off), max_tokens 32768, k 1,
    seed 0, every item, commit windows of at most 32 rows. `temperature` / `top_p` / `top_k` /
    `min_p` / `presence_penalty` / `repetition_penalty` override the preset's values;
    `engine_options` go to the engine (e.g. dtype, batch_size); `recipe`, `baseline`,
    `memory_bytes` (bytes of weights) and `memory_from` (a checkpoint or hub id holding the same
    weights, for a model behind a server) describe the variant for later comparison.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    tasks: tuple[TaskSpec, ...] = Field(min_length=1)
    variant: str | None = None
    engine: str = "transformers"
    thinking: bool = True
    preset: str | None = None
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    k: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)
    base_url: str | None = None
    engine_options: dict[str, Any] = Field(default_factory=dict)
    recipe: str | None = None
    baseline: bool = False
    memory_bytes: int | None = Field(default=None, ge=0)
    memory_from: str | None = None
    forced_budgets: tuple[int, ...] = ()
    """Budgets (completion tokens, at most the cap) at which stored samples are forced to answer
    (`quantscope.forced`); empty: none."""
    forced_answer_tokens: int = Field(default=512, ge=1)

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks_from_strings(cls, value: Any) -> Any:
        if isinstance(value, str | dict):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(TaskSpec.parse(v) if isinstance(v, str) else v for v in value)
        return value

    @field_validator("forced_budgets")
    @classmethod
    def _positive_budgets(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in value):
            raise ValueError(f"forced budgets are token counts of at least 1, got {list(value)}")
        return value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in SAMPLING_PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of {', '.join(SAMPLING_PRESETS)}")
        return value

    @property
    def variant_name(self) -> str:
        """The variant's name: `variant`, else the model directory's (or hub id's) last part."""
        return self.variant or self.model.rstrip("/").split("/")[-1]

    @property
    def model_ref(self) -> str:
        """The model as stored: an absolute path for a local directory, else the id as given."""
        path = Path(self.model).expanduser()
        return str(path.resolve()) if path.exists() else self.model

    def sampling(self) -> SamplingParams:
        """The resolved sampling settings (preset, then explicit overrides; seed left unset)."""
        name = self.preset or (DEFAULT_THINKING_PRESET if self.thinking else DEFAULT_INSTRUCT_PRESET)
        overrides = {
            name: getattr(self, name)
            for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "repetition_penalty")
            if getattr(self, name) is not None
        }
        return replace(SAMPLING_PRESETS[name], **overrides, max_tokens=self.max_tokens, seed=None)

    def output_settings(self, task: TaskSpec) -> OutputSettings:
        """Everything this spec sets that changes what (variant, task) generates (`served` is
        filled in once the engine is built)."""
        sampling = self.sampling()
        return OutputSettings(
            engine=self.engine,
            model=self.model_ref,
            task=task.name,
            thinking=self.thinking,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_tokens=self.max_tokens,
            seed=self.seed,
            min_p=sampling.min_p,
            presence_penalty=sampling.presence_penalty,
            repetition_penalty=sampling.repetition_penalty,
            task_path=str(Path(task.path).expanduser().resolve()) if task.path else None,
            task_options=task.options,
            engine_options=output_engine_options(self.engine_options),
        )

    def generation_hash(self, task: TaskSpec) -> str:
        """A short hash of everything that changes what (variant, task) generates: the spec hash
        of a new run."""
        return self.output_settings(task).hash

    def v1_hash(self, task: TaskSpec) -> str:
        """The spec hash quantscope 0.1 gave (variant, task) (runs stored before their settings
        were recorded carry it)."""
        sampling = self.sampling()
        key = {
            "model": self.model_ref,
            "engine": self.engine,
            "task": task.name,
            "task_path": str(Path(task.path).expanduser().resolve()) if task.path else None,
            "task_options": task.options,
            "thinking": self.thinking,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }
        text = json.dumps(key, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_spec(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Build a RunSpec from a YAML file (optional) with `overrides` (e.g. CLI flags) on top.

    Override values that are None are ignored, so unset flags keep the file's values. Unknown
    keys and bad values raise QuantscopeError naming the file and field.
    """
    data = read_yaml(path, "run spec") if path is not None else {}
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return RunSpec.model_validate(data)
    except ValidationError as error:
        where = f"invalid run spec ({path if path is not None else 'command line'})"
        raise invalid(error, where, RunSpec.model_fields) from None


# ---- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressUpdate:
    """Where a task's run stands: `done` of `total` (item, sample) generations stored (earlier
    ones included), `failed` requests that failed after their retries, `in_flight` the ones sent
    and not finished; `finished` generations this run produced, with `tokens` completion tokens,
    over `seconds` of this run."""

    task: str
    done: int
    total: int
    tokens: int
    seconds: float
    failed: int = 0
    in_flight: int = 0
    finished: int = 0

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
    """What a run did for one task: `expected` = items × k rows, `stored_before` already there,
    `generated` now, `failed` requests that failed after their retries (recorded in the store's
    failures; a rerun retries them); `tokens` completion tokens generated over `seconds` of wall time."""

    task: str
    spec_hash: str
    items: int
    expected: int
    stored_before: int
    generated: int
    tokens: int
    seconds: float
    failed: int = 0
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
    spec: TaskSpec
    task: Task
    samples: tuple[Sample, ...]
    settings: OutputSettings
    spec_hash: str
    pending: tuple[tuple[Sample, int], ...]
    expected: int


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
            from quantscope.forced import run_forced

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
        return differences(OutputSettings.from_json(run.settings_json), settings)
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
    key = getattr(plan.task, "stratify", None)
    strata = {s.id: str(s.metadata[key]) for s in plan.samples if key and s.metadata.get(key) is not None}
    if strata:
        store.write_strata(plan.spec.name, key, strata)


def _run_record(spec: RunSpec, task_spec: TaskSpec, spec_hash: str) -> RunRecord:
    sampling = spec.sampling()
    return RunRecord(
        spec_hash=spec_hash,
        variant=spec.variant_name,
        task=task_spec.name,
        engine=spec.engine,
        model_path=spec.model_ref,
        thinking_mode=spec.thinking,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        max_tokens=spec.max_tokens,
        seed=spec.seed,
        spec_json=spec.model_dump_json(),
        created=time.time(),
    )


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


def engine_stream(
    engine: Engine, requests: Sequence[ChatRequest], batch_size: int
) -> Iterator[tuple[int, Outcome]]:
    """The engine's own stream (it keeps its queue full), or, for an engine with only `generate`,
    chunks of `batch_size` requests."""
    if callable(getattr(engine, "stream", None)):
        return engine.stream(requests)
    return stream_in_chunks(engine, requests, batch_size)


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
        store.write_results(r for r in batch if isinstance(r, ResultRow))
        store.write_failures(f for f in batch if isinstance(f, Failure))
        return []


def chat_request(spec: RunSpec, sample: Sample, index: int) -> ChatRequest:
    """The request for sample `index` of `sample` under `spec` (its seed: spec.seed + index)."""
    return ChatRequest(
        messages=(Message(role="user", content=sample.prompt),),
        sampling=replace(spec.sampling(), seed=spec.seed + index),
        enable_thinking=spec.thinking,
    )


def _failure(spec: RunSpec, plan: _Plan, sample: Sample, index: int, failure: RequestFailure) -> Failure:
    return Failure(
        variant=spec.variant_name,
        task=plan.spec.name,
        item_id=sample.id,
        sample=index,
        spec_hash=plan.spec_hash,
        error=failure.error,
        attempts=failure.attempts,
        created=time.time(),
    )


def _row(spec: RunSpec, plan: _Plan, sample: Sample, index: int, generation: Generation) -> ResultRow:
    judgement = plan.task.judge(sample, generation.answer)
    return ResultRow(
        variant=spec.variant_name,
        task=plan.spec.name,
        item_id=sample.id,
        sample=index,
        spec_hash=plan.spec_hash,
        seed=spec.seed + index,
        target=sample.target,
        **asdict(generation),  # text, thinking, answer, token counts, finish_reason, seconds: as generated
        answer_tokens=max(generation.completion_tokens - generation.thinking_tokens, 0),
        correct=judgement.correct,
        extracted=judgement.extracted,
        created=time.time(),
        prompt_sha=text_fingerprint(sample.prompt, sample.target),
    )
