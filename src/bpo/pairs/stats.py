"""What a `bpo pairs` run kept and dropped, per strategy: ``<out>.stats.json`` and its table."""

from __future__ import annotations

import os
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpo.data.records import Pair
from bpo.pairs.filters import REASONS, word_count


def _length_summary(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "max": 0}
    return {
        "mean": round(statistics.fmean(values), 2),
        "median": float(statistics.median(values)),
        "max": max(values),
    }


@dataclass
class PairStats:
    """What a `bpo pairs` run kept and dropped, per strategy; saved as ``<out>.stats.json``.

    Attributes:
        negatives: negatives joined with their sample, per strategy.
        kept: pairs selected (written now or already in the output), per strategy.
        dropped: per strategy, pairs dropped by each reason of `REASONS`.
        chosen_words, rejected_words: word counts of the kept pairs, per strategy.
        skipped: bad records by kind (`ErrorPolicy` counts: unknown-sample, bad-json ...).
        written, already_present: kept pairs appended now / found in the output.
    """

    negatives: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)
    dropped: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    chosen_words: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    rejected_words: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    skipped: Counter[str] = field(default_factory=Counter)
    written: int = 0
    already_present: int = 0

    def drop(self, strategy: str, reason: str) -> None:
        self.dropped[strategy][reason] += 1

    def keep(self, pair: Pair) -> None:
        self.kept[pair.strategy] += 1
        self.chosen_words[pair.strategy].append(word_count(pair.chosen))
        self.rejected_words[pair.strategy].append(word_count(pair.rejected))

    def strategies(self) -> list[str]:
        return sorted(set(self.negatives) | set(self.kept))

    def dropped_total(self) -> Counter[str]:
        total: Counter[str] = Counter({reason: 0 for reason in REASONS})
        for counts in self.dropped.values():
            total.update(counts)
        return total

    def to_dict(self) -> dict[str, Any]:
        per_strategy = {
            name: {
                "negatives": self.negatives[name],
                "kept": self.kept[name],
                "dropped": {reason: self.dropped[name][reason] for reason in REASONS},
                "chosen_words": _length_summary(self.chosen_words[name]),
                "rejected_words": _length_summary(self.rejected_words[name]),
            }
            for name in self.strategies()
        }
        return {
            "negatives": sum(self.negatives.values()),
            "kept": sum(self.kept.values()),
            "dropped": dict(self.dropped_total()),
            "skipped": dict(self.skipped),
            "written": self.written,
            "already_present": self.already_present,
            "strategies": per_strategy,
        }

    def table(self) -> str:
        """A small plain-text table: counts, drops by reason and word lengths per strategy."""
        reasons = [r for r in REASONS if self.dropped_total()[r]]
        header = ["strategy", "negatives", "kept", *reasons, "chosen words", "rejected words"]
        rows = [header]

        def lengths(values: Sequence[int]) -> str:
            summary = _length_summary(values)
            return f"{summary['mean']:.0f}/{summary['median']:.0f}/{summary['max']}"

        for name in self.strategies():
            rows.append(
                [
                    name,
                    str(self.negatives[name]),
                    str(self.kept[name]),
                    *(str(self.dropped[name][r]) for r in reasons),
                    lengths(self.chosen_words[name]),
                    lengths(self.rejected_words[name]),
                ]
            )
        all_chosen = [n for values in self.chosen_words.values() for n in values]
        all_rejected = [n for values in self.rejected_words.values() for n in values]
        total = self.dropped_total()
        rows.append(
            [
                "total",
                str(sum(self.negatives.values())),
                str(sum(self.kept.values())),
                *(str(total[r]) for r in reasons),
                lengths(all_chosen),
                lengths(all_rejected),
            ]
        )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in rows
        ]
        lines.append("(words: mean/median/max)")
        return "\n".join(line.rstrip() for line in lines)


def stats_path(out: str | os.PathLike[str]) -> Path:
    """Where the stats of a pairs file are saved: ``pairs.jsonl`` -> ``pairs.stats.json``."""
    return Path(out).with_suffix(".stats.json")


def print_stats(stats: PairStats, *, file: Any = None) -> None:
    """Print the stats table (to stdout by default)."""
    print(stats.table(), file=file or sys.stdout)
