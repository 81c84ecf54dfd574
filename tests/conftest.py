"""Shared fixtures: tiny real checkpoints written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_models import build_qwen3_dense, build_qwen35_dense, build_qwen35_moe


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
    """The bundled reasoner exported with AutoRound RTN in each format, in its default export
    format, verified on the way, but FP8: vLLM 0.32 builds no per-channel static FP8 MoE experts
    (tests/test_vllm_check.py), so verify fails it on that check alone; it is exported unverified
    and each test says what it expects of it."""
    from dataclasses import replace

    from quantscope.quantize import QuantizeOptions, quantize
    from quantscope.toy import checkpoint_dir

    out = tmp_path_factory.mktemp("toy-exports")
    options = QuantizeOptions(iters=0, nsamples=4, seqlen=128, dataset="toy", kl_samples=2, kl_tokens=96)
    return {
        fmt: quantize(checkpoint_dir(), fmt, out / fmt, replace(options, verify=fmt != "fp8")).directory
        for fmt in TOY_EXPORT_FORMATS
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip GPU tests cleanly on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
