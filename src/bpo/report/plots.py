"""The report's plots, drawn with matplotlib's Agg canvas and embedded as PNG data URIs.

Figures are built with `matplotlib.figure.Figure` and rendered by
`FigureCanvasAgg`, never through `pyplot`: no global figure registry, no GUI
backend chosen for the caller's process (matplotlib's advice for servers and
libraries).
"""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Enough for a sharp plot at the page's width without weighing much (~30-60 KB each).
DPI = 100
# Strategies and runs beyond these are left out of a plot (the tables list them all).
MAX_SERIES = 8


def png_uri(figure: Figure) -> str:
    """A figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def counts_plot(counts: Mapping[str, Mapping[str, int]], order: Sequence[str]) -> str:
    """Horizontal stacked bars: for each strategy, pairs kept and dropped per reason.

    Args:
        counts: strategy -> {"kept" or a drop reason: count}.
        order: the segments in stacking order ("kept" first).
    """
    strategies = list(counts)[:MAX_SERIES]
    figure = Figure(figsize=(9, 0.6 * len(strategies) + 1.4))
    axes = figure.add_subplot()
    left = [0] * len(strategies)
    for segment in order:
        widths = [counts[name].get(segment, 0) for name in strategies]
        if not any(widths):
            continue
        axes.barh(strategies, widths, left=left, label=segment)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    axes.invert_yaxis()
    axes.set_xlabel("negatives")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4, frameon=False)
    axes.set_title("kept and dropped pairs per strategy")
    return png_uri(figure)


def length_plot(chosen: Mapping[str, Counter[int]], rejected: Mapping[str, Counter[int]]) -> str:
    """Word-count histograms of the chosen and rejected responses, one panel per strategy."""
    strategies = list(chosen)[:MAX_SERIES]
    columns = min(3, len(strategies))
    rows = math.ceil(len(strategies) / columns)
    figure = Figure(figsize=(3.6 * columns + 0.6, 2.7 * rows + 0.4))
    longest = max(
        (
            max(counter)
            for name in strategies
            for counter in (chosen[name], rejected[name])
            if counter
        ),
        default=1,
    )
    bins = _bins(longest)
    for index, name in enumerate(strategies, start=1):
        axes = figure.add_subplot(rows, columns, index)
        for label, counter in (("chosen", chosen[name]), ("rejected", rejected[name])):
            if counter:
                values, weights = zip(*sorted(counter.items()), strict=True)
                axes.hist(values, bins=bins, weights=weights, histtype="step", label=label)
        axes.set_title(name, fontsize=10)
        axes.set_xlabel("words")
        axes.legend(fontsize=8, frameon=False)
    figure.suptitle("response lengths")
    figure.tight_layout()
    return png_uri(figure)


def _bins(longest: int) -> list[float]:
    """About 30 integer-aligned bins from 0 to the longest response."""
    width = max(1, math.ceil((longest + 1) / 30))
    return [i * width - 0.5 for i in range(math.ceil((longest + 1) / width) + 1)]


def training_plot(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]]) -> str:
    """Metrics against the step: one panel each, three to a row, one line per series.

    Args:
        curves: panel title -> line label (a run, a metric, or both) -> ``(step, value)``
            points.
    """
    names = list(curves)
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.0 * columns, 3.0 * rows))
    for index, name in enumerate(names, start=1):
        axes = figure.add_subplot(rows, columns, index)
        for label, points in list(curves[name].items())[:MAX_SERIES]:
            steps, values = zip(*points, strict=True)
            axes.plot(steps, values, marker="." if len(points) < 40 else None, label=label)
        axes.set_title(name, fontsize=11)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if len(curves[name]) > 1:
            axes.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    return png_uri(figure)


def metrics_bar_plot(
    title: str, metrics: Sequence[str], runs: Mapping[str, Mapping[str, float]]
) -> str:
    """Grouped bars: for each metric, one bar per run (labelled with its value)."""
    labels = list(runs)[:MAX_SERIES]
    figure = Figure(figsize=(max(5.0, 1.1 * len(metrics) * max(1, len(labels)) / 2 + 2), 3.4))
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(labels))
    for offset, label in enumerate(labels):
        positions = [i + (offset - (len(labels) - 1) / 2) * width for i in range(len(metrics))]
        values = [runs[label].get(name, float("nan")) for name in metrics]
        bars = axes.bar(positions, values, width=width, label=label)
        axes.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
    axes.set_xticks(range(len(metrics)), metrics, rotation=20, ha="right", fontsize=9)
    axes.set_title(title)
    axes.margins(y=0.15)
    axes.legend(fontsize=8, frameon=False)
    return png_uri(figure)
