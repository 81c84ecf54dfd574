"""Reading benchmark rows with HF `datasets`, from the Hub or from a local JSONL/Parquet file.

Both routes go through `datasets` and the same schema check, so a local file in the hub
schema behaves exactly like the hub copy (tests and offline machines use local files).
Rows keep the file's order; `limit` takes the first rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from quantscope.errors import QuantscopeError
from quantscope.tasks.base import HubDataset, Sample

_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class Rows:
    """Validated rows of one benchmark and where they came from (a hub id or a file path)."""

    rows: tuple[Mapping[str, Any], ...]
    source: str


@dataclass(frozen=True)
class HubTask:
    """A benchmark read row by row from its hub dataset, or from a local file in the same schema.

    `path`: the local file (JSONL / JSON / Parquet) instead of the hub; `seed`: the option-shuffle
    seed where a benchmark shuffles (every task accepts it, so all take the same options).
    Subclasses set `hub` and turn one row into a Sample (`sample`), raising QuantscopeError
    naming the source and row for a row they cannot use. A benchmark with difficulty levels sets
    `stratify` to the level field, so that `limit` takes the same number of items from each level.
    """

    path: str | Path | None = None
    seed: int = 0
    hub: ClassVar[HubDataset]
    stratify: ClassVar[str | None] = None
    answer_patterns: ClassVar[tuple[str, ...] | None] = None
    hesitation_patterns: ClassVar[tuple[str, ...]] = ()
    same_answer: ClassVar[Callable[[str, str], bool] | None] = None

    def load(self, limit: int | None = None) -> list[Sample]:
        """The items in dataset order; with `limit`, the first `limit` of them, or for a stratified
        benchmark the first items of every level in turn (counts per level differ by at most one)."""
        loaded = load_rows(self.hub, self.path, None if self.stratify else limit)
        samples = [self.sample(row, index, loaded.source) for index, row in enumerate(loaded.rows)]
        if self.stratify is None or limit is None:
            return samples
        return stratified([str(row.get(self.stratify)) for row in loaded.rows], samples, limit)

    def sample(self, row: Mapping[str, Any], index: int, source: str) -> Sample:
        """The Sample of row `index` of `source`."""
        raise NotImplementedError


def stratified(levels: Sequence[str], items: Sequence[Sample], limit: int) -> list[Sample]:
    """The first `limit` of `items` taken level by level in turn (round robin over the levels in order
    of first appearance, each level in its own order), so every level is represented."""
    queues: dict[str, list[Sample]] = {}
    for level, item in zip(levels, items, strict=True):
        queues.setdefault(level, []).append(item)
    chosen: list[Sample] = []
    for rank in range(max((len(q) for q in queues.values()), default=0)):
        chosen += [queue[rank] for queue in queues.values() if rank < len(queue)]
    return chosen[:limit]


def load_rows(hub: HubDataset, path: str | Path | None = None, limit: int | None = None) -> Rows:
    """The first `limit` rows (all when None) of `hub`, or of the local file `path` in the same schema.

    Raises QuantscopeError when the hub cannot be reached (naming `path=` as the fix), when the
    file is missing or unreadable, or when a required field is absent or empty (naming the
    source, the row and the field).
    """
    if limit is not None and limit < 0:
        raise QuantscopeError(f"limit must be 0 or more, got {limit}")
    if path is not None:
        dataset, source = _load_local(Path(path)), str(path)
    else:
        dataset, source = _load_hub(hub), hub.repo_id
    _check_columns(dataset.column_names, hub.required, source)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    rows = tuple(dataset)
    for index, row in enumerate(rows):
        _check_row(row, index, hub.required, source)
    return Rows(rows=rows, source=source)


_DATASETS_LOCK = threading.Lock()
"""`datasets.load_dataset` is not safe to run in two threads at once (its tqdm bars share a
class-level lock one thread can delete while another uses it: "type object 'tqdm' has no attribute
'_lock'"), and a sweep on Ray loads each eval job's tasks in its own driver thread."""


def _load_local(path: Path) -> Any:
    """A `datasets.Dataset` read from a local JSONL/JSON/Parquet file."""
    builder = _LOCAL_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise QuantscopeError(
            f"{path}: unsupported file type {path.suffix!r}; pass a .jsonl, .json or .parquet file"
        )
    if not path.is_file():
        raise QuantscopeError(f"{path}: no such file; pass path= an existing JSONL or Parquet file")
    import datasets

    try:
        with _DATASETS_LOCK:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:  # datasets wraps parse errors; show the root cause
        cause = error.__cause__ or error
        raise QuantscopeError(f"{path}: could not read it as {builder}: {cause}") from error


def _load_hub(hub: HubDataset) -> Any:
    """A `datasets.Dataset` downloaded from (or cached from) the Hub."""
    import datasets

    try:
        with _DATASETS_LOCK:
            return datasets.load_dataset(hub.repo_id, hub.config, split=hub.split)
    except Exception as error:  # offline, gated, renamed, no network: all end the same way
        where = hub.repo_id + (f" (config {hub.config!r})" if hub.config else "") + f", split {hub.split!r}"
        note = f" {hub.access_note}" if hub.access_note else ""
        raise QuantscopeError(
            f"could not load {where} from the Hugging Face Hub: {error}.{note} Offline, pass path= a local "
            f"JSONL or Parquet file with the fields {', '.join(hub.required)}."
        ) from error


def _check_columns(columns: Sequence[str], required: tuple[str, ...], source: str) -> None:
    """Raise naming the first required field the dataset lacks."""
    missing = [name for name in required if name not in columns]
    if missing:
        raise QuantscopeError(
            f"{source}: missing field {missing[0]!r} (needs {', '.join(required)}; has {', '.join(columns)})"
        )


def _check_row(row: Mapping[str, Any], index: int, required: tuple[str, ...], source: str) -> None:
    """Raise naming the row and field when a required value is null or blank."""
    for name in required:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise QuantscopeError(f"{source}: row {index} has an empty {name!r}; every row needs one")


def row_id(row: Mapping[str, Any], key: str, index: int) -> str:
    """The row's own id from field `key` when it has one, else its 0-based position in the file."""
    value = row.get(key)
    return str(index) if value is None or str(value).strip() == "" else str(value).strip()
