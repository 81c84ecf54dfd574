"""The one checkpoint loader: any source -> `Anatomy`, from headers only.

A local safetensors directory or file, a bare `config.json` (`from_config`), a `.gguf` file
(`gguf_file`) or a Hugging Face model id (headers by HTTP range requests). The records and the
header reading live in `anatomy`; this module only dispatches, so the readers for each source can
build on `anatomy` without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantscope.checkpoint.anatomy import (
    Anatomy,
    build_anatomy,
    check_unique,
    checkpoint_shards,
    read_json_object,
    read_safetensors_header,
)
from quantscope.errors import QuantscopeError


def load_anatomy(source: str | Path, revision: str | None = None) -> Anatomy:
    """Read a checkpoint's anatomy from headers only: a local dir / .safetensors / .gguf file, a bare
    `config.json`, or a hub id.

    Local: parses `config.json` (and ModelOpt's `hf_quant_config.json`, kept under the config key
    `hf_quant_config`) and each shard's safetensors header (reads no weight bytes). A GGUF file is
    read from its header (`gguf_file`); a `.json` file is a config alone: the anatomy of the
    model transformers builds from it on the meta device (`from_config`), its linear weights
    laid out as its quantization config (or an `hf_quant_config.json` beside it) declares. Hub: downloads
    `config.json` and fetches the headers with `HfApi.get_safetensors_metadata` (HTTP range
    requests). Raises QuantscopeError when the source has no weights to read.
    """
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        from quantscope.checkpoint.gguf_file import load_gguf_anatomy

        return load_gguf_anatomy(path)
    if path.is_file() and path.suffix == ".json":
        from quantscope.checkpoint.from_config import anatomy_from_config

        sidecar = _beside_hf_quant_config(path)
        return anatomy_from_config(read_json_object(path), str(path), sidecar and read_json_object(sidecar))
    if path.exists():
        return _load_local(path)
    if str(source).startswith((".", "/", "~")) or str(source).count("/") > 1:
        raise QuantscopeError(f"{source}: no such file or directory (give a checkpoint dir or a hub id)")
    return _load_hub(str(source), revision)


def _load_local(path: Path) -> Anatomy:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise QuantscopeError(f"{path}: not a .safetensors file or checkpoint directory")
        shards, config_path = [path], path.parent / "config.json"
    else:
        shards, config_path = checkpoint_shards(path), path / "config.json"
    config = read_json_object(config_path) if config_path.exists() else {}
    modelopt = config_path.parent / "hf_quant_config.json"
    if modelopt.exists() and "quantization_config" not in config:
        config = {**config, "hf_quant_config": read_json_object(modelopt)}
    headers = [entry for shard in shards for entry in read_safetensors_header(shard)]
    check_unique(headers, path)
    return build_anatomy(str(path), config, headers, files=[shard.name for shard in shards])


def _beside_hf_quant_config(config_path: Path) -> Path | None:
    """ModelOpt's `hf_quant_config.json` beside a bare config: next to `config.json`, or
    `<name>.hf_quant_config.json` next to `<name>.config.json` (how copies of both are kept side by
    side); None when there is none."""
    name = config_path.name
    prefix = name.removesuffix("config.json") if name.endswith("config.json") else None
    if prefix is None or (prefix and not prefix.endswith(".")):
        return None
    sidecar = config_path.with_name(f"{prefix}hf_quant_config.json")
    return sidecar if sidecar.is_file() else None


def _load_hub(repo_id: str, revision: str | None) -> Anatomy:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        config = read_json_object(Path(hf_hub_download(repo_id, "config.json", revision=revision)))
        metadata = HfApi().get_safetensors_metadata(repo_id, revision=revision)
        if "quantization_config" not in config:
            config = _with_hub_modelopt_config(repo_id, revision, config)
    except HfHubHTTPError as error:
        raise QuantscopeError(f"{repo_id}: cannot read from the Hugging Face hub ({error})") from None
    except (OSError, ValueError) as error:
        raise QuantscopeError(f"{repo_id}: not a local path, and the hub lookup failed ({error})") from None
    return anatomy_from_hub_metadata(repo_id, config, metadata)


def _with_hub_modelopt_config(repo_id: str, revision: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """The config plus ModelOpt's `hf_quant_config.json` when the repo has one (older ModelOpt
    exports declare their formats only there)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(repo_id, "hf_quant_config.json", revision=revision)
    except EntryNotFoundError:
        return config
    return {**config, "hf_quant_config": read_json_object(Path(path))}


def anatomy_from_hub_metadata(repo_id: str, config: Mapping[str, Any], metadata: Any) -> Anatomy:
    """Build an Anatomy from a `huggingface_hub.SafetensorsRepoMetadata` and the repo's config."""
    headers = []
    for file_meta in metadata.files_metadata.values():
        for name, info in file_meta.tensors.items():
            start, end = info.data_offsets
            headers.append((name, str(info.dtype), tuple(int(d) for d in info.shape), end - start))
    check_unique(headers, repo_id)
    return build_anatomy(repo_id, config, headers, files=sorted(metadata.files_metadata))


__all__ = ["anatomy_from_hub_metadata", "load_anatomy"]
