"""Multimodal checkpoints: quantize the language model, keep the vision tower exactly as published.

Every published Qwen3.5 is a `...ForConditionalGeneration` checkpoint: the language model under
`model.language_model.*`, the vision tower under `model.visual.*`, `lm_head.*` and `mtp.*` at the
top. transformers (>= 5) loads such a checkpoint as its text-only CausalLM when asked for one
(`AutoModelForCausalLM` maps `model.language_model.` to `model.` and leaves the vision tower
unread), so AutoRound quantizes only the language model and needs no image processor. `graft_vision`
then turns that text export back into a multimodal checkpoint: the text tensors under their
multimodal names, the vision tensors copied byte for byte from the source, the source's config with
the export's `quantization_config` whose module names are renamed the same way.

vLLM loads the result as the multimodal model: `Qwen3_5MoeForConditionalGeneration` maps
`model.language_model.` to `language_model.model.` and `model.visual.` to `visual.`
(vllm/model_executor/models/qwen3_vl.py, `hf_to_vllm_mapper`, inherited in qwen3_5.py), and applies
the same mapper to the quantization config's module names (`INCConfig.apply_vllm_mapper` in
vllm/model_executor/layers/quantization/inc/inc.py maps `block_name_to_quantize` and
`extra_config`; the compressed-tensors config maps its `ignore` list), so the names written here are
the checkpoint's own HF names. The vision tower is not named in `block_name_to_quantize` (AutoRound
format) and is listed in `ignore` (llm-compressor format), so it loads unquantized; except, with a
recipe's `quantize_vision`, the vision linears it stores quantized (`quantize.rtn_layers`, RTN),
which stay out of `ignore` and are compared with the source within rounding instead of byte for
byte.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantscope.checkpoint.anatomy import Anatomy, build_anatomy, checkpoint_shards, read_safetensors_header
from quantscope.errors import QuantscopeError
from quantscope.quantize.checks import Check, detail_list
from quantscope.util import atomic_path, write_atomic

TEXT_PREFIX = "model.language_model."
_CAUSAL_PREFIX = "model."
_INDEX = "model.safetensors.index.json"
# Files of the source that a multimodal checkpoint needs beside its weights (processor, templates).
_PROCESSOR_FILES = (
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
)


def is_multimodal(anatomy: Anatomy) -> bool:
    """True for a checkpoint with a vision tower (a `vision_config` or vision tensors)."""
    return "vision_config" in anatomy.config or bool(anatomy.by_group()["vision"])


def is_multimodal_checkpoint(directory: Path) -> bool:
    """True for a local checkpoint whose config declares a vision tower (reads config.json only)."""
    config = directory / "config.json"
    return config.is_file() and "vision_config" in json.loads(config.read_text())


def check_vision(export: Path, source: str | Path | None, quantized: Collection[str] = ()) -> Check:
    """The export's vision tower is the source's, tensor for tensor and byte for byte, except the
    weights of the `quantized` modules (see `vision_weights_check`)."""
    from safetensors import safe_open

    from quantscope.checkpoint.load import load_anatomy

    name = "vision tower is the source's, unchanged"
    if quantized:
        name = "vision tower is the source's, unchanged but for its quantized weights"
    if source is None:
        return Check(name, True, "not measured: --no-kl: the source model was not read", skipped=True)
    source_dir = local_snapshot(source)

    def unchanged(tensor: Any) -> bool:  # a quantized module's weight tensors are compared in rounding
        return not any(tensor.name.startswith(f"{module}.weight") for module in quantized)

    ours = {t.name: t for t in load_anatomy(export).by_group()["vision"] if unchanged(t)}
    theirs = {t.name: t for t in load_anatomy(source_dir).by_group()["vision"] if unchanged(t)}
    if ours.keys() != theirs.keys():
        missing, extra = sorted(theirs.keys() - ours.keys()), sorted(ours.keys() - theirs.keys())
        problems = [f"missing {key}" for key in missing] + [f"{key} not in the source" for key in extra]
        return Check(name, False, detail_list("vision tensors differ from the source's", problems))
    changed = []
    theirs_at = _tensor_shards(source_dir)
    for shard in checkpoint_shards(export):
        with safe_open(str(shard), "pt") as f:
            by_source: dict[Path, list[str]] = {}
            for key in sorted(set(ours).intersection(f.keys())):
                by_source.setdefault(theirs_at[key], []).append(key)
            for source_shard, keys in by_source.items():  # each pair of shards opened once
                with safe_open(str(source_shard), "pt") as theirs_file:
                    changed += [
                        k for k in keys if not _same_tensor(f.get_tensor(k), theirs_file.get_tensor(k))
                    ]
    if changed:
        return Check(
            name,
            False,
            detail_list(f"{len(changed)} tensors changed", [f"{k} changed" for k in sorted(changed)]),
        )
    return Check(
        name, True, f"{len(ours)} tensors, {sum(t.nbytes for t in ours.values()):,} bytes, identical"
    )


def _same_tensor(a: Any, b: Any) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(a.equal(b))


def _tensor_shards(directory: Path) -> dict[str, Path]:
    """Tensor name -> the shard holding it (headers only)."""
    return {
        entry[0]: shard for shard in checkpoint_shards(directory) for entry in read_safetensors_header(shard)
    }


_TEXT_LAYOUT = (TEXT_PREFIX, "lm_head.", "mtp.")


def check_extractable(anatomy: Anatomy) -> None:
    """Refuse a multimodal layout other than Qwen3.5's (`model.language_model.*` beside
    `model.visual.*`, `lm_head.*`, `mtp.*`): its language model cannot be renamed into a CausalLM
    reliably (Llava's `language_model.model.*`, Qwen2-VL's `model.layers.*` + `visual.*` …)."""
    other = [t.name for t in anatomy.tensors if t.group != "vision" and not t.name.startswith(_TEXT_LAYOUT)]
    if other or not any(t.name.startswith(TEXT_PREFIX) for t in anatomy.tensors):
        example = other[0] if other else "no tensor under model.language_model."
        raise QuantscopeError(
            f"{anatomy.source}: a multimodal layout quantscope cannot split ({example}); it quantizes "
            "checkpoints laid out as Qwen3.5's (model.language_model.*, model.visual.*, lm_head.*, mtp.*)"
        )


def text_view(anatomy: Anatomy) -> Anatomy:
    """The anatomy of the text-only CausalLM transformers loads from a multimodal checkpoint.

    Tensor names are the CausalLM's module names (`model.language_model.x` -> `model.x`), the
    vision tower is gone and the config is the text config (with the top-level
    `tie_word_embeddings`, which multimodal configs keep outside `text_config`). Recipes, AutoRound's
    layer config and the footprint of the language model are resolved on this view.
    """
    text = anatomy.config.get("text_config")
    if not isinstance(text, Mapping):
        raise QuantscopeError(
            f"{anatomy.source}: a multimodal checkpoint without a `text_config` in config.json; "
            "quantscope cannot tell its language model apart"
        )
    config = dict(text)
    if "tie_word_embeddings" in anatomy.config:
        config["tie_word_embeddings"] = anatomy.config["tie_word_embeddings"]
    headers = [
        (causal_name(t.name), t.dtype, t.shape, t.nbytes) for t in anatomy.tensors if t.group != "vision"
    ]
    return build_anatomy(anatomy.source, config, headers, files=anatomy.files)


def extract_text_model(source: Path, target: Path) -> Path:
    """Write the language model of the multimodal checkpoint `source` as a text-only checkpoint.

    The tensors outside the vision tower are copied shard by shard under the CausalLM's names
    (`model.language_model.x` -> `model.x`; `lm_head.*`, `mtp.*` unchanged); config.json becomes
    the text config with a `...ForCausalLM` architecture (a `quantization_config` is renamed the same
    way, so a quantized multimodal export extracts to a loadable quantized text model); tokenizer
    and generation files are copied. Returns `target`. Needs disk for one more copy of the language
    model; `target` is written under a temp name and renamed when complete.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    from quantscope.checkpoint.load import load_anatomy

    anatomy = load_anatomy(source)
    if not is_multimodal(anatomy):
        raise QuantscopeError(f"{source}: not a multimodal checkpoint (no vision tower); nothing to extract")
    check_extractable(anatomy)
    vision = {t.name for t in anatomy.by_group()["vision"]}
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    for shard in checkpoint_shards(source):
        with safe_open(str(shard), "pt") as f:
            names = [name for name in list(f.keys()) if name not in vision]
            if not names:
                continue
            tensors = {causal_name(name): f.get_tensor(name) for name in names}
            save_file(tensors, str(partial / shard.name), metadata=f.metadata() or {"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard.name))
    if set(weight_map.values()) != {"model.safetensors"}:  # transformers finds other names via an index
        index = {
            "metadata": {"total_size": _total_size(partial)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        _write_json(partial / _INDEX, index)
    _write_json(partial / "config.json", _text_config_json(anatomy))
    for path in source.iterdir():
        if path.is_file() and _is_side_file(path.name):
            shutil.copy2(path, partial / path.name)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _text_config_json(anatomy: Anatomy) -> dict[str, Any]:
    config = dict(text_view(anatomy).config)
    architectures = anatomy.config.get("architectures") or []
    config["architectures"] = [
        name.replace("ForConditionalGeneration", "ForCausalLM") for name in architectures
    ]
    quantization = anatomy.config.get("quantization_config")
    if isinstance(quantization, Mapping):
        config["quantization_config"] = _renamed_quantization_config(
            quantization, causal_name, drop=_is_vision
        )
    return config


def _is_side_file(name: str) -> bool:
    """Files a text checkpoint keeps besides weights and config: tokenizer, chat template, generation."""
    if name.endswith(".safetensors") or name in ("config.json", _INDEX, *_PROCESSOR_FILES[:3]):
        return False
    return (
        name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens", "chat_template"))
        or name == "generation_config.json"
    )


def _is_vision(name: str) -> bool:
    from quantscope.checkpoint.anatomy import classify_tensor

    return classify_tensor(name) == "vision"


@dataclass(frozen=True)
class Graft:
    """What `graft_vision` did: tensors renamed from the text export, vision tensors copied."""

    text_tensors: int
    vision_tensors: int
    vision_bytes: int


def graft_vision(export: Path, source: Path, anatomy: Anatomy, quantized: Collection[str] = ()) -> Graft:
    """Turn the text-only export in `export` (in place) into a multimodal checkpoint of `source`.

    `anatomy` is the multimodal source's. The text shards are renamed into the standard sharded
    layout with the vision tower as the last shard (`model-0000i-of-0000n.safetensors` plus an
    index: transformers reads a lone `model.safetensors` and ignores an index beside it). The
    caller publishes `export` by renaming a finished temp folder, so nothing half-grafted is seen.
    The vision linears named in `quantized` are left out of the config's `ignore` list: the caller
    writes them quantized next (`quantize.rtn_layers.write_rtn_layers`).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    text_shards = checkpoint_shards(export)
    count = len(text_shards) + 1
    names = [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    weight_map: dict[str, str] = {}
    for shard, name in zip(text_shards, names, strict=False):
        with safe_open(str(shard), "pt") as f:
            tensors = {_multimodal_name(key): f.get_tensor(key) for key in list(f.keys())}
            metadata = f.metadata()
        _save_atomic(save_file, tensors, export / name, metadata)
        if shard.name != name:
            shard.unlink()
        weight_map.update(dict.fromkeys(tensors, name))
    vision = _copy_vision(source, anatomy, export / names[-1], save_file)
    weight_map.update(dict.fromkeys(vision, names[-1]))
    index = {"metadata": {"total_size": _total_size(export)}, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(export / _INDEX, index)
    _write_config(export, source, anatomy, quantized)
    for name in _PROCESSOR_FILES:
        if (source / name).is_file() and not (export / name).exists():
            shutil.copy2(source / name, export / name)
    vision_bytes = sum(t.nbytes for t in anatomy.by_group()["vision"])
    return Graft(
        text_tensors=len(weight_map) - len(vision), vision_tensors=len(vision), vision_bytes=vision_bytes
    )


def multimodal_quantization_config(quantization: Mapping[str, Any], vision_modules: list[str]) -> dict:
    """The export's `quantization_config` with module names renamed to the multimodal layout.

    AutoRound format: `block_name_to_quantize` and `extra_config` keys. llm-compressor format:
    `ignore` (plus every vision linear, which `Linear` targets would otherwise match).
    """
    config = _renamed_quantization_config(quantization, _multimodal_name)
    if isinstance(config.get("ignore"), list):
        config["ignore"] = [*config["ignore"], *vision_modules]
    return config


def _renamed_quantization_config(
    quantization: Mapping[str, Any], rename: Any, drop: Any = lambda _name: False
) -> dict[str, Any]:
    """`quantization` with every module name it holds passed through `rename` (names for which
    `drop` is true removed). Regex keys (AutoRound writes `.*model\\.layers\\.0\\.mlp\\.gate.*` for
    routers) stay as they are: they match under either prefix, since they search inside the name."""
    config = json.loads(json.dumps(quantization))
    for key in ("block_name_to_quantize", "to_quant_block_names"):
        value = config.get(key)
        if isinstance(value, str):
            config[key] = ",".join(rename(name) for name in value.split(",") if not drop(name))
        elif isinstance(value, list):
            config[key] = [rename(name) for name in value if not drop(name)]
    if isinstance(config.get("extra_config"), dict):
        config["extra_config"] = {rename(k): v for k, v in config["extra_config"].items() if not drop(k)}
    for key in ("ignore", "ignored_layers", "modules_to_not_convert"):
        if isinstance(config.get(key), list):
            config[key] = [rename(name) for name in config[key] if not drop(name)]
    return config


def causal_name(name: str) -> str:
    """A multimodal checkpoint's language-model name as the text-only CausalLM names it."""
    return _CAUSAL_PREFIX + name[len(TEXT_PREFIX) :] if name.startswith(TEXT_PREFIX) else name


def _multimodal_name(name: str) -> str:
    """A text export's module or tensor name under the multimodal layout (idempotent)."""
    if name.startswith(TEXT_PREFIX) or not name.startswith(_CAUSAL_PREFIX):
        return name  # lm_head.*, mtp.* and names transformers already wrote in the multimodal layout
    return TEXT_PREFIX + name[len(_CAUSAL_PREFIX) :]


def _copy_vision(source: Path, anatomy: Anatomy, target: Path, save_file: Any) -> list[str]:
    from safetensors import safe_open

    wanted = {t.name for t in anatomy.by_group()["vision"]}
    tensors: dict[str, Any] = {}
    for shard in checkpoint_shards(source):
        with safe_open(str(shard), "pt") as f:
            for name in wanted.intersection(f.keys()):
                tensors[name] = f.get_tensor(name)
    missing = wanted - tensors.keys()
    if missing:
        raise QuantscopeError(f"{source}: vision tensors missing from its shards: {sorted(missing)[:3]}")
    _save_atomic(save_file, tensors, target, {"format": "pt"})
    return sorted(tensors)


def _write_config(export: Path, source: Path, anatomy: Anatomy, quantized: Collection[str]) -> None:
    config = json.loads((source / "config.json").read_text())
    text = json.loads((export / "config.json").read_text())
    quantization = text.get("quantization_config")
    if quantization is None:
        raise QuantscopeError(f"{export}/config.json has no quantization_config; nothing to graft")
    vision = sorted(
        {t.module for t in anatomy.by_group()["vision"] if t.is_linear_weight and t.module not in quantized}
    )
    config["quantization_config"] = multimodal_quantization_config(quantization, vision)
    _write_json(export / "config.json", config)
    standalone = export / "quantization_config.json"  # AutoRound also writes one; vLLM's INC reads it
    if standalone.is_file():
        _write_json(standalone, multimodal_quantization_config(json.loads(standalone.read_text()), vision))


def _total_size(directory: Path) -> int:
    return sum(
        entry[3] for shard in directory.glob("*.safetensors") for entry in read_safetensors_header(shard)
    )


def _save_atomic(
    save_file: Any, tensors: dict[str, Any], path: Path, metadata: Mapping[str, str] | None
) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata or {"format": "pt"}))


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def local_snapshot(model: str | Path) -> Path:
    """A local directory holding `model`'s safetensors and configs: the path itself, or the hub
    cache (the files transformers already downloaded to load the source)."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(model), allow_patterns=["*.safetensors", "*.json", "*.jinja"]))
