"""The report stage: one self-contained HTML file (`html`, `plots`) and every terminal renderer
(`terminal`), from a results store; `build` ties them together."""

from quantscope.report.build import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
