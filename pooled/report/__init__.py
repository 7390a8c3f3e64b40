"""Reports of a run: ``render_report(run, out_dir)`` writes figures, ``tables.xlsx`` and a
self-contained ``report.html``; only the report rounds numbers."""

from pooled.report.render import ReportFiles, render_report
from pooled.report.tables import format_frame, hazard_ratio_table, write_tables_xlsx

__all__ = [
    "ReportFiles",
    "format_frame",
    "hazard_ratio_table",
    "render_report",
    "write_tables_xlsx",
]
