"""`bpo report`: one self-contained HTML page of a run.

Sections: the pairs gallery (images, weakened images, chosen vs rejected with a
word diff), the data (kept and dropped per reason, lengths), training curves
and before/after evaluation tables. See `write_report`.
"""

from bpo.report.builder import ReportOptions, build_page, write_report

__all__ = ["ReportOptions", "build_page", "write_report"]
