"""`quantscope.json`: what made a quantized checkpoint, written last, so its presence means "finished".

The manifest names the source model (and a hash of its config.json), the recipe, the exact
per-module formats, the AutoRound settings, the calibration data (hash + a few token windows kept
for the KL check), tool versions, wall time, peak RSS, predicted vs exported bytes and every file
with its size and SHA-256. `verify` refuses a directory whose files do not match it.

Versions: 1 recorded sizes only; 2 adds `file_sha256`. A version-1 manifest still loads (with no
hashes), and `verify` says its files' contents could not be checked.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
from dataclasses import field
from pathlib import Path
from typing import Any

from pydantic.dataclasses import dataclass as record

from quantscope.errors import QuantscopeError
from quantscope.plan.recipe import KEPT, Recipe
from quantscope.records import RECORD_CONFIG, FieldAccess, dump_record, parse_record, read_json
from quantscope.util import installed_version, write_atomic

MANIFEST_NAME = "quantscope.json"
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: file sizes only, no SHA-256
_TOOLS = ("quantscope", "auto_round", "transformers", "torch", "compressed_tensors", "safetensors")


@record(frozen=True, config=RECORD_CONFIG)
class AutoRoundSettings(FieldAccess):
    """How AutoRound was called: `scheme` (its `scheme=` value), `layer_config` (exported module ->
    its entry), whether lm_head was quantized, and the run's settings (`iters` tuning steps per
    block, `nsamples` windows of `seqlen` tokens, `batch_size`, `seed`, `device`)."""

    scheme: str | dict[str, Any]
    layer_config: dict[str, Any]
    quant_lm_head: bool
    iters: int
    nsamples: int
    seqlen: int
    batch_size: int
    seed: int
    device: str


@record(frozen=True, config=RECORD_CONFIG)
class CalibrationRecord(FieldAccess):
    """The calibration data: where it came from, `windows` used of `requested`, `seqlen` tokens
    each, and the SHA-256 of the token ids (identifies the exact data)."""

    source: str
    windows: int
    requested: int
    seqlen: int
    sha256: str


@record(frozen=True, config=RECORD_CONFIG)
class Manifest(FieldAccess):
    """The record of one quantization run (see the module docstring).

    Bytes: `predicted_bytes` (footprint prediction), `tensor_bytes` (tensor data in the exported
    safetensors), `files` (file name -> size in bytes). `file_sha256`: file name -> SHA-256 of its
    bytes (hex; empty in version-1 manifests). Time in seconds, memory in bytes. `assignment` maps
    every linear module to its quantscope format name; `probe` holds the token windows the KL check
    runs on.
    """

    source: str
    source_config_sha256: str
    model_type: str
    recipe: Recipe
    export_format: str
    assignment: dict[str, str]
    autoround: AutoRoundSettings
    calibration: CalibrationRecord
    tools: dict[str, str]
    wall_seconds: float
    peak_rss_bytes: int
    predicted_bytes: int
    tensor_bytes: int
    files: dict[str, int]
    probe: tuple[tuple[int, ...], ...] = ()
    created: str = ""
    version: int = MANIFEST_VERSION
    notes: tuple[str, ...] = ()
    file_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def kept(self) -> tuple[str, ...]:
        """Linear modules the recipe left in 16-bit, sorted."""
        return tuple(sorted(name for name, fmt in self.assignment.items() if fmt in (KEPT, "fp16")))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the file's content)."""
        return dump_record(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        """Parse a manifest; raises QuantscopeError naming `where` and the bad field."""
        if isinstance(data, dict) and data.get("version") not in READABLE_VERSIONS:
            raise QuantscopeError(
                f"{where}: manifest version {data.get('version')!r}, this quantscope reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}; upgrade quantscope"
            )
        return parse_record(cls, data, f"{where} (a quantscope manifest)")


def write_manifest(directory: Path, manifest: Manifest) -> Manifest:
    """Write `manifest` as `directory/quantscope.json` atomically (temp file + rename).

    Returns the manifest as it reads back from the file (JSON has no tuples), so the caller holds
    exactly what `read_manifest` will return.
    """
    data = manifest.to_dict()
    write_atomic(directory / MANIFEST_NAME, json.dumps(data, indent=1) + "\n")
    return Manifest.from_dict(data, str(directory / MANIFEST_NAME))


def read_manifest(directory: Path) -> Manifest:
    """The manifest of a quantscope checkpoint; QuantscopeError when absent or malformed."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise QuantscopeError(
            f"{directory}: no {MANIFEST_NAME}; not a finished quantscope checkpoint "
            "(an interrupted `quantscope quantize` leaves none)"
        )
    return Manifest.from_dict(read_json(path, "manifest"), str(path))


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
    versions = {"python": sys.version.split()[0]}
    for name in _TOOLS:
        versions[name] = installed_version(name.replace("_", "-")) or ""
    return versions


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def directory_hashes(directory: Path) -> dict[str, str]:
    """File name -> SHA-256 (hex), for the files `directory_files` lists."""
    return {name: file_sha256(directory / name) for name in directory_files(directory)}


def directory_files(directory: Path) -> dict[str, int]:
    """File name -> size in bytes, for the regular files directly inside `directory` (not the manifest)."""
    return {
        path.name: path.stat().st_size
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME
    }
