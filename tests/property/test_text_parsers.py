"""Parsers of model output under arbitrary text: POPE answers, MMHal ratings, object
mentions (CHAIR / lexicon) and the llm-injection output filter. None may raise, and
none may take more than linear time (the regular expressions found quadratic were fixed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpo.bootstrap.llm_injection import clean_output, is_refusal, rejection_reason
from bpo.eval.chair import coco_image_id, score_chair
from bpo.eval.mmhal import MAX_RATING, parse_rating
from bpo.eval.pope import parse_reference, parse_robust
from bpo.lexicon import ObjectLexicon
from tests.property import examples
from tests.property.strategies import surrogates

# Any text, with the words and marks these parsers look for mixed in.
WORDS = [
    "yes", "No", "not", "n't", "rating", "Rating:", "is", "6", "7", "4.5", "dog", "hot dog",
    "people", "toilet seat", "chair", "Question:", "Your image:", "Here is", ":", ".", "\n",
    " ", "\t", "-", "'", "\u2019", "I'm sorry", '"', "«", "»", "²", "٣",
]  # fmt: skip
answers = (
    st.lists(st.sampled_from(WORDS) | st.text(max_size=8) | surrogates, max_size=30).map("".join)
    | st.text()
)


@examples(300)
@given(answer=answers)
def test_pope_parsers_read_any_answer_as_yes_or_no(answer: str) -> None:
    assert parse_reference(answer) in ("yes", "no")
    assert parse_robust(answer) in ("yes", "no")


@examples(100)
@given(rest=answers)
def test_pope_robust_parser_reads_a_leading_yes_or_no(rest: str) -> None:
    assert parse_robust("Yes, " + rest) == "yes"
    assert parse_robust("No, " + rest) == "no"


@examples(300)
@given(judgement=answers)
def test_mmhal_rating_is_0_to_6_or_flagged(judgement: str) -> None:
    rating = parse_rating(judgement)
    assert rating.status in ("ok", "missing", "malformed")
    assert (rating.value is not None) == (rating.status == "ok")
    if rating.value is not None:
        assert 0 <= rating.value <= MAX_RATING


@examples(100)
@given(
    before=answers.filter(lambda text: "rating" not in text.lower()),
    value=st.integers(0, MAX_RATING),
)
def test_mmhal_rating_is_found_after_any_text(before: str, value: int) -> None:
    assert parse_rating(f"{before}\nRating: {value}").value == value


LEXICON = ObjectLexicon.default()


@examples(300)
@given(text=answers)
def test_object_mentions_are_spans_of_the_text(text: str) -> None:
    mentions = LEXICON.mentions(text)
    assert [m.start for m in mentions] == sorted(m.start for m in mentions)
    for mention in mentions:
        assert text[mention.start : mention.end] == mention.surface
        assert mention.category in LEXICON
    assert LEXICON.find(text) == [m.category for m in mentions]


@examples(100)
@given(
    captions=st.lists(answers, max_size=4),
    objects=st.lists(st.lists(st.sampled_from(["dog", "person", "cars", "x"]), max_size=3)),
)
def test_chair_rates_are_between_0_and_1(captions: list[str], objects: list[list[str]]) -> None:
    objects = (objects + [[]] * len(captions))[: len(captions)]
    metrics = score_chair(captions, objects, LEXICON)["metrics"]
    for rate in ("chair_s", "chair_i", "recall"):
        assert 0.0 <= metrics[rate] <= 1.0


@examples(300)
@given(name=answers | st.from_regex(r"COCO_val2014_[0-9٣²]{0,30}\.(jpg|PNG|gif)", fullmatch=True))
def test_coco_image_id_is_an_int_or_none(name: str) -> None:
    image_id = coco_image_id(name)
    assert image_id is None or (isinstance(image_id, int) and image_id >= 0)


@examples(300)
@given(output=answers, gold=answers)
def test_llm_injection_filter_takes_any_output(output: str, gold: str) -> None:
    cleaned = clean_output(output)
    assert len(cleaned) <= len(output.strip())  # cleaning only removes
    assert isinstance(is_refusal(cleaned), bool)
    assert rejection_reason(cleaned, gold) in (None, "empty", "unchanged", "refusal")


# --- defects found: quadratic regular expressions and int() past 4300 digits ---------

# Inputs that took 14 s (clean_output, 20,000 newlines) and 6 s (coco_image_id,
# 20,000 digits) before the fix; 50,000 here, so a regression takes minutes.
SLOW_BEFORE: list[tuple[Callable[[str], Any], str]] = [
    (clean_output, "A cat." + "\n" * 50_000 + "."),
    (clean_output, "A cat." + "\n " * 50_000 + "."),
    (coco_image_id, "1" * 50_000),
    (coco_image_id, "1" * 50_000 + ".jpg"),
]


@pytest.mark.parametrize(("parse", "text"), SLOW_BEFORE, ids=["nl", "nl-space", "digits", "jpg"])
def test_no_quadratic_time_on_long_runs(parse: Callable[[str], Any], text: str) -> None:
    start = time.perf_counter()
    parse(text)
    assert time.perf_counter() - start < 1.0


def test_clean_output_still_cuts_a_few_shot_continuation() -> None:
    text = 'Modified description: "Two dogs sit on a red sofa."\n\n  \n Question: and?'
    assert clean_output(text) == "Two dogs sit on a red sofa."
    assert clean_output("Question: first line stays") == "Question: first line stays"


def test_numbers_int_cannot_take_are_not_ratings_or_ids() -> None:
    # Was: ValueError from int() ("Exceeds the limit (4300 digits)"), and int("²").
    assert parse_rating("Rating: " + "9" * 5000).status == "malformed"
    assert coco_image_id("COCO_val2014_" + "1" * 5000 + ".jpg") is None
    assert coco_image_id("COCO_val2014_000000000042.jpg") == 42
