"""`bpo report`: one self-contained HTML page of a run.

Sections: the headline (base vs BPO on each benchmark's main metrics), the run's
files, the pairs gallery (every strategy; images, weakened images, provenance,
chosen vs rejected with a word diff), the data (kept and dropped per reason,
lengths), training curves (loss, rewards, log-probs, grad norm, learning rate)
and every evaluation's metrics. See `write_report`.
"""

from bpo.report.builder import ReportOptions, build_page, write_report

__all__ = ["ReportOptions", "build_page", "write_report"]


# `bpo.report(...)` runs the stage, as `bpo report` does (`bpo.api`).
from bpo.api import callable_stage

callable_stage(__name__, "report")
