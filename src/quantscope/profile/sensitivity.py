"""Sensitivity: how much each group of layers damages the model when quantized alone.

For each *unit* (an anatomy group, or a group within one decoder layer) the profiler
fake-quantizes exactly the weights a recipe would quantize there, runs the calibration
sequences, and measures the KL divergence KL(original || quantized) of the next-token
distribution at every position, in nats per token. It reports the mean over all positions and
per position bucket (0-512, 512-2k, 2k-8k… scaled to the sequence length), because the damage
that matters to reasoning models (Gated DeltaNet state drifting over long chains) shows late.

Reference distributions are kept as final hidden states (`[N, T, hidden]`), not logits, so a
248k-token vocabulary costs no more memory than a 256-token one; logits are recomputed in
chunks. Everything is deterministic: no sampling, fixed windows, fixed order.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantscope.anatomy import GROUPS, Anatomy, TensorInfo, load_anatomy
from quantscope.errors import QuantscopeError
from quantscope.formats import get_format, stored_bytes
from quantscope.profile.fakequant import (
    QdqTarget,
    checkpoint_dtype,
    fake_quantized,
    loaded_tensors,
    resolve_targets,
)

PROFILE_VERSION = 1
_LOGIT_CHUNK_ELEMENTS = 1 << 24  # positions x vocab per logits chunk (128 MB in float64)

Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
    bytes_by_scheme: Mapping[str, int]
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


@dataclass(frozen=True)
class SensitivityProfile:
    """A model's sensitivity profile: per-unit damage, per scheme, overall and by position.

    `buckets` are the position-bucket edges `(0, e1, …, seq_len)`: bucket i covers positions
    `[buckets[i], buckets[i+1])`. `uniform` is the damage of quantizing every unit at once (per
    scheme), against which the sum of unit damages can be compared. `unmeasured` lists groups the
    checkpoint holds but the loaded model class does not (vision tower, MTP heads).
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
    version: int = field(default=PROFILE_VERSION)

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
        return asdict(self)


def _short(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def profile_from_dict(data: Mapping[str, Any], where: str = "profile") -> SensitivityProfile:
    """Rebuild a SensitivityProfile from `to_dict` output; raises QuantscopeError naming bad fields."""
    try:
        if data.get("version") != PROFILE_VERSION:
            raise QuantscopeError(
                f"{where}: profile version {data.get('version')!r}, expected {PROFILE_VERSION}; profile again"
            )
        units = tuple(
            UnitProfile(
                name=u["name"],
                group=u["group"],
                layer=u["layer"],
                tensors=tuple(u["tensors"]),
                bytes_kept=int(u["bytes_kept"]),
                bytes_by_scheme={k: int(v) for k, v in u["bytes_by_scheme"].items()},
                damage=tuple(_damage(d) for d in u["damage"]),
            )
            for u in data["units"]
        )
        return SensitivityProfile(
            model=data["model"],
            scheme=data["scheme"],
            schemes=tuple(data["schemes"]),
            data=data["data"],
            n_sequences=int(data["n_sequences"]),
            seq_len=int(data["seq_len"]),
            buckets=tuple(int(b) for b in data["buckets"]),
            units=units,
            uniform=tuple(_damage(d) for d in data["uniform"]),
            unmeasured=tuple(data.get("unmeasured", ())),
            per_layer=bool(data.get("per_layer", False)),
            seconds=float(data.get("seconds", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise QuantscopeError(f"{where}: not a quantscope sensitivity profile ({error!r})") from None


def _damage(d: Mapping[str, Any]) -> Damage:
    return Damage(
        d["scheme"], float(d["kl"]), tuple(float(x) for x in d["kl_by_bucket"]), float(d["top1_agreement"])
    )


def save_profile(profile: SensitivityProfile, path: Path) -> Path:
    """Write `profile` as JSON to `path` atomically (temp file + rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(profile.to_dict(), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_profile(path: Path) -> SensitivityProfile:
    """Read a profile written by `save_profile`; raises QuantscopeError naming the file if invalid."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise QuantscopeError(f"{path}: cannot read the profile ({error})") from None
    if not isinstance(data, dict):
        raise QuantscopeError(f"{path}: expected a JSON object")
    return profile_from_dict(data, str(path))


# ---------------------------------------------------------------- calibration data and buckets


def default_buckets(seq_len: int) -> tuple[int, ...]:
    """Position-bucket edges for `seq_len`: quarter, sixteenth and 1/64 of it, so a 32k sequence
    gets 0-512, 512-2k, 2k-8k, 8k-32k and a 256-token one 0-4, 4-16, 16-64, 64-256. Buckets
    narrower than 4 positions are merged into the first."""
    edges = {0, seq_len} | {seq_len // 4**k for k in (1, 2, 3) if seq_len // 4**k >= 4}
    return tuple(sorted(edges))


def make_buckets(seq_len: int, edges: Sequence[int] | None = None) -> tuple[int, ...]:
    """Bucket edges from user `edges` (positions, ascending) clipped to `seq_len`, or the default.

    Edges at or beyond `seq_len` are dropped and `0` / `seq_len` added, so `0,512,2048,8192` works
    for any calibration length. Raises QuantscopeError for negative or unsorted edges.
    """
    if not edges:
        return default_buckets(seq_len)
    if any(e < 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise QuantscopeError(f"--buckets must be ascending non-negative positions, got {list(edges)}")
    return tuple(sorted({0, seq_len} | {e for e in edges if 0 < e < seq_len}))


def read_documents(path: Path) -> list[str]:
    """Calibration documents from a .txt (the whole file) or .jsonl file.

    A JSONL line is an object with `text`, or with `messages` (a chat, rendered later with the
    model's chat template). Raises QuantscopeError naming the file and line for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise QuantscopeError(f"--data {path}: no such file (give a .txt or .jsonl calibration file)")
    if path.suffix == ".txt":
        return [path.read_text()]
    if path.suffix != ".jsonl":
        raise QuantscopeError(f"--data {path}: use a .txt or .jsonl file")
    documents: list[Any] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise QuantscopeError(f"{path}:{number}: not JSON ({error})") from None
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            documents.append(record["text"])
        elif isinstance(record, dict) and isinstance(record.get("messages"), list):
            documents.append(record["messages"])
        else:
            raise QuantscopeError(f"{path}:{number}: expected an object with 'text' or 'messages'")
    if not documents:
        raise QuantscopeError(f"{path}: no documents")
    return documents


def calibration_tokens(
    documents: Sequence[Any], tokenizer: Any, n_sequences: int, seq_len: int
) -> torch.Tensor:
    """Pack tokenized documents (joined by EOS) into up to `n_sequences` windows of `seq_len`.

    Returns a `[n, seq_len]` int64 tensor, `n <= n_sequences`: the first windows, in file order.
    Chat documents go through the tokenizer's chat template. Raises QuantscopeError when the
    documents hold fewer than `seq_len` tokens.
    """
    stream: list[int] = []
    needed = n_sequences * seq_len
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for document in documents:
        if not isinstance(document, str):
            document = tokenizer.apply_chat_template(document, tokenize=False)
        stream.extend(tokenizer(document, add_special_tokens=False)["input_ids"] + separator)
        if len(stream) >= needed:
            break
    windows = min(n_sequences, len(stream) // seq_len)
    if windows == 0:
        raise QuantscopeError(
            f"the calibration data holds {len(stream)} tokens, fewer than one --seq-len {seq_len} window; "
            "give more text or a shorter --seq-len"
        )
    return torch.tensor(stream[: windows * seq_len], dtype=torch.long).reshape(windows, seq_len)


# ---------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    """Weights quantized together when measuring: a group, or a group within one layer.

    `formats` maps each checkpoint tensor name to the format the recipe stores it in.
    """

    name: str
    group: str
    layer: int | None
    tensors: tuple[TensorInfo, ...]
    formats: Mapping[str, str]


def quantized_assignment(anatomy: Anatomy, scheme: str) -> dict[str, str]:
    """Checkpoint weight name -> format for `scheme` applied to every group it can quantize.

    Uses the recipe rules (`quantscope.recipe.assign_schemes`, lm_head included) so the profile
    quantizes exactly what `quantscope quantize` would; weights the rules leave 16-bit are absent.
    """
    from quantscope.recipe import Recipe, assign_schemes

    recipe = Recipe(name=f"profile-{scheme}", scheme=scheme, quantize_lm_head=True)
    assigned = assign_schemes(anatomy, recipe)
    out = {}
    for tensor in anatomy.tensors:
        fmt = assigned.get(tensor.module)
        if fmt is not None and tensor.is_linear_weight and get_format(fmt).is_quantized:
            out[tensor.name] = fmt
    return out


def build_units(
    anatomy: Anatomy,
    assignment: Mapping[str, str],
    per_layer: bool = False,
    present: Iterable[str] | None = None,
) -> list[Unit]:
    """Group the quantized weights of `assignment` into units (per group, or per group and layer).

    Units that a fused set would straddle are merged (a recipe can never split one). `present`
    restricts to tensors the loaded model holds. Order: anatomy group order, then layer.
    """
    keep = set(assignment) if present is None else set(assignment) & set(present)
    members: dict[tuple[str, int | None], list[TensorInfo]] = {}
    for tensor in anatomy.tensors:
        if tensor.name in keep:
            key = (tensor.group, tensor.layer if per_layer else None)
            members.setdefault(key, []).append(tensor)
    keys = _merge_fused(anatomy, members)
    units = []
    for merged in keys:
        tensors = tuple(t for key in merged for t in members[key])
        group = "+".join(dict.fromkeys(key[0] for key in merged))
        layers = {key[1] for key in merged}
        layer = layers.pop() if len(layers) == 1 else None
        name = group if layer is None else f"{group}:{layer}"
        units.append(Unit(name, group, layer, tensors, {t.name: assignment[t.name] for t in tensors}))
    return sorted(
        units, key=lambda u: (GROUPS.index(u.group.split("+")[0]), -1 if u.layer is None else u.layer)
    )


def _merge_fused(
    anatomy: Anatomy, members: Mapping[tuple[str, int | None], list[TensorInfo]]
) -> list[list[tuple[str, int | None]]]:
    """Union units whose tensors share a fused set; keeps first-seen order."""
    parent = {key: key for key in members}

    def root(key: tuple[str, int | None]) -> tuple[str, int | None]:
        while parent[key] != key:
            key = parent[key]
        return key

    key_of = {t.module: key for key, tensors in members.items() for t in tensors}
    for fused in anatomy.fused_sets:
        keys = [key_of[m] for m in fused.members if m in key_of]
        for other in keys[1:]:
            parent[root(other)] = root(keys[0])
    merged: dict[tuple[str, int | None], list[tuple[str, int | None]]] = {}
    for key in members:
        merged.setdefault(root(key), []).append(key)
    return list(merged.values())


# ---------------------------------------------------------------- KL measurement


class KLMeter:
    """Measures next-token KL against the original model on fixed calibration tokens.

    Construct once (one reference pass), then call `measure(targets)` per variant: it
    fake-quantizes the targets in place, runs the calibration tokens, and restores the weights.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokens: torch.Tensor,
        buckets: Sequence[int],
        batch_size: int = 4,
        fused_sets: Sequence[Sequence[str]] = (),
    ) -> None:
        self.model = model.eval()
        self.tokens = tokens
        self.buckets = tuple(buckets)
        self.batch_size = max(1, batch_size)
        self.fused_sets = tuple(tuple(members) for members in fused_sets)
        self.head = model.get_output_embeddings()
        self.device = next(model.parameters()).device
        self.reference = self._final_hidden()

    @torch.no_grad()
    def _final_hidden(self) -> torch.Tensor:
        """Final (normed) hidden states `[N, T, hidden]` of the model as it is now."""
        base = self.model.base_model
        outputs = []
        for start in range(0, self.tokens.shape[0], self.batch_size):
            batch = self.tokens[start : start + self.batch_size].to(self.device)
            outputs.append(base(input_ids=batch, use_cache=False).last_hidden_state)
        return torch.cat(outputs)

    def _touches_head(self, targets: Sequence[QdqTarget]) -> bool:
        head_weight = self.head.weight
        return any(self.model.get_parameter(t.where.param) is head_weight for t in targets)

    @torch.no_grad()
    def measure(self, targets: Sequence[QdqTarget], scheme: str) -> Damage:
        """Damage of fake-quantizing `targets` (restored afterwards), labelled `scheme`."""
        reference_head = self.head.weight.detach().clone() if self._touches_head(targets) else None
        with fake_quantized(self.model, targets, self.fused_sets):
            variant = self._final_hidden()
            kl, agree = self._token_kl(variant, reference_head)
        return self._summarize(kl, agree, scheme)

    def _token_kl(
        self, variant: torch.Tensor, reference_head: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position KL `[N, T]` (float64, CPU) and top-1 agreement, logits chunk by chunk."""
        n, t, hidden = variant.shape
        vocab = self.head.weight.shape[0]
        chunk = max(1, _LOGIT_CHUNK_ELEMENTS // vocab)
        flat_ref, flat_var = self.reference.reshape(-1, hidden), variant.reshape(-1, hidden)
        kl = torch.empty(n * t, dtype=torch.float64)
        agree = torch.empty(n * t, dtype=torch.bool)
        bias = self.head.bias
        ref_weight = self.head.weight if reference_head is None else reference_head
        for start in range(0, n * t, chunk):
            # float64: per-token KLs of 1e-6 are differences of nearly equal log-probabilities.
            window = slice(start, start + chunk)
            head_device = ref_weight.device  # a sharded model's head may sit on another GPU
            ref_hidden, var_hidden = flat_ref[window].to(head_device), flat_var[window].to(head_device)
            ref_logits = torch.nn.functional.linear(ref_hidden, ref_weight, bias).double()
            var_logits = self.head(var_hidden).double()
            ref_logp = torch.log_softmax(ref_logits, dim=-1)
            var_logp = torch.log_softmax(var_logits, dim=-1)
            kl[start : start + chunk] = (ref_logp.exp() * (ref_logp - var_logp)).sum(-1).clamp(min=0).cpu()
            agree[start : start + chunk] = (ref_logits.argmax(-1) == var_logits.argmax(-1)).cpu()
        return kl.reshape(n, t), agree.reshape(n, t)

    def _summarize(self, kl: torch.Tensor, agree: torch.Tensor, scheme: str) -> Damage:
        by_bucket = tuple(
            float(kl[:, lo:hi].mean()) for lo, hi in zip(self.buckets, self.buckets[1:], strict=False)
        )
        return Damage(scheme, float(kl.mean()), by_bucket, float(agree.double().mean()))


# ---------------------------------------------------------------- the profiler


def load_causal_lm(source: str | Path, device: str = "cpu", dtype: str | None = None) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` with transformers (no remote code) for profiling.

    `device` "cpu", "cuda", "cuda:1"…, or "auto" to shard a model too big for one GPU across all
    visible GPUs (accelerate's device map; CPU/disk offload is refused, since offloaded weights
    cannot be fake-quantized in place). `dtype` "float32" / "bfloat16" / "float16"; default
    float32 on CPU (bf16 matmuls are slow there) and bfloat16 elsewhere. Quantization still
    rounds from the checkpoint's own dtype.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = dtype or ("float32" if device == "cpu" else "bfloat16")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(name)
    if torch_dtype is None:
        raise QuantscopeError(f"--dtype {name!r}: use float32, bfloat16 or float16")
    placement = {"device_map": "auto"} if device == "auto" else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch_dtype, **placement)
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError, ImportError) as error:
        raise QuantscopeError(f"{source}: cannot load the model with transformers ({error})") from None
    if device != "auto":
        model = model.to(device)
    offloaded = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if offloaded:
        raise QuantscopeError(
            f"{source}: --device auto offloaded {offloaded[0]} (and {len(offloaded) - 1} more) off the GPUs; "
            "profile on more GPU memory or on --device cpu"
        )
    return model.eval(), tokenizer


def unit_targets(
    model: torch.nn.Module, unit: Unit, assignment: Mapping[str, str] | None = None
) -> list[QdqTarget]:
    """QdqTargets quantizing `unit` in its own formats, or in those of `assignment`.

    `assignment` (checkpoint tensor name -> format, e.g. `quantized_assignment` of another
    scheme) leaves the unit's tensors it does not list in 16-bit, as that recipe would.
    """
    formats = unit.formats if assignment is None else assignment
    slices = resolve_targets(model, [(t.name, t.shape) for t in unit.tensors])
    return [
        QdqTarget(where, formats.get(tensor.name, "bf16"), checkpoint_dtype(tensor.dtype))
        for tensor, where in zip(unit.tensors, slices, strict=True)
    ]


def unit_bytes(unit: Unit, assignment: Mapping[str, str] | None = None) -> int:
    """Bytes of the unit's weights in their own formats, or in `assignment`'s ({}: all kept).

    A weight left unquantized counts as `recipe.predict_footprint` counts it: its bytes on disk,
    or 2 bytes per element for an FP8 source (rewritten in 16-bit).
    """
    formats = unit.formats if assignment is None else assignment
    total = 0
    for tensor in unit.tensors:
        fmt = get_format(formats.get(tensor.name, "bf16"))
        if fmt.is_quantized:
            total += stored_bytes(tensor.shape, fmt)
        else:
            total += tensor.numel * 2 if tensor.dtype.startswith("F8") else tensor.nbytes
    return total


class Profiler:
    """A model loaded for profiling: its anatomy, calibration tokens and a reference pass.

    `profile(scheme)` measures every unit; `measure_recipe(recipe)` measures a whole recipe at
    once (what the search predicts by summing). Loading costs one model load and one forward
    pass over the calibration tokens; each measurement costs one more forward pass.
    """

    def __init__(
        self,
        source: str | Path,
        data: str | Path,
        *,
        n_sequences: int = 8,
        seq_len: int = 512,
        bucket_edges: Sequence[int] | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        batch_size: int = 4,
    ) -> None:
        self.started = time.perf_counter()
        self.source, self.data = str(source), str(data)
        documents = read_documents(Path(data))  # fail on a bad file before loading the model
        self.anatomy = load_anatomy(source)
        self.model, self.tokenizer = load_causal_lm(source, device, dtype)
        self.tokens = calibration_tokens(documents, self.tokenizer, n_sequences, seq_len)
        self.buckets = make_buckets(self.tokens.shape[1], bucket_edges)
        fused = [fused.members for fused in self.anatomy.fused_sets]
        self.meter = KLMeter(self.model, self.tokens, self.buckets, batch_size, fused)

    def units(self, assignment: Mapping[str, str], per_layer: bool = False) -> tuple[list[Unit], list[str]]:
        """The units of `assignment` the loaded model holds, and the groups it lacks."""
        present = loaded_tensors(self.model, assignment)
        units = build_units(self.anatomy, assignment, per_layer, present)
        if not units:
            raise QuantscopeError(
                f"{self.source}: the loaded model holds none of the weights the recipe quantizes"
            )
        missing = sorted({self.anatomy.tensor(name).group for name in set(assignment) - present})
        return units, missing

    def profile(
        self,
        scheme: str = "nvfp4",
        extra_schemes: Sequence[str] = (),
        per_layer: bool = False,
        progress: Progress | None = None,
    ) -> SensitivityProfile:
        """Measure every unit alone in `scheme` and in each of `extra_schemes` (e.g. "fp8", so the
        search can pick FP8 for fragile units), plus all units at once per scheme.

        `progress(description, done, total)` is called after each measurement.
        """
        scheme = get_format(scheme).name
        schemes = tuple(dict.fromkeys([scheme, *(get_format(s).name for s in extra_schemes)]))
        assignments = {option: quantized_assignment(self.anatomy, option) for option in schemes}
        units, missing = self.units(assignments[scheme], per_layer)
        total, done = len(units) * len(schemes) + len(schemes), 0
        profiles = []
        for unit in units:
            damages = []
            for option in schemes:
                targets = unit_targets(self.model, unit, assignments[option])
                damages.append(self.meter.measure(targets, option))
                done += 1
                if progress:
                    progress(f"{unit.name} {option}", done, total)
            profiles.append(_unit_profile(unit, assignments, damages))
        uniform = []
        for option in schemes:
            targets = [t for unit in units for t in unit_targets(self.model, unit, assignments[option])]
            uniform.append(self.meter.measure(targets, option))
            done += 1
            if progress:
                progress(f"all units {option}", done, total)
        return SensitivityProfile(
            model=self.source,
            scheme=scheme,
            schemes=schemes,
            data=self.data,
            n_sequences=int(self.tokens.shape[0]),
            seq_len=int(self.tokens.shape[1]),
            buckets=self.buckets,
            units=tuple(profiles),
            uniform=tuple(uniform),
            unmeasured=tuple(missing),
            per_layer=per_layer,
            seconds=round(time.perf_counter() - self.started, 3),
        )

    def assignment_targets(self, formats: Mapping[str, str]) -> list[QdqTarget]:
        """QdqTargets for a module-name -> format mapping (e.g. `assign_schemes` output, or a
        per-layer config from another tool); modules absent, 16-bit or not loaded are skipped."""
        tensors = [
            t
            for t in self.anatomy.tensors
            if t.is_linear_weight and get_format(formats.get(t.module, "bf16")).is_quantized
        ]
        present = loaded_tensors(self.model, [t.name for t in tensors])
        tensors = [t for t in tensors if t.name in present]
        slices = resolve_targets(self.model, [(t.name, t.shape) for t in tensors])
        return [
            QdqTarget(where, formats[t.module], checkpoint_dtype(t.dtype))
            for t, where in zip(tensors, slices, strict=True)
        ]

    def measure_assignment(self, formats: Mapping[str, str], label: str) -> Damage:
        """Damage of storing each module in the format `formats` gives it, all at once."""
        return self.meter.measure(self.assignment_targets(formats), label)

    def measure_recipe(self, recipe: Any) -> Damage:
        """Damage of applying the whole `recipe` at once (labelled with the recipe's name)."""
        from quantscope.recipe import assign_schemes

        return self.measure_assignment(assign_schemes(self.anatomy, recipe), recipe.name)


def profile_model(
    source: str | Path,
    data: str | Path,
    scheme: str = "nvfp4",
    *,
    extra_schemes: Sequence[str] = (),
    per_layer: bool = False,
    n_sequences: int = 8,
    seq_len: int = 512,
    bucket_edges: Sequence[int] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> SensitivityProfile:
    """Profile `source` (a checkpoint dir or hub id) for `scheme` on calibration file `data`.

    One call of `Profiler(...).profile(...)`; see there. `seq_len` and `n_sequences` are in
    tokens and windows; `bucket_edges` in token positions.
    """
    profiler = Profiler(
        source,
        data,
        n_sequences=n_sequences,
        seq_len=seq_len,
        bucket_edges=bucket_edges,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )
    return profiler.profile(scheme, extra_schemes, per_layer, progress)


def _unit_profile(
    unit: Unit, assignments: Mapping[str, Mapping[str, str]], damages: Sequence[Damage]
) -> UnitProfile:
    return UnitProfile(
        name=unit.name,
        group=unit.group,
        layer=unit.layer,
        tensors=tuple(t.name for t in unit.tensors),
        bytes_kept=unit_bytes(unit, {}),
        bytes_by_scheme={option: unit_bytes(unit, formats) for option, formats in assignments.items()},
        damage=tuple(damages),
    )


__all__ = [
    "PROFILE_VERSION",
    "Damage",
    "KLMeter",
    "Profiler",
    "SensitivityProfile",
    "Unit",
    "UnitProfile",
    "build_units",
    "calibration_tokens",
    "default_buckets",
    "load_causal_lm",
    "load_profile",
    "make_buckets",
    "profile_from_dict",
    "profile_model",
    "quantized_assignment",
    "read_documents",
    "save_profile",
    "unit_bytes",
    "unit_targets",
]
