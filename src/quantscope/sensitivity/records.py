"""The sensitivity profile on disk: per unit and scheme, the damage measured and the bytes it costs.

A profile is JSON written by `save_profile` and read back by `load_profile` (a pydantic record:
unknown keys are errors, `version` is checked). Damage is KL(original || quantized) of the
next-token distribution in nats per token, overall and per token-position bucket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.dataclasses import dataclass as record

from quantscope.errors import QuantscopeError
from quantscope.records import RECORD_CONFIG, dump_record, parse_record, read_json
from quantscope.util import write_atomic

PROFILE_VERSION = 1


@record(frozen=True, config=RECORD_CONFIG)
class Damage:
    """What quantizing one unit in one scheme does to next-token distributions.

    `kl`: mean KL(original || quantized) over all calibration positions, nats per token.
    `kl_by_bucket`: the same mean within each position bucket (see `SensitivityProfile.buckets`).
    `top1_agreement`: fraction of positions whose most likely next token is unchanged.
    """

    scheme: str
    kl: float
    kl_by_bucket: tuple[float, ...]
    top1_agreement: float


@record(frozen=True, config=RECORD_CONFIG)
class UnitProfile:
    """One unit of the profile: its weights, their bytes per scheme, and its measured damage.

    `name` is the group ("linear_attn") or group and layer ("linear_attn:3"). `bytes_kept` is
    what the unit's weights take left unquantized (as stored; an FP8 source is rewritten in
    16-bit), as `recipe.predict_footprint` counts kept layers; `bytes_by_scheme` maps each
    measured scheme to the bytes the same weights take in it (scales included; weights that
    scheme's recipe leaves unquantized count as kept).
    """

    name: str
    group: str
    layer: int | None
    tensors: tuple[str, ...]
    bytes_kept: int
    bytes_by_scheme: dict[str, int]
    damage: tuple[Damage, ...]

    def damage_for(self, scheme: str) -> Damage:
        """The Damage measured for `scheme`; raises QuantscopeError if it was not measured."""
        for damage in self.damage:
            if damage.scheme == scheme:
                return damage
        raise QuantscopeError(f"unit {self.name}: scheme {scheme!r} was not profiled")

    def bytes_saved(self, scheme: str) -> int:
        """Bytes saved by storing this unit in `scheme` instead of leaving it unquantized."""
        return self.bytes_kept - self.bytes_by_scheme[scheme]


@record(frozen=True, config=RECORD_CONFIG)
class SensitivityProfile:
    """A model's sensitivity profile: per-unit damage, per scheme, overall and by position.

    `buckets` are the position-bucket edges `(0, e1, …, seq_len)`: bucket i covers positions
    `[buckets[i], buckets[i+1])`. `uniform` is the damage of quantizing every unit at once (per
    scheme), against which the sum of unit damages can be compared. `unmeasured` lists groups the
    checkpoint holds but the loaded model class does not (vision tower, MTP heads). `gpu` is the
    target whose activation rounding was emulated (`quantscope.gpus`; None: weights only, as
    profiles written before activation emulation were), `kernels` the kernel packages assumed
    beside vLLM there (`quantscope.numerics.served.KernelSet.describe`; None before they were stated).
    """

    model: str
    scheme: str
    schemes: tuple[str, ...]
    data: str
    n_sequences: int
    seq_len: int
    buckets: tuple[int, ...]
    units: tuple[UnitProfile, ...]
    uniform: tuple[Damage, ...]
    unmeasured: tuple[str, ...] = ()
    per_layer: bool = False
    seconds: float = 0.0
    gpu: str | None = None
    kernels: str | None = None
    version: int = PROFILE_VERSION

    def unit(self, name: str) -> UnitProfile:
        """The unit called `name`; raises QuantscopeError listing the units otherwise."""
        for unit in self.units:
            if unit.name == name:
                return unit
        raise QuantscopeError(
            f"no unit {name!r} in the profile; units: {', '.join(u.name for u in self.units)}"
        )

    def bucket_labels(self) -> list[str]:
        """Human labels of the position buckets, e.g. "0-512", "512-2k"."""
        return [f"{_short(lo)}-{_short(hi)}" for lo, hi in zip(self.buckets, self.buckets[1:], strict=False)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the on-disk form)."""
        return dump_record(self)


def _short(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def profile_from_dict(data: Any, where: str = "profile") -> SensitivityProfile:
    """Rebuild a SensitivityProfile from `to_dict` output; raises QuantscopeError naming bad fields."""
    if isinstance(data, dict) and data.get("version") != PROFILE_VERSION:
        raise QuantscopeError(
            f"{where}: profile version {data.get('version')!r}, expected {PROFILE_VERSION}; profile again"
        )
    return parse_record(SensitivityProfile, data, f"{where}: not a quantscope sensitivity profile")


def save_profile(profile: SensitivityProfile, path: Path) -> Path:
    """Write `profile` as JSON to `path` atomically (unique temp file + rename); returns the path."""
    return write_atomic(path, json.dumps(profile.to_dict(), indent=1) + "\n")


def load_profile(path: Path) -> SensitivityProfile:
    """Read a profile written by `save_profile`; raises QuantscopeError naming the file if invalid."""
    return profile_from_dict(read_json(path, "profile"), str(path))
