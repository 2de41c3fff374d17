"""Which way is better for a metric, so that a change is coloured by what it means.

A change is "better" or "worse" only for metrics whose good direction is known,
by the last part of their dotted name (``adversarial.f1`` -> ``f1``); any other
change is neutral, since colouring a count or a setting would claim more than
the numbers say.
"""

from __future__ import annotations

import math
from typing import Literal

HIGHER_IS_BETTER = frozenset(
    {"accuracy", "precision", "recall", "f1", "average_score", "cf_recall",
     "normal_dependent_recall", "normal_recall",
     # AMBER (score, Cover) and HallusionBench (accuracies per question, figure, pair).
     "amber_score", "cover", "aAcc", "fAcc", "qAcc", "easy_aAcc", "hard_aAcc"}
)  # fmt: skip
LOWER_IS_BETTER = frozenset(
    {"chair_s", "chair_i", "hallucination_rate", "hallucinated_captions",
     "hallucinated_mentions", "cf_absent_partner_rate", "partner_error_rate", "confusion_rate",
     # AMBER: CHAIR, Hal, and Cog (mentions of the objects annotated as likely hallucinations);
     # Object HalBench's CHAIR_s over responses naming objects.
     "chair", "hal", "cog", "hallucinated_nouns", "chair_s_refine", "hallucinated_responses"}
)  # fmt: skip
# Metrics whose best value is a target, not an end of the scale. POPE's splits are
# balanced (half the questions are about present objects; Li et al. 2023), so an
# unbiased model answers "yes" half the time: a yes-ratio moving toward 0.5 is better,
# one moving away (a model that says yes or no to everything) is worse.
TARGETS = {"yes_ratio": 0.5}

# Also the CSS class of a change's cell ("" for neutral).
Direction = Literal["better", "worse", ""]


def judge(name: str, before: float | None, after: float | None) -> Direction:
    """Whether going from `before` to `after` is better, worse or neither for metric `name`.

    Args:
        name: the metric's dotted name (only its last part matters).
        before: the baseline's value (None when the baseline lacks it).
        after: the other run's value.

    Returns:
        ``"better"``, ``"worse"``, or ``""`` when a value is missing or not finite,
        nothing changed, or the metric's good direction is unknown.
    """
    if before is None or after is None or not math.isfinite(before) or not math.isfinite(after):
        return ""
    last = name.rsplit(".", 1)[-1]
    if last in TARGETS:
        target = TARGETS[last]
        gain = abs(before - target) - abs(after - target)
    elif last in HIGHER_IS_BETTER:
        gain = after - before
    elif last in LOWER_IS_BETTER:
        gain = before - after
    else:
        return ""
    if gain == 0:
        return ""
    return "better" if gain > 0 else "worse"


def rule(name: str) -> str | None:
    """When metric `name` is better, in words: "lower", "higher", "closer to 0.5" (None
    when its direction is unknown)."""
    last = name.rsplit(".", 1)[-1]
    if last in TARGETS:
        return f"closer to {TARGETS[last]:g}"
    if last in HIGHER_IS_BETTER:
        return "higher"
    if last in LOWER_IS_BETTER:
        return "lower"
    return None
