"""Which way is better: by hand-picked values where a naive rule would get it wrong."""

from __future__ import annotations

import math

import pytest

from bpo.report.metric_direction import judge, rule


@pytest.mark.parametrize(
    ("name", "before", "after", "expected"),
    [
        # POPE's yes-ratio: closer to 0.5 is better, whichever way it moves.
        ("random.yes_ratio", 1.0, 0.5, "better"),
        ("random.yes_ratio", 0.2, 0.45, "better"),
        ("random.yes_ratio", 0.55, 0.9, "worse"),
        ("overall.yes_ratio", 0.5, 0.3, "worse"),
        ("mean.yes_ratio", 0.4, 0.6, ""),  # as far from 0.5 either side
        # Lower is better for CHAIR and hallucination rates, at any depth of the name.
        ("chair_s", 0.30, 0.20, "better"),
        ("chair_i", 0.10, 0.12, "worse"),
        ("by_type.counting.hallucination_rate", 0.5, 0.25, "better"),
        # Higher is better for accuracy, F1, recall, MMHal's score.
        ("adversarial.f1", 0.70, 0.75, "better"),
        ("recall", 0.6, 0.5, "worse"),
        ("average_score", 2.1, 2.9, "better"),
        # Neutral: no change, a missing or undefined value, a metric of no known direction.
        ("chair_s", 0.2, 0.2, ""),
        ("chair_s", None, 0.2, ""),
        ("f1", 0.5, math.nan, ""),
        ("random.n", 100, 120, ""),
        ("mentions_per_caption", 1.0, 2.0, ""),
    ],
)
def test_judge(name: str, before: float | None, after: float | None, expected: str) -> None:
    assert judge(name, before, after) == expected


def test_rule_says_how_a_metric_is_judged() -> None:
    assert rule("random.yes_ratio") == "closer to 0.5"
    assert rule("chair_i") == "lower"
    assert rule("overall.accuracy") == "higher"
    assert rule("random.tp") is None
