"""The Training section: loss, reward margin and reward accuracy against the step.

Reads the ``metrics.jsonl`` that `bpo train` writes (`bpo.train.callbacks.MetricsLogger`:
one line per logging step with ``step`` and TRL's DPO log keys). A line without
``step`` takes the next position; lines that are not JSON objects go to the
error policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from bpo.data.jsonl import iter_jsonl
from bpo.errors import ErrorPolicy, RecordError
from bpo.report import plots
from bpo.report.html import figure, note, table

# TRL's DPOTrainer log keys (trl/trainer/dpo_trainer.py) and their titles.
CURVES = {
    "loss": "loss",
    "rewards/margins": "reward margin",
    "rewards/accuracies": "reward accuracy",
}
# Shown in the table of first and last values too, when logged.
EXTRA = ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "learning_rate")

Points = list[tuple[float, float]]


def read_curves(path: Path, policy: ErrorPolicy) -> dict[str, Points]:
    """Metric name -> ``(step, value)`` points of one metrics file (finite numbers only)."""
    curves: dict[str, Points] = {}
    for position, (line, value) in enumerate(iter_jsonl(path, policy=policy), start=1):
        if not isinstance(value, dict):
            policy.handle(RecordError("a metrics line must be an object", path=path, line=line))
            continue
        step = value.get("step", position)
        if not _number(step):
            step = position
        for name in (*CURVES, *EXTRA):
            if _number(value.get(name)):
                curves.setdefault(name, []).append((float(step), float(value[name])))
    return curves


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def render_training(files: Sequence[Path], root: Path, policy: ErrorPolicy) -> str:
    """The Training section's HTML for every metrics file of the run."""
    if not files:
        return note("No training metrics found (looked for train/metrics.jsonl).")
    runs = {_label(path, root): read_curves(path, policy) for path in files}
    runs = {label: curves for label, curves in runs.items() if curves}
    if not runs:
        return note("The metrics files hold no loss or reward values yet.")
    plotted = {
        title: {label: curves[name] for label, curves in runs.items() if name in curves}
        for name, title in CURVES.items()
    }
    plotted = {title: lines for title, lines in plotted.items() if lines}
    parts = []
    if plotted:
        parts.append(figure(plots.training_plot(plotted), "training curves"))
    rows = []
    for label, curves in runs.items():
        for name in (*CURVES, *EXTRA):
            if name in curves:
                (_, first), (last_step, last) = curves[name][0], curves[name][-1]
                rows.append([label, name, f"{first:.4g}", f"{last:.4g}", f"{last_step:g}"])
    parts.append(table(["run", "metric", "first", "last", "last step"], rows))
    return "".join(parts)


def _label(path: Path, root: Path) -> str:
    """The metrics file's folder relative to the run (``train``), or the run's name."""
    folder = path.parent
    return str(folder.relative_to(root)) if folder != root else root.name or "run"
