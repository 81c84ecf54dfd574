"""Where the real Qwen3.5 configs live (`../shared/qwen3.5-configs`, beside the checkout), and what a
missing one does: a skip that says so on a developer's machine, a failure under `CI=true`, where CI
puts `../shared` beside the clone and a missing file means coverage silently lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "qwen3.5-configs"
"""The one home of the shared configs' path (the tests used to re-derive it per file)."""


def in_ci() -> bool:
    """Whether this run is CI's: `CI=true` (as .ci/run's machine and most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(path: Path) -> None:
    """Skip (on a developer's machine) or fail (under CI=true) because `path` is absent."""
    message = f"{path} is missing: the real configs live in ../shared/qwen3.5-configs beside the checkout"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing shared file fails the run)", pytrace=False)
    pytest.skip(message)


def shared_config(name: str) -> Path:
    """The shared file `name` (e.g. "qwen3.5-27b.config.json"), or skip/fail as `missing` says."""
    path = CONFIGS / name
    if not path.is_file():
        missing(path)
    return path
