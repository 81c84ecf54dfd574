"""verify fails subtly broken exports and passes legitimate ones (issue: a verify that can fail).

Each broken export is made from a legitimate RTN export of the bundled model by editing its
safetensors the way an exporter bug would (one layer's scales doubled, two experts swapped) and
recording the new files in the manifest, so only the model checks can notice.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from quantscope.quantize import read_manifest, verify
from quantscope.quantize.manifest import directory_files, write_manifest
from quantscope.quantize.verify import DEFAULT_MAX_KL, VerifySettings

_LAYER = "model.layers.3.self_attn.o_proj"  # a full-attention output projection
_EXPERTS = ("model.layers.2.mlp.experts.0.", "model.layers.2.mlp.experts.1.")


def _double_scales(tensors: dict[str, torch.Tensor], fmt: str) -> None:
    """Every weight of `_LAYER` twice what it should be, through its scales."""
    if fmt == "w4a16":
        tensors[f"{_LAYER}.scales"] = tensors[f"{_LAYER}.scales"] * 2
    elif fmt == "nvfp4":  # the global scale divides: halving it doubles the weights
        tensors[f"{_LAYER}.weight_global_scale"] = tensors[f"{_LAYER}.weight_global_scale"] / 2
    elif fmt == "mxfp4":  # E8M0 exponents: +1 doubles
        tensors[f"{_LAYER}.weight_scale"] = tensors[f"{_LAYER}.weight_scale"] + 1
    else:
        tensors[f"{_LAYER}.weight_scale"] = tensors[f"{_LAYER}.weight_scale"] * 2


def _swap_experts(tensors: dict[str, torch.Tensor], fmt: str) -> None:
    first, second = _EXPERTS
    for key in [k for k in tensors if k.startswith(first)]:
        other = second + key[len(first) :]
        tensors[key], tensors[other] = tensors[other], tensors[key]


def _broken(export: Path, out: Path, fmt: str, breaks) -> Path:
    shutil.copytree(export, out)
    for shard in out.glob("*.safetensors"):
        tensors = load_file(str(shard))
        if any(k.startswith(_LAYER) or k.startswith(_EXPERTS[0]) for k in tensors):
            breaks(tensors, fmt)
            save_file(tensors, str(shard), metadata={"format": "pt"})
    manifest = read_manifest(out)
    write_manifest(out, replace(manifest, files=directory_files(out)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["w4a16", "nvfp4", "mxfp4", "fp8"])
def test_legitimate_exports_pass_at_the_defaults(fmt: str, toy_exports: dict[str, Path]) -> None:
    report = verify(toy_exports[fmt])
    assert report.ok, report.failures
    assert report.kl is not None and report.kl.mean < DEFAULT_MAX_KL / 5
    weights = next(c for c in report.checks if c.name.startswith("weights"))
    assert not weights.skipped and "worst" in weights.detail


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["w4a16", "nvfp4", "mxfp4", "fp8"])
@pytest.mark.parametrize(("name", "breaks", "named"), [
    ("scales x2", _double_scales, _LAYER),
    ("experts swapped", _swap_experts, _EXPERTS[0].rstrip(".")),
])  # fmt: skip
def test_a_subtly_broken_export_fails_verify(
    fmt: str, name: str, breaks, named: str, toy_exports: dict[str, Path], tmp_path: Path
) -> None:
    broken = _broken(toy_exports[fmt], tmp_path / "broken", fmt, breaks)
    report = verify(broken)
    assert not report.ok
    failed = {check.name: check.detail for check in report.failures}
    assert set(failed) == {"weights match the source within rounding"}, failed
    assert named in failed["weights match the source within rounding"]
    # the structural checks cannot see it, and KL alone would not always say so
    assert report.kl is not None and report.kl.mean < DEFAULT_MAX_KL


@pytest.mark.slow
def test_max_kl_fails_an_export_above_it_and_no_kl_skips_the_source(toy_exports: dict[str, Path]) -> None:
    export = toy_exports["nvfp4"]
    strict = verify(export, settings=VerifySettings(max_kl=1e-6))
    assert [c.name for c in strict.failures] == ["KL vs source ≤ 1e-06 nats/token"]
    assert "above --max-kl" in strict.failures[0].detail
    blind = verify(export, settings=VerifySettings(kl=False))
    assert blind.ok and blind.kl is None
    assert {c.name.split()[0] for c in blind.checks if c.skipped} == {"KL", "weights"}
