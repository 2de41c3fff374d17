"""The Training section: DPO's loss and rewards, the log-probs, the optimizer, against the step.

Reads the ``metrics.jsonl`` that `bpo train` writes (`bpo.train.callbacks.MetricsLogger`:
one line per logging step with ``step``, TRL's DPO log keys and the Trainer's
``grad_norm`` and ``learning_rate``). A line without ``step`` takes the next
position; lines that are not JSON objects go to the error policy.

The chosen and rejected log-probs share a panel because their joint movement is
DPO's main diagnostic: the margin can grow while both fall, the chosen (gold)
answers losing likelihood too ("likelihood displacement", Razin et al., ICLR
2025), which the reward margin alone does not show.

A run trained with ``train.select: hardest`` has ``reference_margins.json`` beside its
metrics (`bpo.train.selection`): the pairs kept, and the reference margins of all pairs
and of the kept ones, shown in one table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from bpo.data.jsonl import iter_jsonl
from bpo.errors import ErrorPolicy, RecordError
from bpo.report import plots
from bpo.report.html import figure, note, table

# The plot's panels: title -> (log key, line name) of TRL's DPOTrainer
# (trl/trainer/dpo_trainer.py) and transformers' Trainer (grad_norm, learning_rate).
PANELS: dict[str, tuple[tuple[str, str], ...]] = {
    "loss": (("loss", ""),),
    "reward margin": (("rewards/margins", ""),),
    "reward accuracy": (("rewards/accuracies", ""),),
    "log-probs: chosen and rejected": (("logps/chosen", "chosen"), ("logps/rejected", "rejected")),
    "grad norm": (("grad_norm", ""),),
    "learning rate": (("learning_rate", ""),),
}
CURVES = tuple(key for lines in PANELS.values() for key, _ in lines)
# Shown in the table of first and last values too, when logged (the last three with
# bpo.train.image_conditional's terms).
EXTRA = (
    "rewards/chosen",
    "rewards/rejected",
    "image_conditional/loss",
    "image_conditional/margins",
    "anchor/loss",
)
# The log-prob summary compares the mean of the first and of the last tenth of the
# points, not two single steps, which are one batch each and noisy.
SUMMARY_SHARE = 0.1

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
    plotted = training_panels(runs)
    parts = []
    if plotted:
        parts.append(figure(plots.training_plot(plotted), "training curves"))
    parts += [_logps_summary(label, curves) for label, curves in runs.items()]
    rows = []
    for label, curves in runs.items():
        for name in (*CURVES, *EXTRA):
            if name in curves:
                (_, first), (last_step, last) = curves[name][0], curves[name][-1]
                rows.append([label, name, f"{first:.4g}", f"{last:.4g}", f"{last_step:g}"])
    parts.append(table(["run", "metric", "first", "last", "last step"], rows))
    parts.append(_selection_table(files, root, policy))
    return "".join(parts)


def _selection_table(files: Sequence[Path], root: Path, policy: ErrorPolicy) -> str:
    """The pairs kept and the reference margins of each run trained on the hardest pairs."""
    rows = []
    for path in files:
        margins_file = path.parent / "reference_margins.json"
        if not margins_file.exists():
            continue
        try:
            record = json.loads(margins_file.read_text(encoding="utf-8"))
            counts = f"{record['kept']} of {record['pairs']} (k={record['select_k']})"
            spreads = [_spread(record["margins"][name]) for name in ("all", "kept")]
        except (OSError, ValueError, KeyError, TypeError) as error:
            policy.handle(
                RecordError(f"not a reference margins record ({error})", path=margins_file)
            )
            continue
        rows.append([_label(path, root), counts, *spreads])
    if not rows:
        return ""
    return table(
        ["run", "pairs kept", "margin, all pairs", "margin, kept pairs"],
        rows,
        caption="train.select: hardest. Reference log-prob per token, chosen minus rejected: "
        "10th percentile / median / 90th percentile.",
    )


def _spread(summary: dict[str, object]) -> str:
    quantiles = summary["quantiles"]
    if not isinstance(quantiles, dict):
        raise TypeError("its quantiles are not an object")
    if not quantiles:
        return "-"
    return " / ".join(f"{float(quantiles[q]):.3g}" for q in ("0.1", "0.5", "0.9"))


def training_panels(runs: dict[str, dict[str, Points]]) -> dict[str, dict[str, Points]]:
    """What the training plot draws: panel title -> line name -> points (`PANELS`).

    Args:
        runs: run label -> metric -> points (`read_curves` of each metrics file).
    """
    plotted: dict[str, dict[str, Points]] = {}
    for title, lines in PANELS.items():
        panel = {}
        for label, curves in runs.items():
            for key, name in lines:
                if key in curves:
                    # A line is named by its run where there are several, and its series.
                    words = [label] if len(runs) > 1 else []
                    panel[" ".join([*words, name] if name else words) or label] = curves[key]
        if panel:
            plotted[title] = panel
    return plotted


def _logps_summary(label: str, curves: dict[str, Points]) -> str:
    """How the chosen and rejected log-probs moved, and whether the chosen one fell."""
    if "logps/chosen" not in curves or "logps/rejected" not in curves:
        return ""
    moves = {}
    for name in ("chosen", "rejected"):
        values = [value for _, value in curves[f"logps/{name}"]]
        count = max(1, round(len(values) * SUMMARY_SHARE))
        moves[name] = (sum(values[:count]) / count, sum(values[-count:]) / count)
    said = "; ".join(
        f"{name} {first:.4g} → {last:.4g} ({last - first:+.3g})"
        for name, (first, last) in moves.items()
    )
    text = f"{label}: mean log-prob of the first and last tenth of the steps: {said}."
    first, last = moves["chosen"]
    if last < first:
        text += (
            " The chosen log-prob fell: the gold answers are losing likelihood too, not"
            " only the rejected ones (likelihood displacement)."
        )
    return note(text)


def _label(path: Path, root: Path) -> str:
    """The metrics file's folder relative to the run (``train``), or the run's name."""
    folder = path.parent
    return str(folder.relative_to(root)) if folder != root else root.name or "run"
