"""MMHal-Bench: judge ratings parsed (well-formed, missing, malformed), scores by hand, the cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.eval.mmhal import (
    JudgeCache,
    Rating,
    image_file,
    judge_prompt,
    load_items,
    parse_rating,
    run_judge,
    score_mmhal,
)
from bpo.eval.runner import EvalOptions, evaluate
from tests.eval.conftest import PHOTOS, FakeBackend, coco_name, read_jsonl


@pytest.mark.parametrize(
    ("judgement", "reference", "robust"),
    [
        # Both rules: "rating: N" with one N in 0-6.
        ("The answer is accurate and detailed.\nRating: 5", Rating(5, "ok"), Rating(5, "ok")),
        ("rating: 2, very informative, with hallucination", Rating(2, "ok"), Rating(2, "ok")),
        # The same rating twice is one rating under both.
        ("Rating: 3. To be clear, Rating: 3", Rating(3, "ok"), Rating(3, "ok")),
        # eval_gpt_mmhal.py looks for the text "rating: s": markdown, "is", no colon,
        # "=" all read 0 there (missing a colon right after "rating").
        ("**Rating:** 4", Rating(None, "malformed"), Rating(4, "ok")),
        ("My rating is 6.", Rating(None, "malformed"), Rating(6, "ok")),
        ("Rating 4", Rating(None, "malformed"), Rating(4, "ok")),
        ("RATING = 0", Rating(None, "malformed"), Rating(0, "ok")),
        # ... and "rating: 45" / "rating: 4.5" contain "rating: 4": 4 there.
        ("Rating: 45", Rating(4, "ok"), Rating(None, "malformed")),
        ("Rating: 4.5", Rating(4, "ok"), Rating(None, "malformed")),
        # Two different ratings: neither rule picks one.
        ("Rating: 3 or maybe Rating: 4", Rating(None, "malformed"), Rating(None, "malformed")),
        # Out of the scale, or no number.
        ("Rating: 7", Rating(None, "malformed"), Rating(None, "malformed")),
        ("Rating: N/A", Rating(None, "malformed"), Rating(None, "malformed")),
        # Missing: no word "rating" at all ("operating" is not it).
        ("The response is fine.", Rating(None, "missing"), Rating(None, "missing")),
        ("", Rating(None, "missing"), Rating(None, "missing")),
        ("Operating at 5 fps.", Rating(None, "missing"), Rating(None, "missing")),
    ],
)
def test_parse_rating_reference_and_robust(
    judgement: str, reference: Rating, robust: Rating
) -> None:
    assert parse_rating(judgement) == reference  # the reference's rule is the default
    assert parse_rating(judgement, "robust") == robust
    with pytest.raises(ConfigError, match="reference, robust"):
        parse_rating(judgement, "lenient")


def test_scores_worked_out_by_hand() -> None:
    ratings = [
        Rating(5, "ok"),
        Rating(2, "ok"),
        Rating(None, "missing"),
        Rating(6, "ok"),
        Rating(None, "malformed"),
    ]
    types = ["attribute", "attribute", "counting", "counting", "other"]

    # As the reference: unparsed ratings count 0 -> values 5, 2, 0, 6, 0
    zero = score_mmhal(ratings, types)
    assert zero["average_score"] == pytest.approx((5 + 2 + 0 + 6 + 0) / 5)  # 2.6
    assert zero["hallucination_rate"] == pytest.approx(3 / 5)  # 2, 0, 0 are below 3
    assert (zero["rated"], zero["missing"], zero["malformed"]) == (3, 1, 1)
    assert zero["by_type"]["attribute"] == {
        "average_score": pytest.approx(3.5),
        "hallucination_rate": 0.5,
        "n": 2,
    }
    assert zero["by_type"]["counting"]["average_score"] == pytest.approx((0 + 6) / 2)
    assert zero["by_type"]["other"]["hallucination_rate"] == 1.0

    # Excluded: values 5, 2, 6
    excluded = score_mmhal(ratings, types, unparsed="exclude")
    assert excluded["average_score"] == pytest.approx(13 / 3)
    assert excluded["hallucination_rate"] == pytest.approx(1 / 3)
    assert excluded["n"] == 3
    assert excluded["by_type"]["other"] == {"average_score": 0.0, "hallucination_rate": 0.0, "n": 0}
    with pytest.raises(ConfigError):
        score_mmhal(ratings, types, unparsed="drop")


RECORD = {
    "question_type": "counting",
    "question_topic": "animal",
    "image_id": "abc",
    "image_src": "https://c1.staticflickr.com/1/2/12345_abcd_o.jpg",
    "image_content": ["Cat", "Lynx"],
    "question": "How many cats are there?",
    "gt_answer": "There are two cats.",
}


def test_judge_prompt_and_image_file() -> None:
    prompt = judge_prompt(RECORD, "One {cat}.")
    for part in ("Cat, Lynx", "How many cats are there?", "There are two cats.", "One {cat}."):
        assert part in prompt
    assert "Rating: N" in prompt
    assert image_file(RECORD) == "12345_abcd_o.jpg"
    assert image_file({**RECORD, "image_path": "images/x.jpg"}) == "images/x.jpg"


def counting_judge() -> FakeBackend:
    """A judge whose rating is the length of the answer, mod 7."""

    def rate(request: Any) -> str:
        answer = request.messages[0]["content"].split("Assistant's answer: ")[1].split("\n")[0]
        return f"Judged.\nRating: {len(answer) % 7}"

    return FakeBackend(answer=rate, model_name="judge-model")


def test_judge_cache_makes_a_rerun_free(tmp_path: Path) -> None:
    prompts = [judge_prompt(RECORD, answer) for answer in ("a", "bb", "a", "ccc")]
    judge = counting_judge()
    cache = JudgeCache(tmp_path / "cache.jsonl")
    answers, calls = run_judge(prompts, judge, cache, batch_size=2)
    cache.close()
    assert calls == 3  # "a" twice: asked once
    assert [parse_rating(a).value for a in answers] == [1, 2, 1, 3]

    again = counting_judge()
    cache = JudgeCache(tmp_path / "cache.jsonl")
    answers_again, calls_again = run_judge(prompts, again, cache)
    cache.close()
    assert (calls_again, again.calls) == (0, 0)
    assert answers_again == answers
    # Another judge model is another key: asked again.
    other = counting_judge()
    other.model_name = "another-judge"
    cache = JudgeCache(tmp_path / "cache.jsonl")
    assert run_judge(prompts, other, cache)[1] == 3
    cache.close()


def write_benchmark(tmp_path: Path, count: int = 4) -> Path:
    types = ["attribute", "counting"]
    records = [
        {
            **RECORD,
            "question_type": types[i % 2],
            "image_src": f"https://example.org/images/{coco_name(i % len(PHOTOS) + 1)}",
            "question": f"Question {i}?",
        }
        for i in range(count)
    ]
    path = tmp_path / "response_template.json"
    path.write_text(json.dumps(records, indent=2))
    return path


def test_load_items_and_bad_records(tmp_path: Path) -> None:
    path = write_benchmark(tmp_path, 3)
    items = load_items(path, limit=2)
    assert [item.id for item in items] == ["mmhal-0", "mmhal-1"]
    assert items[1].image == coco_name(2)
    assert items[0].prompt == [{"role": "user", "content": "Question 0?"}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([RECORD, {**RECORD, "gt_answer": None}]))
    with pytest.raises(RecordError, match=r"mmhal-1.*item \[1\].*gt_answer"):
        load_items(bad)
    assert len(load_items(bad, policy=ErrorPolicy(on_error="skip"))) == 1


def test_end_to_end_with_fake_model_and_judge(tmp_path: Path, photo_root: Path) -> None:
    data = write_benchmark(tmp_path)
    model = FakeBackend(answer=lambda request: "x" * len(request.messages[0]["content"]))
    options = EvalOptions(
        bench="mmhal", out=tmp_path / "run", data=data, image_root=photo_root, progress=False
    )
    results = evaluate(options, backend=model, judge=counting_judge())
    # Answers are "x" * len("Question i?") = 11 characters -> rating 11 % 7 = 4
    assert results["metrics"]["average_score"] == 4.0
    assert results["metrics"]["judge_calls"] == 4
    assert set(results["metrics"]["by_type"]) == {"attribute", "counting"}
    assert all(request.image is not None for request in model.requests)
    assert [q["rating"] for q in results["details"]["questions"]] == [4, 4, 4, 4]

    # Scoring the run's own predictions again: no generation, no judge call.
    judge = counting_judge()
    options.predictions = tmp_path / "run" / "predictions.jsonl"
    again = evaluate(options, backend=FakeBackend(fail_on_call=1), judge=judge)
    assert judge.calls == 0
    assert again["metrics"]["average_score"] == 4.0

    # A response file (the benchmark's format with model_answer) needs no --data.
    responses = json.loads(data.read_text())
    for record in responses:
        record["model_answer"] = "abc"
    response_file = tmp_path / "response.json"
    response_file.write_text(json.dumps(responses))
    scored = evaluate(
        EvalOptions(bench="mmhal", out=tmp_path / "scored", predictions=response_file),
        judge=counting_judge(),
    )
    assert scored["metrics"]["average_score"] == 3.0  # len("abc") % 7
    assert [row["id"] for row in read_jsonl(tmp_path / "scored" / "predictions.jsonl")] == [
        f"mmhal-{i}" for i in range(4)
    ]


TYPES = ["attribute", "adversarial", "comparison", "counting", "relation", "environment",
         "holistic", "other"]  # fmt: skip


def test_reference_parser_and_grouping_end_to_end(tmp_path: Path) -> None:
    """A response file of 16 questions (two cycles of the 8 types), judged in four formats."""
    records = [
        {**RECORD, "question_type": TYPES[i % 8], "question": f"Q{i}?", "model_answer": f"A{i}"}
        for i in range(16)
    ]
    # The second "counting" question (position 11) is labelled "other" by mistake: the
    # reference groups by position (11 % 8 == 3), so it stays with counting, and the
    # group, holding two labels, is named by its position.
    records[11]["question_type"] = "other"
    response_file = tmp_path / "response.json"
    response_file.write_text(json.dumps(records))
    judgements = {
        "A0": "Rating: 6",  # 6 under both rules
        "A8": "**Rating:** 4",  # reference 0 (no "rating: 4"), robust 4
        "A1": "rating: 45",  # reference 4, robust malformed
        "A9": "Rating: 2",  # 2 under both
    }

    def judge_answer(request: Any) -> str:
        answer = request.messages[0]["content"].split("Assistant's answer: ")[1].split("\n")[0]
        return judgements.get(answer, "Rating: 3")

    def run(parser: str) -> dict[str, Any]:
        return evaluate(
            EvalOptions(
                bench="mmhal", out=tmp_path / parser, predictions=response_file, parser=parser,
                progress=False,
            ),
            judge=FakeBackend(answer=judge_answer, model_name="judge"),
        )["metrics"]  # fmt: skip

    reference = run("reference")
    # attribute (positions 0, 8): 6 and 0 -> 3.0; adversarial (1, 9): 4 and 2 -> 3.0
    assert reference["by_type"]["attribute"]["average_score"] == 3.0
    assert reference["by_type"]["adversarial"]["average_score"] == 3.0
    # 12 other questions rate 3: (6 + 0 + 4 + 2 + 12 * 3) / 16 = 48 / 16
    assert reference["average_score"] == 3.0
    # below 3: the 0 and the 2 -> 2 / 16
    assert reference["hallucination_rate"] == 2 / 16
    assert reference["parser_disagreements"] == 2  # A8 and A1
    assert "counting" not in reference["by_type"]
    assert reference["by_type"]["position % 8 == 3"]["n"] == 2
    assert list(reference["by_type"])[:3] == ["attribute", "adversarial", "comparison"]

    robust = run("robust")
    # attribute: 6 and 4 -> 5.0; adversarial: malformed (0 by default) and 2 -> 1.0
    assert robust["by_type"]["attribute"]["average_score"] == 5.0
    assert robust["by_type"]["adversarial"]["average_score"] == 1.0
    assert (robust["malformed"], reference["malformed"]) == (1, 1)
