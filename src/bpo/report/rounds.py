"""Iterative BPO's metrics per round: base | round 1 | round 2 ... (``RUN/rounds.json``).

A run of ``rounds.count: N`` (`bpo.pipeline.rounds`) evaluates the base model once,
in round 1 (``round-1/eval/base-<bench>``), and each round's model after its training
(``round-K/eval/bpo-<bench>``). `rounds_summary` reads them into one mapping,
every metric of every benchmark per column; `render_rounds` is the report's table.
The metrics are those of the Evaluation section (`EvalRun.metrics`), so the two agree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bpo.errors import ConfigError
from bpo.report.evaluation import EvalRun, shown, signed
from bpo.report.html import escape, note, table
from bpo.report.metric_direction import judge

SUMMARY_NAME = "rounds.json"


def _metrics(path: Path) -> dict[str, float] | None:
    from bpo.eval.compare import load_results

    if not path.is_file():
        return None
    try:
        return EvalRun(path.parent.name, path, load_results(path)).metrics
    except ConfigError:
        return None


def rounds_summary(run_dir: str | os.PathLike[str], models: dict[str, str]) -> dict[str, Any]:
    """Every metric per column (``base``, ``round-1`` ...) of each benchmark evaluated.

    Args:
        run_dir: the run folder holding ``round-K/``.
        models: column -> the model it evaluates: ``base`` (evaluated in
            ``round-1/eval/base-<bench>``), then ``round-K`` (``round-K/eval/bpo-<bench>``).

    Returns:
        ``{"models": models, "metrics": {bench: {metric: {column: value}}}}``; a
        column not evaluated yet is absent from its metrics.
    """
    root = Path(run_dir)
    folders = {
        column: ("round-1", "base") if column == "base" else (column, "bpo") for column in models
    }
    benches = sorted(
        {
            path.parent.name.removeprefix(f"{label}-")
            for folder, label in folders.values()
            for path in root.glob(f"{folder}/eval/{label}-*/results.json")
        }
    )
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for bench in benches:
        by_metric: dict[str, dict[str, float]] = {}
        for column, (folder, label) in folders.items():
            values = _metrics(root / folder / "eval" / f"{label}-{bench}" / "results.json")
            for name, value in (values or {}).items():
                by_metric.setdefault(name, {})[column] = value
        metrics[bench] = by_metric
    return {"models": models, "metrics": metrics}


def read_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``rounds.json``, or None when it has none (a one-round run)."""
    path = Path(run_dir) / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def render_rounds(summary: dict[str, Any]) -> str:
    """One table per benchmark: metric | base | round 1 ... | last − base."""
    models = summary.get("models") or {}
    metrics = summary.get("metrics") or {}
    if not metrics:
        return note("No round has been evaluated yet.")
    parts = []
    for bench, by_metric in metrics.items():
        columns = [c for c in models if any(c in values for values in by_metric.values())]
        if not columns:
            continue
        last = columns[-1]
        headers = ["metric", *columns]
        if len(columns) > 1:
            headers.append(f"{last} − {columns[0]}")
        rows, classes = [], []
        for name, values in by_metric.items():
            cells = [values.get(column) for column in columns]
            row = [name, *(shown(v) for v in cells)]
            css = ["", *([""] * len(cells))]
            if len(columns) > 1:
                first, end = cells[0], cells[-1]
                row.append(signed(end - first if end is not None and first is not None else None))
                css.append(judge(name, first, end))
            rows.append(row)
            classes.append(css)
        parts.append(f"<h3>{escape(bench)}</h3>" + table(headers, rows, classes=classes))
    listed = ", ".join(f"{column}: {model}" for column, model in models.items())
    parts.append(note(f"models: {listed}"))
    return "".join(parts)
