"""A checkpoint's anatomy from its `config.json` alone: the tensors `save_pretrained` would write.

`anatomy_from_config` builds the model with transformers on the meta device (no memory is
allocated, no weights are read, remote code never runs), takes the state dict exactly as
`PreTrainedModel.save_pretrained` turns it into file entries (tied copies dropped, load-time weight
conversions reverted), and adds the multi-token-prediction (MTP) layers that Qwen3.5 / Qwen3-Next
checkpoints hold but the transformers classes drop. Every value filled in for a key the config
lacks is recorded under `config["quantscope_derived"]`.

A quantized checkpoint's config (a `quantization_config`, or ModelOpt's `hf_quant_config.json`
beside it) gets the tensors its producer writes for the formats it declares (`declared`): its
label and footprint come from that declaration, and `quantscope_derived["quantization"]` names
the file it was read from (no weights were read, so the contents are as declared, not as stored).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from quantscope.checkpoint.anatomy import Anatomy, build_anatomy, safetensors_dtype
from quantscope.errors import QuantscopeError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

Header = tuple[str, str, tuple[int, ...], int]

# The dtype assumed when neither the config nor its text_config names one (`dtype` / `torch_dtype`):
# Qwen3.5 and most current checkpoints ship in bfloat16.
DEFAULT_DTYPE = "bfloat16"

# Config key counting the MTP layers, per model type, and its default when absent: vLLM reads
# `mtp_num_hidden_layers` (qwen3_5_mtp.py) and `num_nextn_predict_layers` (qwen3_next_mtp.py),
# both with `getattr(config, key, 1)`.
_MTP_KEYS: dict[str, str] = {
    "qwen3_5": "mtp_num_hidden_layers",
    "qwen3_5_text": "mtp_num_hidden_layers",
    "qwen3_5_moe": "mtp_num_hidden_layers",
    "qwen3_5_moe_text": "mtp_num_hidden_layers",
    "qwen3_next": "num_nextn_predict_layers",
}
_MTP_DEFAULT_LAYERS = 1

# Keys every complete Qwen3.5 config carries that transformers' config classes do not define
# (vLLM reads them): filled in, and named, when a partial config lacks them.
_QWEN35_EXTRA_DEFAULTS: dict[str, Any] = {"mtp_use_dedicated_embeddings": False, "mamba_ssm_dtype": "float32"}


# Config keys that describe a stored quantization, not the architecture: transformers builds the
# unquantized meta model without them; `declared` lays out what they declare afterwards.
_QUANTIZATION_KEYS = ("quantization_config", "hf_quant_config")


def anatomy_from_config(
    config: Mapping[str, Any], source: str, hf_quant_config: Mapping[str, Any] | None = None
) -> Anatomy:
    """The Anatomy a checkpoint written by transformers' `save_pretrained` from `config` would have.

    Tensor by tensor (name, shape, dtype, bytes) it equals `load_anatomy` of such a checkpoint, plus
    the MTP layers (`mtp.*`) real Qwen3.5 / Qwen3-Next checkpoints hold. One dtype for all tensors:
    the config's `dtype` / `torch_dtype` (top level, else text_config), else `DEFAULT_DTYPE`.
    `nbytes` is numel × element size (bytes). `source` names the config in messages and the record.
    A quantized checkpoint's linear weights are laid out as its quantization config declares
    (`declared.declared_headers`); `hf_quant_config` is ModelOpt's file beside the config, if any.
    Raises QuantscopeError naming the field when the config has no usable architecture, or a
    quantization config quantscope cannot lay out.
    """
    import transformers

    architecture = _architecture(config, source)
    dtype, dtype_defaulted = _config_dtype(config)
    kept = {key: value for key, value in config.items() if key not in _QUANTIZATION_KEYS}
    model = _meta_model(_build_config(kept, source), architecture, dtype, source)
    headers = saved_headers(model)
    layers, defaults = _mtp_layer_count(model.config, kept, source)
    headers += mtp_headers(headers, model.config.get_text_config(), layers, source)
    defaults.update(_class_defaults(kept, model.config))
    if dtype_defaulted:
        defaults["dtype"] = DEFAULT_DTYPE
    derived = {
        "from": "config",
        "transformers": transformers.__version__,
        "architecture": type(model).__name__,
        "dtype": dtype,
        "defaults": defaults,
        "mtp_layers": layers,
    }
    full = {**config, **({"hf_quant_config": hf_quant_config} if hf_quant_config else {})}
    headers, derived["quantization"] = _declared(source, kept, full, headers)
    return build_anatomy(source, {**full, "quantscope_derived": derived}, headers)


def _declared(
    source: str, kept: Mapping[str, Any], config: Mapping[str, Any], headers: list[Header]
) -> tuple[list[Header], dict[str, Any] | None]:
    """The headers as the config's quantization declares them, and where it was read (None: none)."""
    from quantscope.checkpoint.declared import declared_headers, quantization_section, sidecar_disagreements

    found = quantization_section(config)
    if found is None:
        return headers, None
    quant, where = found
    unquantized = build_anatomy(source, kept, headers)
    note = {"declared_in": where, "contents_read": False}
    if where == "config.json" and isinstance(config.get("hf_quant_config"), Mapping):
        note["hf_quant_config_disagrees"] = sidecar_disagreements(
            unquantized, quant, config["hf_quant_config"]
        )
    return declared_headers(unquantized, quant, f"{source} ({where})"), note


def _architecture(config: Mapping[str, Any], source: str) -> str:
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise QuantscopeError(
            f"{source}: field 'architectures' is missing or empty; a config.json written by transformers "
            'names the model class there (e.g. ["Qwen3_5ForConditionalGeneration"])'
        )
    if not isinstance(config.get("model_type"), str):
        raise QuantscopeError(
            f"{source}: field 'model_type' is missing; transformers needs it to parse the config"
        )
    return architectures[0]


def _config_dtype(config: Mapping[str, Any]) -> tuple[str, bool]:
    """The config's dtype name (e.g. "bfloat16") and whether it was defaulted."""
    text = config.get("text_config")
    for section in (config, text if isinstance(text, Mapping) else {}):
        for key in ("dtype", "torch_dtype"):
            value = section.get(key)
            if isinstance(value, str) and value != "auto":
                return value.removeprefix("torch."), False
    return DEFAULT_DTYPE, True


def _build_config(config: Mapping[str, Any], source: str) -> PretrainedConfig:
    import transformers
    from transformers import AutoConfig

    fields = {key: value for key, value in config.items() if key != "model_type"}
    try:
        return AutoConfig.for_model(config["model_type"], **fields)
    except (ValueError, KeyError, TypeError) as error:
        raise QuantscopeError(
            f"{source}: transformers {transformers.__version__} cannot parse this config (field "
            f"'model_type' = {config['model_type']!r}: {error}); upgrade transformers, or read the "
            "checkpoint's safetensors headers with load_anatomy"
        ) from None


def _meta_model(config: PretrainedConfig, architecture: str, dtype: str, source: str) -> PreTrainedModel:
    """The model class named by `architecture`, built on the meta device in `dtype`; falls back to
    AutoModelForCausalLM for a class transformers lacks. Never runs remote code."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, PreTrainedModel

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise QuantscopeError(f"{source}: field 'dtype' = {dtype!r} is not a torch dtype (e.g. \"bfloat16\")")
    model_class = getattr(transformers, architecture, None)
    with torch.device("meta"):
        if isinstance(model_class, type) and issubclass(model_class, PreTrainedModel):
            return model_class._from_config(config, dtype=torch_dtype)
        try:
            return AutoModelForCausalLM.from_config(config, dtype=torch_dtype, trust_remote_code=False)
        except (ValueError, KeyError) as error:
            reason = str(error).splitlines()[0]
            raise QuantscopeError(
                f"{source}: transformers {transformers.__version__} has no class {architecture!r} (field "
                f"'architectures') and AutoModelForCausalLM cannot build model_type "
                f"{config.model_type!r} ({reason}); upgrade transformers (quantscope never runs remote code)"
                ", or read the checkpoint's safetensors headers with load_anatomy"
            ) from None


def saved_headers(model: PreTrainedModel) -> list[Header]:
    """`(name, safetensors dtype, shape, nbytes)` of each tensor `model.save_pretrained` would write.

    Mirrors `PreTrainedModel.save_pretrained` in transformers 5.x (`modeling_utils.py`): drop
    `_keys_to_ignore_on_save`, then `remove_tied_weights_from_state_dict` (the tied copy, e.g.
    `lm_head.weight` under tie_word_embeddings), then `core_model_loading.revert_weight_conversion`,
    which undoes the load-time conversions of `conversion_mapping.py` (e.g. Qwen2-MoE-style fused
    `mlp.experts.gate_up_proj` back to per-expert `mlp.experts.{e}.gate_proj.weight`). Both work on
    meta tensors: the tied check keys meta tensors by parameter identity, the reversal only
    chunks/unbinds. nbytes = numel × element size (bytes).
    """
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    state = model.state_dict()
    for key in model._keys_to_ignore_on_save or ():
        state.pop(key, None)
    state = revert_weight_conversion(model, remove_tied_weights_from_state_dict(state, model))
    return [_header(name, tensor) for name, tensor in state.items()]


def _header(name: str, tensor: torch.Tensor) -> Header:
    shape = tuple(int(dim) for dim in tensor.shape)
    return name, safetensors_dtype(tensor.dtype, name), shape, tensor.numel() * tensor.element_size()


def _mtp_layer_count(config: PretrainedConfig, given: Mapping[str, Any], source: str) -> tuple[int, dict]:
    """How many MTP layers the checkpoint holds, and the defaults filled to decide it."""
    text = config.get_text_config()
    key = _MTP_KEYS.get(text.model_type) or _MTP_KEYS.get(config.model_type)
    if key is None:
        return 0, {}
    given_text = given.get("text_config")
    section = given_text if isinstance(given_text, Mapping) else given
    prefix = "text_config." if section is not given else ""
    defaults: dict[str, Any] = {}
    if key not in section:
        defaults[prefix + key] = _MTP_DEFAULT_LAYERS
    if key == "mtp_num_hidden_layers":
        for extra, value in _QWEN35_EXTRA_DEFAULTS.items():
            if extra not in section:
                defaults[prefix + extra] = value
    if section.get("mtp_use_dedicated_embeddings"):
        raise QuantscopeError(
            f"{source}: field '{prefix}mtp_use_dedicated_embeddings' is true, an MTP layout quantscope "
            "has not seen; read the checkpoint's safetensors headers with load_anatomy"
        )
    layers = section.get(key, _MTP_DEFAULT_LAYERS)
    return (layers if isinstance(layers, int) and layers > 0 else 0), defaults


def mtp_headers(
    headers: list[Header], text_config: PretrainedConfig, layers: int, source: str
) -> list[Header]:
    """The MTP head's tensors, named as Qwen3.5 / Qwen3-Next checkpoints store them (top-level `mtp.`).

    Per vLLM's `qwen3_5_mtp.py` / `qwen3_next_mtp.py`: `mtp.fc` (2·hidden → hidden), the norms
    `mtp.pre_fc_norm_embedding`, `mtp.pre_fc_norm_hidden`, `mtp.norm`, and `mtp.layers.{i}` built as
    full-attention decoder layers. Each layer copies the on-disk tensors of the model's first
    full-attention layer, so MoE experts come per expert (`mtp.layers.0.mlp.experts.{e}.gate_proj
    .weight`), as vLLM's expert mapping loads them and real checkpoints store them.
    """
    if layers == 0:
        return []
    prefix, template = _full_attention_layer(headers, text_config, source)
    hidden, dtype = text_config.hidden_size, template[0][1]
    itemsize = next(nbytes // max(1, _numel(shape)) for _, _, shape, nbytes in template)
    head = [("mtp.fc.weight", (hidden, 2 * hidden))] + [
        (f"mtp.{norm}.weight", (hidden,)) for norm in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm")
    ]
    entries = [(name, dtype, shape, _numel(shape) * itemsize) for name, shape in head]
    for index in range(layers):
        entries += [(f"mtp.layers.{index}.{name[len(prefix) :]}", *rest) for name, *rest in template]
    return entries


def _full_attention_layer(
    headers: list[Header], text_config: PretrainedConfig, source: str
) -> tuple[str, list[Header]]:
    """The name prefix (`model.language_model.layers.3.`) and tensors of the first full-attention layer."""
    kinds = getattr(text_config, "layer_types", None) or []
    if "full_attention" not in kinds:
        raise QuantscopeError(f"{source}: field 'layer_types' lists no full_attention layer to model MTP on")
    index = kinds.index("full_attention")
    pattern = re.compile(rf"^((?:[\w]+\.)*?)layers\.{index}\.self_attn\.")
    prefixes = {match.group(0).removesuffix("self_attn.") for h in headers if (match := pattern.match(h[0]))}
    prefixes = {p for p in prefixes if "visual" not in p and "vision" not in p}
    if len(prefixes) != 1:
        raise QuantscopeError(
            f"{source}: cannot find decoder layer {index} (full attention) among the tensors"
        )
    prefix = prefixes.pop()
    return prefix, [h for h in headers if h[0].startswith(prefix)]


def _numel(shape: Iterable[int]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _class_defaults(given: Mapping[str, Any], config: PretrainedConfig) -> dict[str, Any]:
    """`{key: value}` for each field the model's config classes define (top level, text_config,
    vision_config) that `given` lacks, with the value transformers filled in. Fields every
    PretrainedConfig has (return_dict, id2label…) are left out: they describe no architecture."""
    defaults = _missing_fields(given, config, "")
    for sub in ("text_config", "vision_config"):
        given_sub, built_sub = given.get(sub), getattr(config, sub, None)
        if isinstance(given_sub, Mapping) and built_sub is not None:
            defaults.update(_missing_fields(given_sub, built_sub, f"{sub}."))
    return defaults


def _missing_fields(given: Mapping[str, Any], config: PretrainedConfig, prefix: str) -> dict[str, Any]:
    from transformers import PretrainedConfig

    if not dataclasses.is_dataclass(config):
        return {}
    generic = {field.name for field in dataclasses.fields(PretrainedConfig)}
    missing = {}
    for field in dataclasses.fields(config):
        if field.name in generic or field.name in given or field.name.endswith("_config"):
            continue
        missing[prefix + field.name] = _json_ready(getattr(config, field.name, None))
    return missing


def _json_ready(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def estimate_header_bytes(anatomy: Anatomy, shards: int = 1) -> int:
    """Bytes the safetensors headers of `anatomy`'s tensors take when split into `shards` files: each
    file's 8-byte length prefix plus its JSON header (`{"__metadata__":{"format":"pt"}, name:
    {"dtype","shape","data_offsets"}…}`), padded to 8 bytes. Offsets are counted over all tensors
    in one run, so an entry's digits are at most a few bytes too many."""
    offset, size = 0, 0
    for tensor in anatomy.tensors:
        entry = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        size += len(json.dumps({tensor.name: entry}, separators=(",", ":"))) - 1  # one brace pair per file
        offset += tensor.nbytes
    per_file = len('{"__metadata__":{"format":"pt"}}') + 8 + 7  # prefix + worst-case padding
    return size + shards * per_file
