"""The profiler: a model loaded once, every unit measured in every scheme, and a whole recipe's damage.

For each unit the profiler fake-quantizes exactly the weights a recipe would quantize there,
runs the calibration sequences, and measures KL(original || quantized) of the next-token
distribution at every position (`meter`). Everything is deterministic: no sampling, fixed
windows, fixed order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from quantscope.calibration import CalibrationSource, build_calibration, load_documents
from quantscope.checkpoint.load import load_anatomy
from quantscope.checkpoint.modeling import default_dtype, load_causal_lm
from quantscope.errors import QuantscopeError
from quantscope.formats import get_format
from quantscope.gpus import DEFAULT_TARGET, get_gpu
from quantscope.numerics.actquant import ActPoint, calibrate, hookable, share_across_experts
from quantscope.numerics.fakequant import QdqTarget, loaded_tensors
from quantscope.numerics.served import KernelSet, kind_of, served_activations, text_model_type
from quantscope.plan.recipe import save_recipe
from quantscope.sensitivity.meter import KLMeter, make_buckets
from quantscope.sensitivity.records import Damage, SensitivityProfile, UnitProfile, load_profile, save_profile
from quantscope.sensitivity.search import SearchResult, search_recipe
from quantscope.sensitivity.units import (
    Unit,
    assignment_targets,
    build_units,
    quantized_assignment,
    unit_bytes,
    unit_targets,
)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ProfileOptions:
    """Settings of `run_profile` (the `quantscope profile` command).

    Measuring: `data` (calibration source, see `quantscope.calibration`; None = the bundled toy
    model's own text), `scheme` and `also` (extra schemes measured per unit), `per_layer`,
    `n_sequences` windows of `seq_len` tokens, `bucket_edges` (token positions), `device`,
    `dtype`, `batch_size`, `gpu` (the serving GPU whose activation rounding is emulated, see
    `quantscope.gpus`; None: weights only) and `kernels` (the kernel packages vLLM has there,
    `quantscope.numerics.served.KernelSet`; None: vLLM 0.32's CUDA wheel's); `out` the profile JSON
    (default `default_profile_path`). Or
    `from_profile`: reuse a saved profile and measure nothing. Searching (when `budget_bytes`
    (bytes) or `avg_bits` is set): `objective`, `recipe_out` (default `<recipe name>.yaml`) and
    `validate` (measure the searched recipe's real KL, when the model is loaded).
    """

    data: CalibrationSource = None
    scheme: str = "nvfp4"
    also: tuple[str, ...] = ()
    per_layer: bool = False
    n_sequences: int = 8
    seq_len: int = 512
    bucket_edges: tuple[int, ...] | None = None
    device: str = "cpu"
    dtype: str | None = None
    batch_size: int = 4
    gpu: str | None = DEFAULT_TARGET
    kernels: KernelSet | None = None
    out: Path | None = None
    from_profile: Path | None = None
    budget_bytes: int | None = None
    avg_bits: float | None = None
    objective: str = "mean"
    recipe_out: Path | None = None
    validate: bool = True


@dataclass(frozen=True)
class ProfileRun:
    """What `run_profile` did: the profile (measured now, or read from `from_profile`) and the file
    it was written to (None when reused); with a budget, the searched recipe, its YAML file and,
    when validated, its measured damage."""

    profile: SensitivityProfile
    profile_path: Path | None
    search: SearchResult | None = None
    recipe_path: Path | None = None
    measured: Damage | None = None


def calibration_tokens(
    documents: Sequence[Any], tokenizer: Any, n_sequences: int, seq_len: int
) -> torch.Tensor:
    """Calibration documents (see `quantscope.calibration`) as a `[n, seq_len]` int64 tensor of the
    first `n <= n_sequences` windows, in the documents' order (not shuffled, so a window can be
    traced back to its text). Raises QuantscopeError when there is not one window of text."""
    calibration = build_calibration(
        tokenizer,
        documents,
        nsamples=n_sequences,
        seqlen=seq_len,
        source="the calibration data",
        shuffle_seed=None,
    )
    return torch.tensor(calibration.windows, dtype=torch.long)


class Profiler:
    """A model loaded for profiling: its anatomy, calibration tokens and a reference pass.

    `profile(scheme)` measures every unit; `measure_recipe(recipe)` measures a whole recipe at
    once (what the search predicts by summing). Loading costs one model load and one forward
    pass over the calibration tokens; each measurement costs one more forward pass.
    """

    def __init__(
        self,
        source: str | Path,
        data: CalibrationSource = None,
        *,
        options: ProfileOptions | None = None,
        **settings: Any,
    ) -> None:
        """Load `source` for profiling on calibration `data` with `options`' measuring settings;
        `settings` override single fields (e.g. `n_sequences=2, seq_len=64`)."""
        self.started = time.perf_counter()
        self.source = str(source)
        self.options = replace(
            options or ProfileOptions(), **({"data": data} if data is not None else {}), **settings
        )
        opts = self.options
        # Read the data before loading the model: a bad file fails in a second, not after the load.
        self.data, documents = load_documents(opts.data, model=source, seed=0)
        self.anatomy = load_anatomy(source)
        loaded = load_causal_lm(source, device=opts.device, dtype=opts.dtype or default_dtype(opts.device))
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.tokens = calibration_tokens(documents, self.tokenizer, opts.n_sequences, opts.seq_len)
        self.buckets = make_buckets(self.tokens.shape[1], opts.bucket_edges)
        fused = [fused.members for fused in self.anatomy.fused_sets]
        self.meter = KLMeter(self.model, self.tokens, self.buckets, opts.batch_size, fused)
        self.gpu = get_gpu(opts.gpu) if opts.gpu else None
        self.kernels = opts.kernels or KernelSet()
        config = getattr(self.model, "config", None)
        self.model_type = text_model_type(config.to_dict()) if config is not None else None
        self.input_amax = self._calibrate_inputs(fused) if self.gpu else {}

    def _calibrate_inputs(self, fused: Sequence[Sequence[str]]) -> dict[str, float | None]:
        """Every linear layer's input |max| on the calibration tokens (shared across fused sets and
        a MoE layer's experts as the export will store it): the static activation scales."""
        modules = hookable(self.model, [t.module for t in self.anatomy.tensors if t.is_linear_weight])
        points = [ActPoint(m, "fp8") for m in modules]
        measured = calibrate(self.model, points, self.meter.reference_pass, fused)
        return {p.module: p.amax for p in measured}

    def activations(self, targets: Sequence[QdqTarget]) -> list[ActPoint]:
        """The layer inputs the target GPU rounds for `targets`, as vLLM runs each layer kind
        there (`quantscope.numerics.served`); MoE expert inputs share their layer's largest |max| where the
        serving kernel takes one scale per layer. None without a GPU."""
        if self.gpu is None:
            return []
        points, shared = [], set()
        for target in targets:
            for module in _input_modules(target, self.model):
                served = served_activations(
                    target.format, self.gpu, kind_of(module), self.kernels, self.model_type
                )
                if not served.activations:
                    continue
                amax = self.input_amax.get(module)
                points.append(
                    ActPoint(
                        module, target.format, amax, served.mx_scale_rule, served.act, served.pow2_scales
                    )
                )
                if served.shared_scale:
                    shared.add(module)
        return share_across_experts(points, lambda point: point.module in shared)

    def measure(self, targets: Sequence[QdqTarget], label: str) -> Damage:
        """Damage of `targets` in their formats, with the target GPU's activation rounding."""
        return self.meter.measure(targets, label, self.activations(targets))

    def units(self, assignment: Mapping[str, str], per_layer: bool = False) -> tuple[list[Unit], list[str]]:
        """The units of `assignment` the loaded model holds, and the groups it lacks."""
        present = loaded_tensors(self.model, assignment)
        units = build_units(self.anatomy, assignment, per_layer, present)
        if not units:
            raise QuantscopeError(
                f"{self.source}: the loaded model holds none of the weights the recipe quantizes"
            )
        missing = sorted({self.anatomy.tensor(name).group for name in set(assignment) - present})
        return units, missing

    def profile(
        self,
        scheme: str = "nvfp4",
        extra_schemes: Sequence[str] = (),
        per_layer: bool = False,
        progress: Progress | None = None,
    ) -> SensitivityProfile:
        """Measure every unit alone in `scheme` and in each of `extra_schemes` (e.g. "fp8", so the
        search can pick FP8 for fragile units), plus all units at once per scheme.

        `progress(description, done, total)` is called after each measurement.
        """
        scheme = get_format(scheme).name
        schemes = tuple(dict.fromkeys([scheme, *(get_format(s).name for s in extra_schemes)]))
        assignments = {option: quantized_assignment(self.anatomy, option) for option in schemes}
        units, missing = self.units(assignments[scheme], per_layer)
        total, done = len(units) * len(schemes) + len(schemes), 0
        profiles = []
        for unit in units:
            damages = []
            for option in schemes:
                targets = unit_targets(self.model, unit, assignments[option])
                damages.append(self.measure(targets, option))
                done += 1
                if progress:
                    progress(f"{unit.name} {option}", done, total)
            profiles.append(_unit_profile(unit, assignments, damages))
        uniform = []
        for option in schemes:
            targets = [t for unit in units for t in unit_targets(self.model, unit, assignments[option])]
            uniform.append(self.measure(targets, option))
            done += 1
            if progress:
                progress(f"all units {option}", done, total)
        return SensitivityProfile(
            model=self.source,
            scheme=scheme,
            schemes=schemes,
            data=self.data,
            n_sequences=int(self.tokens.shape[0]),
            seq_len=int(self.tokens.shape[1]),
            buckets=self.buckets,
            units=tuple(profiles),
            uniform=tuple(uniform),
            unmeasured=tuple(missing),
            per_layer=per_layer,
            seconds=round(time.perf_counter() - self.started, 3),
            gpu=self.gpu.name if self.gpu else None,
            kernels=self.kernels.describe() if self.gpu else None,
        )

    def measure_assignment(self, formats: Mapping[str, str], label: str) -> Damage:
        """Damage of storing each module in the format `formats` gives it, all at once."""
        return self.measure(assignment_targets(self.model, self.anatomy, formats), label)

    def measure_recipe(self, recipe: Any) -> Damage:
        """Damage of applying the whole `recipe` at once (labelled with the recipe's name)."""
        from quantscope.plan.recipe import assign_schemes

        return self.measure_assignment(assign_schemes(self.anatomy, recipe), recipe.name)


def _input_modules(target: QdqTarget, model: torch.nn.Module) -> list[str]:
    """The checkpoint module names whose inputs a target's GEMMs read: the weight's own module, or
    one per expert for a checkpoint that stores fused 3-D experts."""
    module = target.where.tensor.removesuffix(".weight")
    view = target.where.view(model)
    if view.ndim != 3:
        return [module]
    prefix, _, param = module.rpartition(".")
    projection = "down_proj" if param == "down_proj" else "gate_proj"
    return [f"{prefix}.{expert}.{projection}" for expert in range(view.shape[0])]


def profile_model(
    source: str | Path, options: ProfileOptions | None = None, progress: Progress | None = None
) -> SensitivityProfile:
    """Profile `source` (a checkpoint dir or hub id) with `options` (its measuring fields: data,
    scheme, also, per_layer, windows, buckets, device…); one `Profiler(...).profile(...)` call."""
    options = options or ProfileOptions()
    return Profiler(source, options=options).profile(
        options.scheme, options.also, options.per_layer, progress
    )


def _unit_profile(
    unit: Unit, assignments: Mapping[str, Mapping[str, str]], damages: Sequence[Damage]
) -> UnitProfile:
    return UnitProfile(
        name=unit.name,
        group=unit.group,
        layer=unit.layer,
        tensors=tuple(t.name for t in unit.tensors),
        bytes_kept=unit_bytes(unit, {}),
        bytes_by_scheme={option: unit_bytes(unit, formats) for option, formats in assignments.items()},
        damage=tuple(damages),
    )


def default_profile_path(model: str, scheme: str) -> Path:
    """`./quantscope-profile-<model's last path part>-<scheme>.json`."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.rstrip("/").rsplit("/", 1)[-1]) or "model"
    return Path(f"quantscope-profile-{slug}-{scheme}.json")


def run_profile(model: str, options: ProfileOptions, progress: Progress | None = None) -> ProfileRun:
    """Profile `model` (or reuse a saved profile), then search and write the least-damage recipe for
    the budget when one is given; see `ProfileOptions`. `progress(description, done, total)`
    follows the measurements (total 0 while the model loads)."""
    progress = progress or (lambda _description, _done, _total: None)
    profiler, path = None, None
    if options.from_profile is not None:
        profile, anatomy = load_profile(options.from_profile), load_anatomy(model)
    else:
        progress("loading the model and running the reference pass", 0, 0)
        profiler = Profiler(model, options=options)
        profile, anatomy = (
            profiler.profile(options.scheme, options.also, options.per_layer, progress),
            profiler.anatomy,
        )
        path = save_profile(profile, options.out or default_profile_path(model, profile.scheme))
    if options.budget_bytes is None and options.avg_bits is None:
        return ProfileRun(profile, path)
    found = search_recipe(
        profile,
        anatomy,
        budget_bytes=options.budget_bytes,
        avg_bits=options.avg_bits,
        objective=options.objective,
    )
    recipe_path = options.recipe_out or Path(f"{found.recipe.name}.yaml")
    save_recipe(found.recipe, recipe_path)
    measured = profiler.measure_recipe(found.recipe) if options.validate and profiler is not None else None
    return ProfileRun(profile, path, found, recipe_path, measured)
