"""The report stage: one self-contained HTML file (`html`, `plots`) from a results store; `build`
ties them together. The terminal renderings live with the CLI, in `cli/views/`."""

from quantscope.report.build import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
