"""Tables: one run's main numbers, or several runs' metrics side by side with differences.

`bpo eval compare A/results.json B/results.json ...` reads the ``metrics`` of
each results file, flattens them to dotted names (``random.f1``,
``by_type.counting.average_score``), and prints one column per file and one
difference column per file after the first (``B - A``). Settings that differ
between the files (parser, prompt, judge model ...) are listed under the table,
since a difference in numbers may come from them rather than from the models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bpo.errors import ConfigError

# Settings that are expected to differ between compared runs: not worth a note.
_EXPECTED_TO_DIFFER = frozenset({"model", "predictions"})


def format_value(value: Any) -> str:
    """A metric for a table: integers as they are, other numbers with 4 decimals."""
    if value is None:
        return "-"
    if isinstance(value, int):  # booleans too
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [list(headers)] + [[format_value(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics as ``{"a.b.c": number}``; booleans and non-numbers are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A results.json written by `bpo eval`.

    Raises:
        ConfigError: a missing file, invalid JSON, or no ``metrics`` object.
    """
    target = Path(path)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read {target}: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{target}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise ConfigError(f"{target}: not a bpo eval results file (no 'metrics')")
    return data


def run_label(path: str | os.PathLike[str]) -> str:
    """A short column name: the run folder of ``.../run/results.json``, else the file stem."""
    target = Path(path)
    if target.name == "results.json" and target.parent.name:
        return target.parent.name
    return target.stem


def compare_results(paths: Sequence[str | os.PathLike[str]]) -> str:
    """The metrics of several results files side by side, with differences to the first.

    Rows are the metrics of the first file in its order, then any metric only a
    later file has; a run without a metric shows ``-``.

    Raises:
        ConfigError: fewer than one file, or a file that is not a results file.
    """
    if not paths:
        raise ConfigError("compare needs at least one results.json")
    runs = [load_results(path) for path in paths]
    labels = [run_label(path) for path in paths]
    if len(set(labels)) < len(labels):
        labels = [str(path) for path in paths]
    flats = [flatten(run["metrics"]) for run in runs]
    names: dict[str, None] = {}
    for flat in flats:
        names.update(dict.fromkeys(flat))
    headers = ["metric", *labels, *(f"{label} - {labels[0]}" for label in labels[1:])]
    rows = []
    for name in names:
        values = [flat.get(name) for flat in flats]
        base = values[0]
        deltas = [
            _signed(value - base) if value is not None and base is not None else "-"
            for value in values[1:]
        ]
        rows.append([name, *values, *deltas])
    lines = [format_table(headers, rows)]
    benches = {str(run.get("bench")) for run in runs}
    if len(benches) > 1:
        lines.append(
            f"note: the files come from different benchmarks: {', '.join(sorted(benches))}"
        )
    lines.extend(setting_differences(runs, labels))
    return "\n".join(lines)


def _signed(value: float) -> str:
    if isinstance(value, int):
        return f"{value:+d}"
    return f"{value:+.4f}"


def setting_differences(runs: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[str]:
    settings = [run.get("settings") or {} for run in runs]
    keys: dict[str, None] = {}
    for entry in settings:
        keys.update(dict.fromkeys(entry))
    notes = []
    for key in keys:
        if key in _EXPECTED_TO_DIFFER:
            continue
        values = [json.dumps(entry.get(key), ensure_ascii=False) for entry in settings]
        if len(set(values)) > 1:
            shown = ", ".join(
                f"{label}={value}" for label, value in zip(labels, values, strict=True)
            )
            notes.append(f"note: {key} differs: {shown}")
    return notes


def format_results(results: dict[str, Any]) -> str:
    """The main numbers of a results dict as a plain-text table."""
    metrics, counts = results["metrics"], results["counts"]
    lines = []
    if results["bench"] == "pope":
        columns = [
            "n",
            "accuracy",
            "precision",
            "recall",
            "f1",
            "yes_ratio",
            "parser_disagreements",
        ]
        rows = [
            [split, *(values.get(column) for column in columns)]
            for split, values in metrics.items()
        ]
        lines.append(format_table(["split", *columns], rows))
        lines.append(f"parser: {results['settings'].get('parser')}")
    elif results["bench"] in ("chair", "objhal"):
        columns = ["chair_s", "chair_i", "recall", "mentions", "hallucinated_mentions"]
        lines.append(format_table(columns, [[metrics.get(column) for column in columns]]))
    elif results["bench"] == "amber":
        lines.extend(_amber_tables(metrics, results["settings"]))
    elif results["bench"] == "hallusion":
        columns = ["aAcc", "fAcc", "qAcc", "easy_aAcc", "hard_aAcc", "questions"]
        rows = [
            [group, *(metrics[group].get(column) for column in columns)]
            for group in ("overall", "VD", "VS")
            if group in metrics
        ]
        lines.append(format_table(["category", *columns], rows))
        lines.append(
            f"parser: {results['settings'].get('parser')}; unclear answers: {metrics['unclear']}; "
            f"read differently by the other parser: {metrics['parser_disagreements']}"
        )
    else:
        columns = ["n", "average_score", "hallucination_rate"]
        rows = [["all", *(metrics[column] for column in columns)]]
        rows += [
            [name, *(values[c] for c in columns)] for name, values in metrics["by_type"].items()
        ]
        lines.append(format_table(["question_type", *columns], rows))
        lines.append(
            f"ratings: {metrics['rated']} parsed, {metrics['missing']} missing, "
            f"{metrics['malformed']} malformed; judge calls: {metrics['judge_calls']}; "
            f"read differently by the other parser: {metrics.get('parser_disagreements', 0)}"
        )
    lines.append(
        f"answered {counts['answered']} of {counts['items']} items"
        + (f" ({counts['unanswered']} without an answer)" if counts["unanswered"] else "")
    )
    return "\n".join(lines)


def _amber_tables(metrics: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    lines = []
    if "generative" in metrics:
        columns = ["chair", "cover", "hal", "cog", "descriptions"]
        lines.append(format_table(columns, [[metrics["generative"][c] for c in columns]]))
    columns = ["accuracy", "precision", "recall", "f1", "n"]
    rows = [
        [name, *(values[c] for c in columns)]
        for name, values in metrics.items()
        if isinstance(values, Mapping) and name != "generative"
    ]
    if rows:
        lines.append(format_table(["dimension", *columns], rows))
    if "amber_score" in metrics:
        lines.append(f"AMBER score: {metrics['amber_score']:.4f}")
    lines.append(
        f"parser: {settings.get('parser')}; yes/no answers read differently by the other "
        f"parser: {metrics['parser_disagreements']}"
    )
    return lines
