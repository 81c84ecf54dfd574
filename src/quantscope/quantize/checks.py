"""The header-level checks of an export: no weights are loaded.

- every linear module is stored (on disk) in the kind its recipe assigned: exactly the recipe's
  modules are 16-bit, every other one is packed in its scheme;
- the quantization_config *declares* the same (see `kinds.declared_kind`), so vLLM builds each
  layer with the right method;
- no vLLM fused set (q/k/v, gate/up, in_proj_qkv+z, in_proj_b+a, one layer's experts) is split;
- the tensor bytes are within 1% of the footprint prediction, and the files match the manifest
  (names, sizes and SHA-256).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantscope.checkpoint.anatomy import classify_tensor, find_fused_sets
from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError
from quantscope.quantize.kinds import SIXTEEN, declared_kind, kind_of_format, stored_kinds
from quantscope.quantize.manifest import Manifest, directory_files, file_sha256

SIZE_TOLERANCE = 0.01  # relative; the acceptance bound for predicted vs exported bytes
# Groups vLLM always builds as unquantized layers (Qwen3.5-MoE router and shared-expert gate), so
# whether a quantization_config mentions them does not change how vLLM loads them.
_VLLM_UNQUANTIZED_GROUPS = ("router", "shared_expert_gate")


@dataclass(frozen=True)
class Check:
    """One verification result: `ok` False fails the checkpoint; `skipped` checks neither pass nor fail."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False


def check_stored(expected: Mapping[str, str], stored: Mapping[str, str]) -> Check:
    """Every module stored as its recipe assigned; names the first mismatches."""
    problems = [
        f"{m}: expected {k}, stored {stored.get(m, 'nothing')}"
        for m, k in expected.items()
        if stored.get(m) != k
    ]
    problems += [f"{m}: stored {k} but not in the recipe" for m, k in stored.items() if m not in expected]
    kept = sum(1 for kind in expected.values() if kind == SIXTEEN)
    detail = f"{len(expected)} linear modules, {kept} kept 16-bit"
    return Check("stored formats match the recipe", not problems, detail_list(detail, problems))


def check_declared(expected: Mapping[str, str], quant_config: Mapping[str, Any]) -> Check:
    """The quantization_config declares each module as the recipe assigned it (see module docstring)."""
    problems = []
    for module, kind in expected.items():
        group = classify_tensor(f"{module}.weight")
        try:
            declared = declared_kind(quant_config, module)
        except QuantscopeError as error:
            return Check("quantization_config marks exactly the kept layers", False, str(error))
        if declared != kind and group not in _VLLM_UNQUANTIZED_GROUPS:
            problems.append(f"{module}: recipe {kind}, config declares {declared}")
    method = quant_config.get("quant_method", "?")
    return Check(
        "quantization_config marks exactly the kept layers", not problems, detail_list(str(method), problems)
    )


def check_fused_sets(
    expected: Mapping[str, str], stored: Mapping[str, str], quant_config: Mapping[str, Any]
) -> Check:
    """No vLLM fused set has members stored or declared in different kinds."""
    problems = []
    sets = find_fused_sets(expected)
    for fused in sets:
        kinds = {stored.get(member) for member in fused.members}
        try:
            declared = {declared_kind(quant_config, member) for member in fused.members}
        except QuantscopeError:
            declared = set()  # reported by check_declared
        if len(kinds) > 1 or len(declared) > 1:
            problems.append(f"{fused.name}: stored {sorted(map(str, kinds))}, declared {sorted(declared)}")
    return Check(
        "no fused shard set is split", not problems, detail_list(f"{len(sets)} fused sets", problems)
    )


def check_size(tensor_bytes: int, predicted: int, tolerance: float = SIZE_TOLERANCE) -> Check:
    """Exported tensor bytes within `tolerance` (relative) of the footprint prediction."""
    error = (tensor_bytes - predicted) / predicted if predicted else math.inf
    detail = f"exported {tensor_bytes:,} B vs predicted {predicted:,} B ({error:+.3%})"
    return Check("size matches the footprint prediction", abs(error) <= tolerance, detail)


FILES_CHECK = "files match the manifest"


def check_files(directory: Path, manifest: Manifest, progress: Callable[[str], None] | None = None) -> Check:
    """The files on disk are exactly the manifest's, with the same sizes and SHA-256 (an edit in
    place keeps the size). A version-1 manifest records no hashes: sizes alone are compared and
    the check is reported as skipped, not passed."""
    actual = directory_files(directory)
    problems = [f"{name}: missing" for name in manifest.files if name not in actual]
    problems += [
        f"{name}: {actual[name]} B, manifest says {size} B"
        for name, size in manifest.files.items()
        if name in actual and actual[name] != size
    ]
    problems += [f"{name}: not in the manifest" for name in actual if name not in manifest.files]
    if not manifest.file_sha256:
        detail = (
            f"{len(actual)} files, sizes only: this manifest (version {manifest.version}) records no SHA-256"
        )
        return Check(FILES_CHECK, not problems, detail_list(detail, problems), skipped=not problems)
    same_size = [name for name, size in manifest.files.items() if actual.get(name) == size]
    if progress is not None:
        progress(f"hashing {len(same_size)} files ({sum(actual[n] for n in same_size):,} bytes)")
    for name in same_size:
        recorded = manifest.file_sha256.get(name)
        if recorded is None:
            problems.append(f"{name}: no SHA-256 in the manifest")
        elif file_sha256(directory / name) != recorded:
            problems.append(f"{name}: contents differ from the manifest's SHA-256 (same size)")
    return Check(FILES_CHECK, not problems, detail_list(f"{len(actual)} files, SHA-256 match", problems))


def detail_list(summary: str, problems: Sequence[str], shown: int = 5) -> str:
    if not problems:
        return summary
    more = f" (+{len(problems) - shown} more)" if len(problems) > shown else ""
    return f"{summary}; " + "; ".join(problems[:shown]) + more


def structural_checks(
    directory: Path, manifest: Manifest, progress: Callable[[str], None] | None = None
) -> tuple[list[Check], int, int]:
    """The header-only checks (and the files' hashes); returns (checks, tensor bytes, file bytes)."""
    config = json.loads((directory / "config.json").read_text())
    quant_config = config.get("quantization_config")
    export = load_anatomy(directory)
    expected = {module: kind_of_format(fmt) for module, fmt in manifest.assignment.items()}
    stored = stored_kinds(export)
    tensor_bytes = export.total_bytes
    file_bytes = sum(path.stat().st_size for path in directory.iterdir() if path.is_file())
    checks = [check_files(directory, manifest, progress), check_stored(expected, stored)]
    if not isinstance(quant_config, Mapping):
        checks.append(
            Check("quantization_config marks exactly the kept layers", False, "config.json has none")
        )
    else:
        checks += [check_declared(expected, quant_config), check_fused_sets(expected, stored, quant_config)]
    checks.append(check_size(tensor_bytes, manifest.predicted_bytes))
    return checks, tensor_bytes, file_bytes
