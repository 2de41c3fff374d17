"""The Data section: what was kept and dropped, per strategy and reason, and response lengths.

Counts come from the pairs' stats file (``pairs.stats.json``, written by `bpo
pairs`), which knows the dropped pairs; without it, from the pairs and
negatives files themselves. Length distributions are counted while the pairs
stream by, as ``{word count: pairs}`` per strategy, so memory stays bounded
by the longest response, not by the number of pairs.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpo.data.records import Pair
from bpo.pairs import REASONS, word_count
from bpo.report import plots
from bpo.report.html import MISSING, escape, figure, note, table


@dataclass
class DataCounts:
    """What the run's data files hold, filled while they stream by."""

    samples: int | None = None
    negatives: Counter[str] = field(default_factory=Counter)
    pairs: Counter[str] = field(default_factory=Counter)
    chosen_words: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    rejected_words: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    def add_pair(self, pair: Pair) -> None:
        self.pairs[pair.strategy] += 1
        self.chosen_words[pair.strategy][word_count(pair.chosen)] += 1
        self.rejected_words[pair.strategy][word_count(pair.rejected)] += 1


def read_stats(path: Path | None) -> dict[str, Any] | None:
    """A ``pairs.stats.json`` as written by `bpo.pairs.build_pairs` (None if absent or unreadable)."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("strategies"), dict) else None


def render_data(counts: DataCounts, stats: dict[str, Any] | None) -> str:
    """The Data section's HTML: tables of counts, the kept/dropped plot, the length plot."""
    parts = []
    if counts.samples is not None:
        parts.append(f"<p>{counts.samples} samples.</p>")
    per_strategy = _per_strategy(counts, stats)
    if per_strategy:
        reasons = [r for r in REASONS if any(row.get(r) for row in per_strategy.values())]
        headers = ["strategy", "negatives", "kept", *(f"dropped: {r}" for r in reasons)]
        rows = [
            [name, *(_count(row.get(key)) for key in ("negatives", "kept", *reasons))]
            for name, row in per_strategy.items()
        ]
        source = "pairs.stats.json" if stats else "the negatives and pairs files"
        parts.append(table(headers, rows, caption=f"per strategy (from {source})"))
        plotted = {
            name: {key: int(value) for key, value in row.items() if isinstance(value, int)}
            for name, row in per_strategy.items()
        }
        if any(row.get("kept") or any(row.get(r) for r in reasons) for row in plotted.values()):
            parts.append(
                figure(plots.counts_plot(plotted, ["kept", *reasons]), "kept and dropped pairs")
            )
    else:
        parts.append(
            note("No negatives or pairs found (looked for negatives/*.jsonl, pairs.jsonl).")
        )
    if stats and stats.get("skipped"):
        skipped = ", ".join(f"{escape(k)}: {escape(v)}" for k, v in stats["skipped"].items())
        parts.append(f"<p>Bad records skipped by <code>bpo pairs</code>: {skipped}.</p>")
    if counts.chosen_words:
        rows = [
            [name, *_lengths(counts.chosen_words[name]), *_lengths(counts.rejected_words[name])]
            for name in counts.chosen_words
        ]
        headers = [
            "strategy",
            *(f"chosen {s}" for s in _SUMMARY),
            *(f"rejected {s}" for s in _SUMMARY),
        ]
        parts.append(table(headers, rows, caption="response lengths in words (pairs kept)"))
        parts.append(
            figure(
                plots.length_plot(counts.chosen_words, counts.rejected_words),
                "response length distributions",
            )
        )
    return "".join(parts)


_SUMMARY = ("mean", "median", "max")


def _per_strategy(counts: DataCounts, stats: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Strategy -> {"negatives", "kept", reason: dropped}, from the stats or else the files."""
    if stats:
        rows: dict[str, dict[str, Any]] = {}
        for name, entry in stats["strategies"].items():
            if not isinstance(entry, dict):
                continue
            dropped = entry.get("dropped")
            dropped = dropped if isinstance(dropped, dict) else {}
            rows[str(name)] = {
                "negatives": entry.get("negatives"),
                "kept": entry.get("kept"),
                **dropped,
            }
        return rows
    names = sorted(set(counts.negatives) | set(counts.pairs))
    return {
        name: {
            "negatives": counts.negatives[name] if counts.negatives else None,
            "kept": counts.pairs[name] if counts.pairs else None,
        }
        for name in names
    }


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) else MISSING


def _lengths(counter: Counter[int]) -> list[str]:
    """Mean, median and max of a ``{value: count}`` histogram."""
    total = sum(counter.values())
    if not total:
        return [MISSING] * len(_SUMMARY)
    mean = sum(value * n for value, n in counter.items()) / total
    ordered = sorted(counter.items())
    median = _median(ordered, total)
    return [f"{mean:.1f}", f"{median:g}", str(ordered[-1][0])]


def _median(ordered: list[tuple[int, int]], total: int) -> float:
    """`statistics.median` of the values a sorted ``(value, count)`` histogram holds."""

    def at(position: int) -> int:
        seen = 0
        for value, n in ordered:
            seen += n
            if position < seen:
                return value
        return ordered[-1][0]

    low, high = at((total - 1) // 2), at(total // 2)
    return (low + high) / 2
