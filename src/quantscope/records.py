"""What the on-disk records (recipe YAML, checkpoint manifest, sensitivity profile) share.

Each is a frozen pydantic dataclass with `extra="forbid"` (an unknown key is an error, not
silently dropped) and a `version` field, parsed through `parse_record` so that every bad file
fails with one QuantscopeError naming the file and the field (`errors.invalid`). Being
dataclasses, they keep positional construction and `dataclasses.replace`; `FieldAccess` lets
code written against version-1 files, whose nested parts were plain dicts, keep reading
`manifest.calibration["windows"]`.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from quantscope.errors import QuantscopeError, invalid

RECORD_CONFIG = ConfigDict(extra="forbid")
"""The pydantic config of every on-disk record: unknown keys are errors."""

T = TypeVar("T")


class FieldAccess:
    """Read a record's fields by key as well as by attribute (`record["name"] == record.name`)."""

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:  # type: ignore[arg-type]
            raise KeyError(key)
        return getattr(self, key)


@cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def parse_record(cls: type[T], data: Any, where: str) -> T:
    """`data` (parsed JSON / YAML) validated as a `cls` record.

    Raises QuantscopeError starting with `where` and naming each bad field; a QuantscopeError
    raised by the record's own checks (an unknown scheme, say) gets `where` in front too.
    """
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as error:
        raise invalid(error, where, (f.name for f in dataclasses.fields(cls))) from None  # type: ignore[arg-type]
    except QuantscopeError as error:
        raise QuantscopeError(f"{where}: {error}") from None


def dump_record(record: Any) -> dict[str, Any]:
    """A record as JSON-ready data (tuples as lists, nested records as dicts), in field order."""
    return _adapter(type(record)).dump_python(record, mode="json")


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping at the top of YAML file `path` (a `what`, e.g. "recipe"); QuantscopeError else."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise QuantscopeError(f"{path}: cannot read the {what} ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise QuantscopeError(f"{path}: cannot read YAML (not valid YAML: {error})") from None
    return _mapping(data if data is not None else {}, path, what)


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """The object in JSON file `path` (a `what`, e.g. "manifest"); QuantscopeError else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise QuantscopeError(f"{path}: cannot read the {what} ({error})") from None
    return _mapping(data, path, what)


def _mapping(data: Any, path: Path, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise QuantscopeError(
            f"{path}: a {what} is a mapping of fields, so the file must be a mapping at the top level "
            f"(it holds a {type(data).__name__})"
        )
    return data
