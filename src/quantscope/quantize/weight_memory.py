"""Memory: what a variant's weights take, and where that figure comes from.

Every variant gets a figure and its source, so `recommend` and the report can use variants served
elsewhere too: a quantscope checkpoint's manifest (tensor bytes), a local checkpoint's weight files,
the safetensors headers of a hub model (read without downloading a weight), or a figure given by
the user (`--memory 30.3GB`, or `--memory-from` a checkpoint or hub id that holds the same weights,
for a model behind a server).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from quantscope.errors import QuantscopeError


@dataclass(frozen=True)
class WeightMemory:
    """Bytes of a variant's weights (None when unknown) and where the figure came from."""

    nbytes: int | None
    source: str | None


def weight_memory(model: str, *, hub: bool = True) -> WeightMemory:
    """The weight memory of `model`: a local checkpoint directory (its manifest's tensor bytes, else
    its weight files) or, with `hub`, a Hugging Face id (its safetensors headers). Unknown (None)
    when neither gives a figure: no error, the variant is then left out of memory-based decisions."""
    path = Path(model).expanduser()
    if path.is_dir():
        return _local(path)
    if hub and not path.exists() and model.count("/") == 1:
        return _hub(model)
    return WeightMemory(None, None)


def _local(path: Path) -> WeightMemory:
    from quantscope.quantize.manifest import MANIFEST_NAME

    manifest = path / MANIFEST_NAME
    if manifest.is_file():
        # only the one field, read leniently: a manifest another quantscope version wrote (which the
        # strict `read_manifest` refuses) still gives its size; a broken one is verify's business
        try:
            return WeightMemory(int(json.loads(manifest.read_text())["tensor_bytes"]), "manifest")
        except (OSError, ValueError, KeyError, TypeError):
            pass  # fall back to the files
    files = list(path.glob("*.safetensors")) or list(path.glob("*.bin"))
    if files:
        return WeightMemory(sum(f.stat().st_size for f in files), "files")
    return WeightMemory(None, None)


def _hub(repo_id: str) -> WeightMemory:
    from quantscope.checkpoint.load import load_anatomy

    try:
        return WeightMemory(load_anatomy(repo_id).total_bytes, "hub headers")
    except QuantscopeError:
        return WeightMemory(None, None)  # offline, gated or not a safetensors repo: unknown, said so


def variant_memory(
    model: str,
    given: int | None = None,
    memory_from: str | None = None,
    hub: bool = True,
    given_source: str = "given",
) -> WeightMemory:
    """A variant's weight memory, as a run records it and analysis reads it back: `given` bytes
    (labelled `given_source`: "given" for a flag, the store's source for a stored figure), else
    `memory_from`'s weights, else `model`'s own (see `weight_memory`; `hub` False keeps it
    offline). `memory_from` that yields nothing is an error."""
    if given is not None:
        return WeightMemory(int(given), given_source)
    if memory_from is not None:
        found = weight_memory(memory_from)
        if found.nbytes is None:
            raise QuantscopeError(
                f"--memory-from {memory_from}: no weights found there (a checkpoint directory, or a hub id "
                "with safetensors); pass --memory 30.3GB instead"
            )
        return WeightMemory(found.nbytes, f"{found.source} of {memory_from}")
    return weight_memory(model, hub=hub)
