"""Recipe → AutoRound run: the argument mapping (pure, unit-tested) and the run itself.

`plan_autoround` turns a recipe resolved against a checkpoint's anatomy (`recipe.assign_schemes`)
into AutoRound 0.16 arguments: the recipe's main scheme, and one exact `layer_config` entry for
every linear module stored in another format (16-bit or an override). Entries are complete
(16-bit: `bits`, `act_bits`, `data_type`, `act_data_type`): AutoRound fills missing keys from the
main scheme, so a bare `{"bits": 16}` under NVFP4 becomes `nv_fp` at 16 bits and fails with
"No quantization function found for dtype=nv_fp, bits=16".

`hybrid_attention_masks` fixes AutoRound on hybrid linear/full-attention stacks (Qwen3.5,
Qwen3-Next); see its docstring for the root cause. `restore_source_dtypes` undoes AutoRound's
float32 upcast of the layers it leaves unquantized on CPUs without native bf16. MTP layers in FP
formats, which AutoRound copies 16-bit, are written after the export (`quantize.rtn_layers`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantscope.checkpoint.anatomy import Anatomy, TensorInfo
from quantscope.errors import QuantscopeError
from quantscope.formats import Format, get_format
from quantscope.plan.recipe import Recipe, assign_schemes
from quantscope.quantize.manifest import AutoRoundSettings
from quantscope.quantize.rtn_layers import refuse_unwritable, rtn_modules, write_rtn_layers
from quantscope.util import atomic_path, frozen_heap, write_atomic

# A complete 16-bit layer_config entry (see the module docstring for why every key is needed).
KEEP_16BIT: Mapping[str, Any] = {"bits": 16, "act_bits": 16, "data_type": "float", "act_data_type": "float"}

# transformers v5 stores a Qwen-style MoE layer's experts as two 3-D parameters; AutoRound splits
# them into per-expert linears (`experts.{i}.gate_proj/up_proj/down_proj`) and exports those names.
_FUSED_EXPERTS = {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}


@dataclass(frozen=True)
class AutoRoundPlan:
    """Everything AutoRound needs from a recipe, in AutoRound's terms.

    `scheme`: a preset name ("W4A16", "NVFP4", …) or a scheme dict for integer variants.
    `layer_config`: exported module name -> AutoRound layer config, for every linear module not
    stored in the main scheme. `assignment`: every exported linear module -> quantscope format name.
    `export_format`: the AutoRound `format=` value.
    """

    recipe: str
    main_format: str
    scheme: str | Mapping[str, Any]
    layer_config: Mapping[str, Any]
    quant_lm_head: bool
    export_format: str
    assignment: Mapping[str, str] = field(repr=False)

    @property
    def kept(self) -> tuple[str, ...]:
        """Exported linear modules the recipe leaves in 16-bit, sorted."""
        return tuple(
            sorted(name for name, fmt in self.assignment.items() if not get_format(fmt).is_quantized)
        )


def export_module_names(tensor: TensorInfo) -> tuple[str, ...]:
    """The module names AutoRound exports for one checkpoint linear weight.

    The identity, except for fused 3-D experts (`…experts.gate_up_proj` `[E, 2I, H]`), which are
    exported per expert (`…experts.{i}.gate_proj` and `…experts.{i}.up_proj` for i < E).
    """
    module = tensor.module
    parent, _, leaf = module.rpartition(".")
    if len(tensor.shape) == 3 and parent.endswith(".experts") and leaf in _FUSED_EXPERTS:
        return tuple(f"{parent}.{i}.{part}" for i in range(tensor.shape[0]) for part in _FUSED_EXPERTS[leaf])
    return (module,)


def exported_assignment(anatomy: Anatomy, assignment: Mapping[str, str]) -> dict[str, str]:
    """`assign_schemes` output re-keyed by exported module name (fused experts split per expert)."""
    weights = {tensor.module: tensor for tensor in anatomy.tensors if tensor.is_linear_weight}
    exported: dict[str, str] = {}
    for module, fmt in assignment.items():
        for name in export_module_names(weights[module]):
            exported[name] = fmt
    return exported


def layer_config_entry(fmt: Format) -> Any:
    """The AutoRound layer_config value storing one module in `fmt`: its explicit settings where
    the format declares them (`Format.autoround_settings`), else its preset."""
    if not fmt.is_quantized:
        return dict(KEEP_16BIT)
    return dict(fmt.autoround_settings) if fmt.autoround_settings else fmt.autoround_scheme


def autoround_scheme(fmt: Format) -> str | dict[str, Any]:
    """The AutoRound `scheme=` value for a recipe's main format; raises for 16-bit formats."""
    if not fmt.is_quantized:
        raise QuantscopeError(
            f"scheme {fmt.name!r} quantizes nothing: there is no AutoRound run to do; "
            "use the source checkpoint as the 16-bit variant"
        )
    if fmt.autoround_scheme is None or not fmt.preset_exact:
        return layer_config_entry(fmt)
    return fmt.autoround_scheme


def choose_export_format(formats: Sequence[Format], requested: str | None) -> str:
    """The AutoRound export format for a set of stored formats, checking it can hold all of them.

    `requested` None picks the main (first) format's default. Raises QuantscopeError naming the
    scheme and the export formats that would work.
    """
    quantized = [fmt for fmt in formats if fmt.is_quantized]
    chosen = requested or quantized[0].export_routes[0]
    for fmt in quantized:
        allowed = fmt.export_routes
        if chosen not in allowed:
            raise QuantscopeError(
                f"scheme {fmt.name!r} cannot be exported in format {chosen!r}; "
                f"use --format {' or '.join(allowed) or '(none available)'}"
            )
    return chosen


def transformers_load_problem(plan: AutoRoundPlan) -> str | None:
    """Why transformers would load this export wrongly (so it cannot be verified), or None."""
    if any(get_format(fmt).block for fmt in plan.assignment.values()):  # block-scaled FP8
        return (
            "transformers cannot load FP8 block-scaled exports (auto_round: its AutoRoundConfig rejects a "
            "2-D group_size; llm_compressor: compressed-tensors fails to dequantize block scales), so this "
            "export cannot be verified here; pass --no-verify and check it on vLLM"
        )
    return None


def plan_autoround(anatomy: Anatomy, recipe: Recipe, export_format: str | None = None) -> AutoRoundPlan:
    """Resolve `recipe` on `anatomy` and express it as AutoRound arguments.

    Every exported linear module whose format differs from the recipe's main scheme gets an exact
    `layer_config` entry (so the kept-16-bit set is exactly the recipe's, never a substring match).
    The lm_head is quantized only when the recipe's resolution says so.
    """
    main = recipe.format
    scheme = autoround_scheme(main)
    assignment = exported_assignment(anatomy, assign_schemes(anatomy, recipe))
    formats = [main, *(get_format(name) for name in sorted(set(assignment.values())))]
    chosen = choose_export_format(formats, export_format)
    # MTP layers in FP formats are written after the export (`quantize.rtn_layers`)
    refuse_unwritable(
        recipe.name,
        main.name,
        rtn_modules(assignment),
        chosen,
        "MTP layers",
        "keep MTP 16-bit (keep_groups: [mtp])",
    )
    lm_heads = {t.module for t in anatomy.tensors if t.group == "lm_head"}
    layer_config: dict[str, Any] = {}
    quant_lm_head = False
    for module, fmt_name in assignment.items():
        fmt = get_format(fmt_name)
        if module in lm_heads:
            quant_lm_head = fmt.is_quantized
            if not quant_lm_head:
                continue  # AutoRound leaves lm_head alone unless asked; an entry would switch it on
        if fmt.name != main.name:
            layer_config[module] = layer_config_entry(fmt)
    return AutoRoundPlan(
        recipe=recipe.name,
        main_format=main.name,
        scheme=scheme,
        layer_config=layer_config,
        quant_lm_head=quant_lm_head,
        export_format=chosen,
        assignment=assignment,
    )


# ---------------------------------------------------------------------------------------------
# Hybrid linear / full attention
# ---------------------------------------------------------------------------------------------


def _is_full_attention_layer(module: Any) -> bool:
    return getattr(module, "self_attn", None) is not None and getattr(module, "linear_attn", None) is None


def _rebuild_causal_mask(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import torch
    from transformers.masking_utils import create_causal_mask

    mask = kwargs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
        return None
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    kwargs["attention_mask"] = create_causal_mask(
        config=module.self_attn.config, inputs_embeds=hidden, attention_mask=mask, past_key_values=None
    )
    return args, kwargs


def is_hybrid_attention(model: Any) -> bool:
    """True for models mixing linear-attention and full-attention decoder layers (Qwen3.5, Qwen3-Next)."""
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = set(getattr(config, "layer_types", None) or ())
    return {"linear_attention", "full_attention"} <= layer_types


@contextlib.contextmanager
def hybrid_attention_masks(model: Any) -> Iterator[int]:
    """Give every full-attention layer a causal mask while AutoRound replays cached block inputs.

    Root cause: AutoRound caches the keyword inputs of the *first* decoder block only and replays
    them to every block. Qwen3.5's model forward builds two masks (`causal_mask_mapping`): a 4-D
    causal mask for full-attention layers and the raw 2-D padding mask for linear-attention (Gated
    DeltaNet) layers. Block 0 is linear attention, so the cached `attention_mask` is the 2-D
    integer padding mask, and the first full-attention block hands it to SDPA ("Expected attn_mask
    dtype to be bool or float … got long int"). With user data AutoRound always passes a padding
    mask (it zeroes the last position so the mask is never all ones), so this hits every run
    that does not use its default hub dataset.

    The fix: a forward pre-hook on each full-attention decoder layer that turns a 2-D mask into
    the layer's causal mask with transformers' own `create_causal_mask`, exactly what the model
    forward would have passed. A normal forward never hands a 2-D mask to a decoder layer, so
    the hook is a no-op outside the replay. Yields the number of hooked layers; removes the hooks
    on exit. Models without hybrid attention get no hooks.
    """
    handles = []
    if is_hybrid_attention(model):
        for module in model.modules():
            if _is_full_attention_layer(module) and hasattr(module, "mlp"):
                handles.append(module.register_forward_pre_hook(_rebuild_causal_mask, with_kwargs=True))
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------------------------
# Running AutoRound
# ---------------------------------------------------------------------------------------------


def runtime_layer_config(plan: AutoRoundPlan, model: Any) -> dict[str, Any]:
    """`plan.layer_config` without entries for modules AutoRound cannot quantize anyway.

    A name that resolves to a module which is not `torch.nn.Linear` (e.g. Qwen3.5's MoE router,
    a custom `TopKRouter` that stays 16-bit) would only make AutoRound warn; names that do not
    resolve yet (per-expert linears AutoRound creates when it splits fused experts) are kept.
    """
    import torch

    kept: dict[str, Any] = {}
    for name, entry in plan.layer_config.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            kept[name] = entry
            continue
        if isinstance(module, torch.nn.Linear):
            kept[name] = entry
    return kept


@dataclass(frozen=True)
class AutoRoundExport:
    """What `run_autoround` wrote: the export folder, and how many tensors `restore_source_dtypes`
    put back from float32 into the source's 16-bit dtype (0 on CPUs with native bf16, and on GPUs)."""

    directory: Path
    restored_tensors: int = 0


def run_autoround(
    model: Any,
    tokenizer: Any,
    plan: AutoRoundPlan,
    samples: Sequence[Any],
    settings: AutoRoundSettings,
    stage_dir: Path,
) -> AutoRoundExport:
    """Quantize `model` in place with AutoRound and export it under `stage_dir`.

    `samples` are AutoRound dataset items (here: dicts with `input_ids` `[1, seqlen]`). Returns the
    folder AutoRound wrote (it names a sub-folder after the model and scheme), with unquantized
    tensors in the source's dtype. AutoRound errors are re-raised as QuantscopeError with the
    recipe named.
    """
    from auto_round import AutoRound

    stage_dir.mkdir(parents=True, exist_ok=True)
    source_dtypes = {name: tensor.dtype for name, tensor in model.state_dict().items()}
    model_dtype = model.dtype
    with hybrid_attention_masks(model), frozen_heap():
        try:
            rounder = AutoRound(
                model,
                tokenizer,
                scheme=_as_plain(plan.scheme),
                layer_config=runtime_layer_config(plan, model),
                quant_lm_head=plan.quant_lm_head,
                dataset=list(samples),
                iters=settings.iters,
                nsamples=settings.nsamples,
                seqlen=settings.seqlen,
                batch_size=min(settings.batch_size, max(1, len(samples))),
                seed=settings.seed,
                device_map=settings.device,
                low_gpu_mem_usage=False,
            )
            rounder.quantize_and_save(str(stage_dir), format=plan.export_format)
        except (ValueError, RuntimeError, NotImplementedError, AssertionError) as error:
            raise QuantscopeError(f"AutoRound failed on recipe {plan.recipe!r}: {error}") from error
        except SystemExit as exit_:  # AutoRound calls sys.exit() on some input errors
            raise QuantscopeError(
                f"AutoRound stopped (exit {exit_.code}) on recipe {plan.recipe!r}"
            ) from None
    directory = find_export_dir(stage_dir)
    restored = restore_source_dtypes(directory, source_dtypes, model_dtype, plan.kept)
    complete_ignore_list(directory, (*plan.kept, *_untouched_head(model, plan)))
    declare_weight_only(directory, plan)
    write_rtn_layers(directory, rtn_modules(plan.assignment))
    return AutoRoundExport(directory, restored)


def _untouched_head(model: Any, plan: AutoRoundPlan) -> tuple[str, ...]:
    """The output head's module name when AutoRound leaves it 16-bit.

    A head tied to the embeddings (SmolLM2, small Qwens) has no weight of its own in the
    checkpoint, so the recipe's assignment never names it; the loaded model still has the
    Linear, which a compressed-tensors `Linear` target would otherwise quantize.
    """
    if plan.quant_lm_head:
        return ()
    head = model.get_output_embeddings()
    return tuple(name for name, module in model.named_modules() if head is not None and module is head)


def complete_ignore_list(directory: Path, kept: Sequence[str]) -> tuple[str, ...]:
    """Add to a compressed-tensors export's `ignore` list every module the recipe kept 16-bit that
    its config groups would otherwise quantize (AutoRound 0.16.1 leaves lm_head out, so a loader
    builds it as FP8 and finds no scales). Rewrites config.json atomically; returns the names added."""
    import json

    from quantscope.quantize.kinds import SIXTEEN, declared_kind

    path = directory / "config.json"
    config = json.loads(path.read_text())
    quant = config.get("quantization_config")
    if not isinstance(quant, dict) or quant.get("quant_method") != "compressed-tensors":
        return ()
    unique = dict.fromkeys(kept)  # a head can be both kept by the recipe and untouched
    added = tuple(module for module in unique if declared_kind(quant, module) != SIXTEEN)
    if added:
        quant["ignore"] = [*(quant.get("ignore") or ()), *added]
        write_atomic(path, json.dumps(config, indent=2) + "\n")
    return added


def declare_weight_only(directory: Path, plan: AutoRoundPlan) -> bool:
    """Make a compressed-tensors export of a weight-only recipe say so: AutoRound 0.16's
    `llm_compressor` export of NVFP4 with 16-bit activations writes the NVFP4 preset's
    `input_activations` (FP4, per group of 16) into every config group but no `input_global_scale`
    tensors, so transformers' loader builds FP4 activations and finds 30 scales missing on the toy.
    compressed-tensors' own NVFP4A16 preset has weights only (compressed_tensors/quantization/
    quant_scheme.py, PRESET_SCHEMES["NVFP4A16"]); so is this config once every quantized module of
    the plan is weight-only. Rewrites config.json atomically; returns whether it changed."""
    import json

    quantized = [get_format(f) for f in plan.assignment.values() if get_format(f).is_quantized]
    if not quantized or any(fmt.act_bits < 16 for fmt in quantized):
        return False
    path = directory / "config.json"
    config = json.loads(path.read_text())
    quant = config.get("quantization_config")
    if not isinstance(quant, dict) or quant.get("quant_method") != "compressed-tensors":
        return False
    groups = [g for g in (quant.get("config_groups") or {}).values() if g.get("input_activations")]
    for group in groups:
        group["input_activations"] = None
    if groups:
        write_atomic(path, json.dumps(config, indent=2) + "\n")
    return bool(groups)


_FP8_SCALES = ("weight_scale", "weight_scale_inv", "input_scale")


def restore_source_dtypes(
    directory: Path, source_dtypes: Mapping[str, Any], model_dtype: Any, kept: Sequence[str]
) -> int:
    """Rewrite float32 tensors of an export into the 16-bit dtype AutoRound writes them in on bf16.

    AutoRound computes in bf16 on GPUs and on CPUs that report AVX512-BF16; elsewhere it casts the
    whole model to float32 and saves every layer it did not quantize (embeddings, norms, kept
    linears) as float32 — twice the bytes the recipe promised — and FP8 scales as float32 too.
    Restored here: a tensor the source held under the same name in bf16/fp16 (lossless: the values
    were 16-bit), the weight or bias of a kept linear the source stored under another name (fused
    3-D experts exported per expert), and the scales of FP8 weights (rounded to `model_dtype`, as
    AutoRound's bf16 path stores them: a relative change under 2^-8, far below FP8's own step).
    Other quantization parameters (int scales and zeros, NVFP4 global scales) are never touched.
    Files are replaced atomically; the shard index's `total_size` is updated. Returns the number
    of tensors restored.
    """
    import torch
    from safetensors import safe_open

    if model_dtype not in (torch.bfloat16, torch.float16):
        return 0  # a float32 source stays float32
    # Decide from the headers; only a shard that holds something to restore is read and rewritten
    # (on GPUs and bf16 CPUs none is, and a large export is not read at all).
    headers = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            headers[path] = {name: handle.get_slice(name).get_dtype() for name in handle.keys()}  # noqa: SIM118
    fp8_modules = {
        name.removesuffix(".weight")
        for dtypes in headers.values()
        for name, dtype in dtypes.items()
        if name.endswith(".weight") and dtype == "F8_E4M3"
    }
    kept_modules = set(kept)

    def target(name: str, dtype: str) -> torch.dtype | None:
        if dtype != "F32":
            return None
        if name in source_dtypes:
            return source_dtypes[name] if source_dtypes[name] in (torch.bfloat16, torch.float16) else None
        module, _, param = name.rpartition(".")
        kept_linear = module in kept_modules and param in ("weight", "bias")
        return model_dtype if kept_linear or (module in fp8_modules and param in _FP8_SCALES) else None

    restored = 0
    for path, dtypes in headers.items():
        casts = {name: cast for name, dtype in dtypes.items() if (cast := target(name, dtype))}
        if casts:
            _rewrite_shard(path, casts)
            restored += len(casts)
    if restored:
        _update_index_total_size(directory)
    return restored


def _rewrite_shard(path: Path, casts: Mapping[str, Any]) -> None:
    """Replace safetensors file `path` atomically, with the tensors named in `casts` cast to their dtype."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    for name, dtype in casts.items():
        tensors[name] = tensors[name].to(dtype)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _update_index_total_size(directory: Path) -> None:
    import json

    from quantscope.checkpoint.load import load_anatomy

    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        return
    data = json.loads(index.read_text())
    data.setdefault("metadata", {})["total_size"] = load_anatomy(directory).total_bytes
    write_atomic(index, json.dumps(data, indent=2) + "\n")


def _as_plain(scheme: str | Mapping[str, Any]) -> str | dict[str, Any]:
    return scheme if isinstance(scheme, str) else dict(scheme)


def find_export_dir(stage_dir: Path) -> Path:
    """The folder holding AutoRound's export: `stage_dir` itself or its one sub-folder with a config."""
    if (stage_dir / "config.json").is_file():
        return stage_dir
    found = [path.parent for path in sorted(stage_dir.glob("*/config.json"))]
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise QuantscopeError(
            f"{stage_dir}: expected one exported model folder from AutoRound, found {names}"
        )
    return found[0]
