"""`quantscope.json`: what made a quantized checkpoint, written last, so its presence means "finished".

The manifest names the source model (and a hash of its config.json), the recipe, the exact
per-module formats, the AutoRound settings, the calibration data (hash + a few token windows kept
for the KL check), tool versions, wall time, peak RSS, predicted vs exported bytes and every file
with its size. `verify` refuses a directory whose files do not match it.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError

MANIFEST_NAME = "quantscope.json"
MANIFEST_VERSION = 1
_TOOLS = ("quantscope", "auto_round", "transformers", "torch", "compressed_tensors", "safetensors")


@dataclass(frozen=True)
class Manifest:
    """The record of one quantization run (see the module docstring).

    Bytes: `predicted_bytes` (footprint prediction), `tensor_bytes` (tensor data in the exported
    safetensors), `files` (file name -> size in bytes). Time in seconds, memory in bytes.
    """

    source: str
    source_config_sha256: str
    model_type: str
    recipe: Mapping[str, Any]
    export_format: str
    assignment: Mapping[str, str]
    autoround: Mapping[str, Any]
    calibration: Mapping[str, Any]
    tools: Mapping[str, str]
    wall_seconds: float
    peak_rss_bytes: int
    predicted_bytes: int
    tensor_bytes: int
    files: Mapping[str, int]
    probe: tuple[tuple[int, ...], ...] = ()
    created: str = ""
    version: int = MANIFEST_VERSION
    notes: tuple[str, ...] = field(default=())

    @property
    def kept(self) -> tuple[str, ...]:
        """Linear modules the recipe left in 16-bit, sorted."""
        return tuple(sorted(name for name, fmt in self.assignment.items() if fmt in ("bf16", "fp16")))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        data = asdict(self)
        data["probe"] = [list(window) for window in self.probe]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> Manifest:
        """Parse a manifest; raises QuantscopeError naming `where` and the bad field."""
        if not isinstance(data, Mapping):
            raise QuantscopeError(f"{where}: a manifest is a JSON object")
        if data.get("version") != MANIFEST_VERSION:
            raise QuantscopeError(
                f"{where}: manifest version {data.get('version')!r}, expected {MANIFEST_VERSION}"
            )
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - names)
        if unknown:
            raise QuantscopeError(f"{where}: unknown manifest fields {unknown}")
        try:
            values = dict(data)
            values["probe"] = tuple(tuple(int(t) for t in window) for window in data.get("probe", ()))
            values["notes"] = tuple(data.get("notes", ()))
            return cls(**values)
        except TypeError as error:
            raise QuantscopeError(f"{where}: incomplete manifest ({error})") from None


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write `manifest` as `directory/quantscope.json` atomically (temp file + rename)."""
    path = directory / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(manifest.to_dict(), handle, indent=1, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(directory: Path) -> Manifest:
    """The manifest of a quantscope checkpoint; QuantscopeError when absent or malformed."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise QuantscopeError(
            f"{directory}: no {MANIFEST_NAME}; not a finished quantscope checkpoint "
            "(an interrupted `quantscope quantize` leaves none)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise QuantscopeError(f"{path}: cannot read ({error})") from None
    return Manifest.from_dict(data, str(path))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_config_sha256(source: str | Path) -> str:
    """SHA-256 of the source checkpoint's config.json ("" when it is not a local directory)."""
    path = Path(source).expanduser() / "config.json"
    return file_sha256(path) if path.is_file() else ""


def tool_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the export."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def directory_files(directory: Path) -> dict[str, int]:
    """File name -> size in bytes, for the regular files directly inside `directory` (not the manifest)."""
    return {
        path.name: path.stat().st_size
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME
    }
