"""Shared fixtures: tiny real checkpoints written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_models import build_qwen3_dense, build_qwen35_dense, build_qwen35_moe


def _humming_lookups_fail_as_missing_attributes() -> None:
    """Let vLLM's CPU engine start in a process that has imported `humming` (the served-kernel
    oracles in tests/vllm_kernels.py and tests/test_twin.py import it).

    Humming's modules hold lazy `DeviceInfo` proxies (`humming/device.py`) whose `__getattr__` loads a
    CUDA extension and raises ImportError (libcuda.so.1) on a machine without a GPU. vLLM's Triton
    kernel override (`vllm/triton_utils/dispatcher.py`, `_rebind_kernels`) calls `hasattr` on every
    attribute of every loaded module, and `hasattr` only swallows AttributeError, so engine start
    fails once humming is loaded. On such a machine a device attribute is genuinely missing: say so.
    quantscope itself never imports humming (it checks for it with `importlib.util.find_spec`).
    """
    try:
        from humming.device import DeviceInfo
    except ImportError:
        return
    lookup = DeviceInfo.__getattr__

    def device_attribute(self: object, name: str) -> object:
        try:
            return lookup(self, name)
        except ImportError as error:
            raise AttributeError(f"{name} (no CUDA device info: {error})") from error

    DeviceInfo.__getattr__ = device_attribute


_humming_lookups_fail_as_missing_attributes()


@pytest.fixture(scope="session")
def tiny_qwen35_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3.5 dense checkpoint directory."""
    return build_qwen35_dense(tmp_path_factory.mktemp("qwen35"))


@pytest.fixture(scope="session")
def tiny_qwen35_moe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3.5-MoE checkpoint directory."""
    return build_qwen35_moe(tmp_path_factory.mktemp("qwen35_moe"))


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3 dense checkpoint directory."""
    return build_qwen3_dense(tmp_path_factory.mktemp("qwen3"))


TOY_EXPORT_FORMATS = ("w4a16", "nvfp4", "mxfp4", "fp8")


@pytest.fixture(scope="session")
def toy_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled reasoner exported with AutoRound RTN in each format (verified on the way)."""
    from quantscope.quantize import QuantizeOptions, quantize
    from quantscope.toy import checkpoint_dir

    out = tmp_path_factory.mktemp("toy-exports")
    options = QuantizeOptions(iters=0, nsamples=4, seqlen=128, dataset="toy", kl_samples=2, kl_tokens=96)
    return {fmt: quantize(checkpoint_dir(), fmt, out / fmt, options).directory for fmt in TOY_EXPORT_FORMATS}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip GPU tests cleanly on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
