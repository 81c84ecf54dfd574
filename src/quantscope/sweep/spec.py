"""The sweep file and the jobs it expands to.

A sweep is a matrix: models × recipes (quantize jobs) and models × variants × settings × tasks
(eval jobs). One YAML file names it all; `load_sweep` validates it (every bad key or value is one
QuantscopeError naming the file and the field) and `plan_jobs` expands it into `QuantizeJob`s and
`EvalJob`s with their dependencies (an eval of a recipe's export needs that export's quantize job).

Everything a sweep writes lives under its `out` folder, so a rerun finds what the last run left:

    <out>/checkpoints/<model>/<recipe>/       the export (with its quantscope.json manifest)
    <out>/twins/<model>/<recipe>/             its evaluation twin, when `eval.twin` names a GPU
    <out>/<model>/<setting>/quantscope.db     one results store per (model, setting): its variants
                                              are compared with one baseline under one setting
    <out>/<model>/<setting>/report.html       the report written at the end of the sweep

A variant is the model's source checkpoint ("bf16", the baseline by default), a recipe's export
(any other recipe name: a preset or a recipe YAML file), or a published checkpoint (`published`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quantscope.errors import QuantscopeError, invalid
from quantscope.evaluate.spec import DEFAULT_K, DEFAULT_MAX_TOKENS, RunSpec, TaskSpec
from quantscope.records import read_yaml

SOURCE_RECIPE = "bf16"
"""The recipe name that means "the source checkpoint as it is" (not quantized)."""

TOY_SOURCE = "toy"
"""The model source that means the bundled tiny reasoner."""

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
"""Names become folder names and variant names: letters, digits, `.`, `_`, `-`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Published(_Strict):
    """A published quantized checkpoint evaluated as it is: its variant `name` and `model` (a hub
    id or a local directory)."""

    name: str = Field(pattern=_NAME)
    model: str = Field(min_length=1)


class ModelEntry(_Strict):
    """One model of the sweep: its `name` (a folder name), its `source` checkpoint (hub id, local
    directory, or "toy": the bundled reasoner), the `published` checkpoints of it to evaluate as
    they are, and optionally a `config` (a config.json, relative to the sweep file) that
    `--dry-run` plans from when the source's headers cannot be read (offline)."""

    name: str = Field(pattern=_NAME)
    source: str = Field(min_length=1)
    published: tuple[Published, ...] = ()
    config: str | None = None


class Setting(_Strict):
    """One generation setting every variant is evaluated under (its own store): `name`, thinking
    on or off, and optionally a sampling preset or explicit sampling values, cap and k that
    override the sweep's `eval` block."""

    name: str = Field(pattern=_NAME)
    thinking: bool = True
    preset: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    k: int | None = Field(default=None, ge=1)


class EvalBlock(_Strict):
    """How every eval job runs (see `evaluate.spec.RunSpec` for the fields): the engine and its options
    (`tensor_parallel_size`: the GPUs of one vLLM engine), k samples, the cap, the seed, an item
    `limit`, the commit window, and `twin`: a GPU name to evaluate each export through its
    evaluation twin for that GPU (`quantscope.quantize.twin`; for CPU machines, where transformers runs
    quantized layers too slowly) instead of the export itself.

    `replicas`: engines per eval job on Ray, each with its own GPUs and an equal share of the
    job's requests (data parallelism). vLLM's `LLM(data_parallel_size=N)` refuses to run in one
    process (vllm/entrypoints/llm.py; its offline data parallelism is one process per rank, each
    given its own share of the prompts: examples/features/data_parallel/data_parallel_offline.py),
    so a sweep makes each rank an engine actor and Ray places them. Without Ray one engine runs."""

    engine: str = "vllm"
    engine_options: dict[str, Any] = Field(default_factory=dict)
    k: int = Field(default=DEFAULT_K, ge=1)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    seed: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    twin: str | None = None
    replicas: int = Field(default=1, ge=1)

    @field_validator("engine_options")
    @classmethod
    def _no_data_parallel_option(cls, value: dict[str, Any]) -> dict[str, Any]:
        if int(value.get("data_parallel_size", 1)) > 1:
            raise ValueError(
                "data_parallel_size: vLLM runs data parallelism as one process per replica; in a "
                "sweep set `replicas` under eval instead (each replica an engine actor on Ray)"
            )
        return value

    @field_validator("engine")
    @classmethod
    def _engine_the_sweep_starts(cls, value: str) -> str:
        if value == "openai":
            raise ValueError(
                "a sweep starts its own engines: use vllm or transformers (to evaluate a running "
                "server, use `quantscope eval --engine openai`)"
            )
        return value


class QuantizeBlock(_Strict):
    """How every quantize job runs: `quantize.QuantizeOptions` fields (AutoRound iters, samples,
    sequence length, the calibration dataset, device, export format, the KL check)."""

    iters: int = Field(default=200, ge=0)
    nsamples: int = Field(default=128, ge=1)
    seqlen: int = Field(default=2048, ge=1)
    dataset: str | None = None
    split: str = "train"
    text_field: str | None = None
    export_format: str | None = None
    batch_size: int = Field(default=8, ge=1)
    seed: int = 42
    device: str = "cuda"
    verify: bool = True
    max_kl: float | None = None


class RayBlock(_Strict):
    """Ray settings. Resources per job: `quantize_gpus` (default 1 when quantizing on cuda, else 0)
    and `quantize_cpus`; each engine of an eval job (`eval.replicas` of them) asks for
    tensor_parallel_size GPUs under vLLM, one GPU under transformers on cuda, and `eval_cpus`
    CPUs. Retries are Ray's own:
    `max_retries` for a quantize task lost with its worker or node, `max_restarts` and
    `max_task_retries` for an eval job's engine actor. `num_cpus`, `num_gpus` and
    `object_store_mb` only size a local Ray instance the sweep starts itself (no cluster running)."""

    quantize_gpus: float | None = Field(default=None, ge=0)
    quantize_cpus: float = Field(default=1, ge=0)
    eval_cpus: float = Field(default=1, ge=0)
    max_retries: int = Field(default=3, ge=0)
    max_restarts: int = Field(default=1, ge=0)
    max_task_retries: int = Field(default=0, ge=0)
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)
    object_store_mb: int | None = Field(default=None, ge=75)


class Sweep(_Strict):
    """A sweep file (see the module docstring). `recipes` are presets or recipe YAML files
    (relative to the sweep file); "bf16" is the source itself; `baseline` names the variant each
    store compares against (default "bf16"); `gpu` is the GPU `--dry-run` estimates GPU-hours on."""

    name: str = Field(pattern=_NAME)
    out: str | None = None
    models: tuple[ModelEntry, ...] = Field(min_length=1)
    recipes: tuple[str, ...] = (SOURCE_RECIPE,)
    baseline: str = SOURCE_RECIPE
    tasks: tuple[TaskSpec, ...] = Field(min_length=1)
    settings: tuple[Setting, ...] = (Setting(name="thinking"),)
    eval: EvalBlock = Field(default_factory=EvalBlock)
    quantize: QuantizeBlock = Field(default_factory=QuantizeBlock)
    ray: RayBlock = Field(default_factory=RayBlock)
    gpu: str = "H100"
    base_dir: str = "."

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks_from_strings(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(TaskSpec.parse(v) if isinstance(v, str) else v for v in value)
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> Sweep:
        for what, names in (
            ("models", [m.name for m in self.models]),
            ("settings", [s.name for s in self.settings]),
            ("tasks", [t.name for t in self.tasks]),
            ("recipes", [recipe_name(r) for r in self.recipes]),
        ):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{what}: {', '.join(repeated)} appear more than once; names must be unique")
        for model in self.models:
            clash = {p.name for p in model.published} & {recipe_name(r) for r in self.recipes}
            if clash:
                raise ValueError(f"model {model.name}: published {sorted(clash)} share a recipe's name")
        variants = {recipe_name(r) for r in self.recipes} | {p.name for m in self.models for p in m.published}
        if self.baseline not in variants:
            raise ValueError(f"baseline {self.baseline!r} is neither a recipe nor a published checkpoint")
        return self

    @property
    def out_dir(self) -> Path:
        """Where the sweep writes: `out` (relative to the current directory), else `./<name>`."""
        return Path(self.out or self.name).expanduser().resolve()


def recipe_name(recipe: str) -> str:
    """A recipe's variant name: the preset name, or a recipe file's stem."""
    return Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """The sweep in YAML file `path`; `out` overrides its output folder. Relative recipe and task
    files are read relative to the sweep file. QuantscopeError names the file and each bad field."""
    path = Path(path)
    data = read_yaml(path, "sweep")
    if out is not None:
        data["out"] = str(out)
    data["base_dir"] = str(path.resolve().parent)
    try:
        sweep = Sweep.model_validate(data)
    except ValidationError as error:
        raise invalid(error, f"invalid sweep ({path})", Sweep.model_fields) from None
    _check_recipes(sweep, path)
    return sweep


def _check_recipes(sweep: Sweep, path: Path) -> None:
    from quantscope.plan.recipe import load_recipe

    for recipe in sweep.recipes:
        if recipe == SOURCE_RECIPE:
            continue
        try:
            load_recipe(_resolve(sweep, recipe) if recipe.endswith((".yaml", ".yml")) else recipe)
        except QuantscopeError as error:
            raise QuantscopeError(f"{path}: recipes: {error}") from None


def _resolve(sweep: Sweep, relative: str) -> str:
    path = Path(relative).expanduser()
    return str(path if path.is_absolute() else Path(sweep.base_dir) / path)


# ---- jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizeJob:
    """Quantize `source` with `recipe` into `out` (then its twin into `twin` for `twin_gpu`)."""

    id: str
    """The job's name in the sweep's plan and logs."""
    model: str
    """The sweep's name for the model."""
    recipe: str
    source: str
    """The checkpoint quantized (local directory or hub id)."""
    out: Path
    twin: Path | None = None
    twin_gpu: str | None = None


@dataclass(frozen=True)
class EvalJob:
    """Evaluate one variant of one model under one setting on every task: `spec` into the store
    at `store`; `needs` is the quantize job it waits for (None for a source or published model)."""

    id: str
    """The job's name in the sweep's plan and logs."""
    model: str
    setting: str
    """The sweep's name for the setting (sampling, cap, thinking)."""
    variant: str
    """The variant's name in the store."""
    store: Path
    spec: RunSpec
    needs: str | None = None


@dataclass(frozen=True)
class Jobs:
    """Every job of a sweep: quantize jobs first, then eval jobs (model, setting, variant order)."""

    quantize: tuple[QuantizeJob, ...]
    evals: tuple[EvalJob, ...]

    def stores(self) -> tuple[Path, ...]:
        """The results stores the eval jobs write, in order."""
        return tuple(dict.fromkeys(job.store for job in self.evals))


def plan_jobs(sweep: Sweep) -> Jobs:
    """Expand `sweep` into its jobs (no file is read or written)."""
    out = sweep.out_dir
    quantize = tuple(
        _quantize_job(sweep, model, recipe, out)
        for model in sweep.models
        for recipe in sweep.recipes
        if recipe != SOURCE_RECIPE
    )
    by_key = {(q.model, q.recipe): q for q in quantize}
    evals = []
    for model in sweep.models:
        for setting in sweep.settings:
            store = out / model.name / setting.name
            for recipe in sweep.recipes:
                job = by_key.get((model.name, recipe_name(recipe)))
                evals.append(_eval_job(sweep, model, setting, recipe_name(recipe), store, job))
            for published in model.published:
                evals.append(_eval_job(sweep, model, setting, published.name, store, None, published.model))
    return Jobs(quantize, tuple(evals))


def _quantize_job(sweep: Sweep, model: ModelEntry, recipe: str, out: Path) -> QuantizeJob:
    name = recipe_name(recipe)
    twin = out / "twins" / model.name / name if sweep.eval.twin else None
    return QuantizeJob(
        id=f"quantize {model.name}/{name}",
        model=model.name,
        recipe=_resolve(sweep, recipe) if recipe.endswith((".yaml", ".yml")) else recipe,
        source=source_of(sweep, model),
        out=out / "checkpoints" / model.name / name,
        twin=twin,
        twin_gpu=sweep.eval.twin,
    )


def source_of(sweep: Sweep, model: ModelEntry) -> str:
    """The source as a path when it is local (relative to the sweep file), "toy" as the bundled
    checkpoint, else the hub id as given."""
    if model.source == TOY_SOURCE:
        from quantscope.toy.bundled import checkpoint_dir

        return str(checkpoint_dir())
    local = Path(sweep.base_dir) / model.source
    return str(local.resolve()) if not Path(model.source).is_absolute() and local.exists() else model.source


def _eval_job(
    sweep: Sweep,
    model: ModelEntry,
    setting: Setting,
    variant: str,
    store: Path,
    quantize: QuantizeJob | None,
    published: str | None = None,
) -> EvalJob:
    if quantize is not None:
        checkpoint = str(quantize.twin or quantize.out)
        memory_from = str(quantize.out) if quantize.twin else None
    else:
        checkpoint, memory_from = published or source_of(sweep, model), None
    spec = _run_spec(sweep, setting, checkpoint, variant, memory_from)
    return EvalJob(
        id=f"eval {model.name}/{setting.name}/{variant}",
        model=model.name,
        setting=setting.name,
        variant=variant,
        store=store,
        spec=spec,
        needs=quantize.id if quantize else None,
    )


def _run_spec(sweep: Sweep, setting: Setting, model: str, variant: str, memory_from: str | None) -> RunSpec:
    block = sweep.eval
    sampling = setting.model_dump(exclude={"name", "thinking", "max_tokens", "k"}, exclude_none=True)
    tasks = tuple(
        t.model_copy(update={"path": _resolve(sweep, t.path)}) if t.path else t for t in sweep.tasks
    )
    try:
        return RunSpec(
            model=model,
            tasks=tasks,
            variant=variant,
            engine=block.engine,
            thinking=setting.thinking,
            max_tokens=setting.max_tokens or block.max_tokens,
            k=setting.k or block.k,
            seed=block.seed,
            limit=block.limit,
            batch_size=block.batch_size,
            engine_options=block.engine_options,
            recipe=None if variant == SOURCE_RECIPE else variant,
            baseline=variant == sweep.baseline,
            memory_from=memory_from,
            **sampling,
        )
    except ValidationError as error:
        raise invalid(error, f"sweep {sweep.name}: setting {setting.name}", RunSpec.model_fields) from None
