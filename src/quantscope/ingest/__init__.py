"""Bringing other harnesses' generations into the store: one reader per format (`plain_json`,
`lm_eval`, ...) producing `records.Generated`, and `importer`, which turns them into ordinary rows.
`formats` names the readers; `import_files` is the stage's one entry point."""

from quantscope.ingest.formats import FORMATS, import_files
from quantscope.ingest.importer import ImportOptions, ImportSummary
from quantscope.ingest.records import Generated, Source, SourceSettings

__all__ = [
    "FORMATS",
    "Generated",
    "ImportOptions",
    "ImportSummary",
    "Source",
    "SourceSettings",
    "import_files",
]
