"""Reports on bench runs: NME-vs-NMF figures, tables, flicker maps, trajectories, overlay videos, one HTML page.

A report reads only ``wflwv bench`` output folders (and the dataset's ground truth and videos); it never runs a
model. Library entry point: :func:`build_report`; command line: ``wflwv report RUN_DIR [RUN_DIR ...]``
(:mod:`wflwv.cli.report`).
"""

from wflwv.reports.load import ReportError, ReportRun, display_name, load_run, load_runs, parse_labels
from wflwv.reports.report import ReportResult, build_report

__all__ = [
    "ReportError",
    "ReportResult",
    "ReportRun",
    "build_report",
    "display_name",
    "load_run",
    "load_runs",
    "parse_labels",
]
