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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip GPU tests cleanly on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
