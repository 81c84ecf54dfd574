"""Shared fixtures: tiny real checkpoints written once per test session; the run's settings (one
torch thread count, a cache of its own) and the markers that select what runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.producers import ProducerExports
from tests.shared_configs import CONFIGS, missing
from tests.tiny_models import build_qwen3_dense, build_qwen35_dense, build_qwen35_moe

TEST_THREADS = 1
"""torch's intra-op threads for the whole run, set once here so a test run alone computes as it does
in the suite. One: the tiny models gain nothing from a second thread, AutoRound's RTN is faster
single-threaded, and the Ray workers the sweep tests start run one thread too (Ray sets
OMP_NUM_THREADS to a task's num_cpus, 1), so their generations match the in-process ones."""


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _threads_restored() -> Iterator[None]:
    """Put the run's thread count back after a test that changed it (an engine may set its own),
    so no test runs with what an earlier one left."""
    yield
    if torch.get_num_threads() != TEST_THREADS:
        torch.set_num_threads(TEST_THREADS)


@pytest.fixture(scope="session", autouse=True)
def quantscope_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`QUANTSCOPE_CACHE` (quantscope.toy.offline.cache_dir) pointed at this run's own folder, so tests
    neither write to nor read from the user's ~/.cache/quantscope (subprocesses inherit it)."""
    directory = tmp_path_factory.mktemp("quantscope-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTSCOPE_CACHE", str(directory))
        yield directory


@pytest.fixture(scope="session")
def shared_configs() -> Path:
    """The folder of real Qwen3.5 configs (../shared/qwen3.5-configs): skips when it is absent,
    fails under CI=true (tests/shared_configs.py)."""
    if not CONFIGS.is_dir():
        missing(CONFIGS)
    return CONFIGS


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


@pytest.fixture(scope="session")
def producer_exports(
    tmp_path_factory: pytest.TempPathFactory, tiny_qwen3_dir: Path, tiny_qwen35_moe_dir: Path
) -> ProducerExports:
    """AutoRound's and compressed-tensors' exports of the tiny Qwen3 ("qwen3") and Qwen3.5-MoE
    ("moe"), keyed by (model, scheme, format) and built once per run (tests/producers.py)."""
    sources = {"qwen3": tiny_qwen3_dir, "moe": tiny_qwen35_moe_dir}
    return ProducerExports(sources, tmp_path_factory.mktemp("producers"))


TOY_EXPORT_FORMATS = ("w4a16", "nvfp4", "mxfp4", "fp8")


@pytest.fixture(scope="session")
def toy_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled reasoner exported with AutoRound RTN in each preset, in its default export
    format, verified on the way (vLLM's own classes build every layer: tests/test_vllm_check.py)."""
    from quantscope.quantize import QuantizeOptions, quantize
    from quantscope.toy import checkpoint_dir

    out = tmp_path_factory.mktemp("toy-exports")
    options = QuantizeOptions(iters=0, nsamples=4, seqlen=128, dataset="toy", kl_samples=2, kl_tokens=96)
    return {fmt: quantize(checkpoint_dir(), fmt, out / fmt, options).directory for fmt in TOY_EXPORT_FORMATS}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the `full` tests out unless `-m` names them; skip GPU tests cleanly without CUDA."""
    if "full" not in (config.option.markexpr or ""):
        full = [item for item in items if item.get_closest_marker("full")]
        if full:
            config.hook.pytest_deselected(items=full)
            items[:] = [item for item in items if not item.get_closest_marker("full")]
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
