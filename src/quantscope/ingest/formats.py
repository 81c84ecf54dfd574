"""The import formats by name, and `import_files`: read every file with its format's reader, then
`importer.import_generations`. Readers are imported only when their format is asked for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from quantscope.errors import QuantscopeError
from quantscope.ingest.importer import ImportOptions, ImportSummary, import_generations
from quantscope.ingest.records import Source
from quantscope.store.database import Store
from quantscope.util import import_target

FORMATS: dict[str, str] = {
    "json": "quantscope.ingest.plain_json:read_plain_json",
    "lm-eval": "quantscope.ingest.lm_eval:read_lm_eval",
    "eee": "quantscope.ingest.eee:read_eee",
    "lighteval": "quantscope.ingest.lighteval:read_lighteval",
    "inspect": "quantscope.ingest.inspect_log:read_inspect",
}
"""Format name -> its reader, `reader(path, fields) -> Source`."""


def read_sources(
    format_name: str, paths: Sequence[Path], fields: Mapping[str, str] | None = None
) -> list[Source]:
    """Every file read by `format_name`'s reader (QuantscopeError for an unknown format or a missing file)."""
    target = FORMATS.get(format_name)
    if target is None:
        raise QuantscopeError(f"unknown import format {format_name!r}; formats: {', '.join(FORMATS)}")
    if not paths:
        raise QuantscopeError("no files to import: name at least one PATH")
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise QuantscopeError(f"no such file: {', '.join(missing)}")
    if fields and format_name != "json":
        raise QuantscopeError(f"--field maps plain JSON fields; the {format_name} format has its own")
    reader = import_target(target)
    return [reader(Path(p), dict(fields or {})) for p in paths]


def import_files(
    format_name: str,
    paths: Sequence[Path],
    store: Store,
    options: ImportOptions,
    fields: Mapping[str, str] | None = None,
) -> ImportSummary:
    """Import `paths` (files in `format_name`) into `store` as `options.variant`; see `importer`."""
    return import_generations(format_name, read_sources(format_name, paths, fields), store, options)
