"""Toy metrics on hand-made captions, with the numbers worked out by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bpo.data.records import Sample
from bpo.errors import RecordError
from bpo.toy.metrics import caption_metrics, grounding_score


def _sample(
    sample_id: str, objects: list[str], partner: str | None = None, task: str = "caption"
) -> Sample:
    meta: dict[str, Any] = {
        "objects": objects,
        "counterfactual": partner is not None,
        "absent_partner": partner,
        "task": task,
    }
    return Sample(
        sample_id, f"{sample_id}.png", [{"role": "user", "content": "Describe."}], "x", meta
    )


SAMPLES = [
    _sample("cf-a", ["fork", "book"], partner="knife"),
    _sample("cf-b", ["keyboard", "cup", "spoon"], partner="mouse"),
    _sample("normal-c", ["fork", "knife", "clock"]),
    _sample("normal-d", ["mouse", "cup", "spoon"]),
    _sample("normal-d-yes", ["mouse", "cup", "spoon"], task="yesno"),  # not a caption: ignored
]
PREDICTIONS = {
    "cf-a": "A fork, a knife and a book.",  # names the absent partner
    "cf-b": "A keyboard and a cup.",  # misses the spoon, no partner named
    "normal-c": "A fork and a clock.",  # misses the knife
    "normal-d": "A mouse, a cup, a spoon and a dog.",  # a dog: a visual confusion
}


def test_rates_worked_by_hand() -> None:
    metrics = caption_metrics(SAMPLES, PREDICTIONS)
    assert metrics["cf_absent_partner_rate"] == pytest.approx(1 / 2)
    assert metrics["cf_recall"] == pytest.approx(4 / 5)  # 2 of 2 in a, 2 of 3 in b
    assert metrics["normal_dependent_recall"] == pytest.approx(2 / 3)  # knife missed; mouse, spoon
    assert metrics["normal_recall"] == pytest.approx(5 / 6)
    # The knife in a is a co-occurrence error; the mouse in d is present (its anchor is
    # not, so naming it is no error); the dog is the one confusion.
    assert metrics["partner_error_rate"] == pytest.approx(1 / 4)
    assert metrics["confusion_rate"] == pytest.approx(1 / 4)
    assert metrics["counts"]["scenes"] == 4
    assert metrics["counts"]["cf_scenes"] == metrics["counts"]["normal_scenes"] == 2
    assert grounding_score(metrics) == pytest.approx(2 / 3 - 1 / 2)


def test_plural_and_synonym_mentions_count() -> None:
    metrics = caption_metrics(SAMPLES[:1], {"cf-a": "Two forks, some knives and a book."})
    assert metrics["cf_absent_partner_rate"] == 1.0
    assert metrics["cf_recall"] == 1.0


def test_nothing_to_count_gives_nan() -> None:
    metrics = caption_metrics(SAMPLES[2:3], {"normal-c": "A fork, a knife and a clock."})
    assert math.isnan(metrics["cf_absent_partner_rate"])
    assert metrics["normal_dependent_recall"] == 1.0


def test_a_missing_prediction_names_the_sample() -> None:
    with pytest.raises(RecordError, match="cf-b"):
        caption_metrics(SAMPLES[:2], {"cf-a": "A fork."})
