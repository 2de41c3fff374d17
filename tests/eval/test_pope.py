"""POPE: both answer parsers on tricky answers, metrics worked out by hand, question files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.eval.items import match_predictions
from bpo.eval.pope import (
    load_items,
    parse_reference,
    parse_robust,
    question_files,
    score_pope,
    score_pope_splits,
    score_samples,
    split_name,
)
from tests.eval.conftest import write_jsonl

# answer, reference parser's reading, robust parser's reading
TRICKY = [
    ("No, there is not.", "no", "no"),
    ("Yes.", "yes", "yes"),
    ("There is no dog.", "no", "no"),
    # No word is exactly "no"/"not": the reference reads these as yes.
    ("I don't see any.", "yes", "no"),
    ("Not at all", "yes", "no"),  # "Not" is capitalised; the reference only knows "not"
    ("I can’t see one.", "yes", "no"),  # a curly apostrophe
    ("Nothing like that.", "yes", "no"),
    ("None.", "yes", "no"),
    ("NO", "yes", "no"),
    # Only the first sentence counts, under both parsers.
    ("Yes. Actually, there is no dog in the image.", "yes", "yes"),
    ("No. Wait, yes, there is one.", "no", "no"),
    # Words that merely contain "no" or "yes".
    ("I know there is a dog.", "yes", "yes"),
    ("Yes, I can see its eyes.", "yes", "yes"),
    ("There is snow on the ground.", "yes", "yes"),
    ("There is a notebook.", "yes", "yes"),
    # A leading yes wins over a later negation for the robust parser.
    ("Yes, it is not small.", "no", "yes"),
    ("", "yes", "yes"),  # an empty answer is yes, as in the reference
]


@pytest.mark.parametrize(("answer", "reference", "robust"), TRICKY)
def test_parsers_on_tricky_answers(answer: str, reference: str, robust: str) -> None:
    assert parse_reference(answer) == reference
    assert parse_robust(answer) == robust


def test_reference_parser_splits_words_on_single_spaces_only() -> None:
    # The reference splits on " ": a newline glues "No" to the next word.
    assert parse_reference("No\nthere is none") == "yes"
    assert parse_robust("No\nthere is none") == "no"


def test_metrics_worked_out_by_hand() -> None:
    answers = [
        "Yes.",  # label yes
        "No, there is not.",  # label no
        "There is no dog.",  # label yes
        "I don't see any.",  # label no   (reference: yes, robust: no)
        "Not at all",  # label no          (reference: yes, robust: no)
        "Yes, there is one.",  # label yes
        "Yes",  # label no
        "I know it is there.",  # label yes
    ]
    labels = ["yes", "no", "yes", "no", "no", "yes", "no", "yes"]

    reference = score_pope(answers, labels)
    # Reference reads: yes no no yes yes yes yes yes
    # TP = answers 1, 6, 8 = 3; FP = 4, 5, 7 = 3; TN = 2 = 1; FN = 3 = 1
    assert (reference["tp"], reference["fp"], reference["tn"], reference["fn"]) == (3, 3, 1, 1)
    assert reference["accuracy"] == pytest.approx((3 + 1) / 8)  # 0.5
    assert reference["precision"] == pytest.approx(3 / (3 + 3))  # 0.5
    assert reference["recall"] == pytest.approx(3 / (3 + 1))  # 0.75
    assert reference["f1"] == pytest.approx(2 * 0.5 * 0.75 / (0.5 + 0.75))  # 0.6
    assert reference["yes_ratio"] == pytest.approx(6 / 8)  # of the predictions, not the labels
    assert reference["parser_disagreements"] == 2  # answers 4 and 5

    robust = score_pope(answers, labels, parser="robust")
    # Robust reads: yes no no no no yes yes yes
    # TP = 1, 6, 8 = 3; FP = 7 = 1; TN = 2, 4, 5 = 3; FN = 3 = 1
    assert (robust["tp"], robust["fp"], robust["tn"], robust["fn"]) == (3, 1, 3, 1)
    assert robust["accuracy"] == pytest.approx(6 / 8)
    assert robust["precision"] == pytest.approx(3 / 4)
    assert robust["recall"] == pytest.approx(3 / 4)
    assert robust["f1"] == pytest.approx(0.75)
    assert robust["yes_ratio"] == pytest.approx(4 / 8)
    assert robust["parser_disagreements"] == 2


def test_no_yes_answers_give_zero_rates_instead_of_dividing_by_zero() -> None:
    metrics = score_pope(["No.", "No."], ["yes", "no"])
    # TP = FP = 0: the reference would divide by zero; precision, recall, F1 are 0 here.
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (0.0, 0.0, 0.0)
    assert metrics["accuracy"] == pytest.approx(1 / 2)
    assert metrics["yes_ratio"] == 0.0


def test_splits_overall_and_mean_by_hand() -> None:
    rows = [
        # random: 2 right of 2 -> accuracy 1.0
        ("random", "Yes", "yes"),
        ("random", "No", "no"),
        # popular: yes, yes for labels yes, no -> accuracy 0.5, yes ratio 1.0
        ("popular", "Yes", "yes"),
        ("popular", "Yes", "no"),
    ]
    metrics = score_pope_splits(rows)
    assert metrics["random"]["accuracy"] == 1.0
    assert metrics["popular"]["accuracy"] == 0.5
    assert metrics["popular"]["yes_ratio"] == 1.0
    # Overall pools the 4 answers: 3 right -> 0.75; yes ratio 3/4.
    assert metrics["overall"]["accuracy"] == pytest.approx(3 / 4)
    assert metrics["overall"]["yes_ratio"] == pytest.approx(3 / 4)
    # Mean averages the splits: (1.0 + 0.5) / 2.
    assert metrics["mean"]["accuracy"] == pytest.approx(0.75)
    assert metrics["mean"]["yes_ratio"] == pytest.approx((0.5 + 1.0) / 2)


def test_labels_must_be_yes_or_no() -> None:
    assert score_pope(["Yes"], [True])["tp"] == 1
    assert score_pope(["Yes"], [" YES "])["tp"] == 1
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        score_pope(["Yes"], ["maybe"])
    with pytest.raises(ConfigError, match="reference, robust"):
        score_pope(["Yes"], ["yes"], parser="lenient")


def test_toy_hook_scores_samples_with_meta_label() -> None:
    from bpo.data.records import Sample

    samples = [
        Sample(
            "a", "a.png", [{"role": "user", "content": "Is there a cat?"}], "Yes", {"label": "yes"}
        ),
        Sample(
            "b", "b.png", [{"role": "user", "content": "Is there a dog?"}], "No", {"label": "no"}
        ),
        Sample(
            "c", "c.png", [{"role": "user", "content": "Is there a cup?"}], "No", {"label": "no"}
        ),
    ]
    metrics = score_samples(samples, {"a": "Yes", "b": "Yes, one."})  # c unanswered: left out
    assert metrics["n"] == 2
    assert (metrics["tp"], metrics["fp"]) == (1, 1)


def pope_file(path: Path, count: int, start: int = 0) -> Path:
    rows = [
        {
            "question_id": start + i,
            "image": f"COCO_val2014_{i + 1:012d}.jpg",
            "text": f"Is there a thing {i} in the image?",
            "label": "yes" if i % 2 == 0 else "no",
        }
        for i in range(count)
    ]
    return write_jsonl(path, rows)


def test_split_names_and_question_files(tmp_path: Path) -> None:
    assert split_name("coco_pope_adversarial.json") == "adversarial"
    assert split_name("aokvqa_pope_popular.jsonl") == "popular"
    assert split_name("my_questions.jsonl") == "my_questions"
    for split in ("random", "popular", "adversarial"):
        pope_file(tmp_path / f"coco_pope_{split}.json", 2)
    extra = pope_file(tmp_path.parent / "extra.jsonl", 2)
    files = question_files(tmp_path, [f"mine={extra}"])
    assert list(files) == ["random", "popular", "adversarial", "mine"]
    with pytest.raises(ConfigError, match="NAME=FILE"):
        question_files(None, ["random"])
    with pytest.raises(ConfigError, match="needs question files"):
        question_files(None, [])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no POPE question files"):
        question_files(empty, [])


def test_load_items_prompt_limit_and_bad_records(tmp_path: Path) -> None:
    good = pope_file(tmp_path / "coco_pope_random.json", 4)
    items = load_items({"random": good}, prompt="Q: {question} {not a field}", limit=3)
    assert [item.id for item in items] == ["random/0", "random/1", "random/2"]
    assert items[0].prompt == [
        {"role": "user", "content": "Q: Is there a thing 0 in the image? {not a field}"}
    ]
    assert items[1].fields["label"] == "no"

    bad = write_jsonl(
        tmp_path / "coco_pope_popular.json",
        [
            {"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "yes"},
            {"question_id": 2, "image": "a.jpg", "text": "Is there a dog?", "label": "maybe"},
            {"question_id": 1, "image": "b.jpg", "text": "Is there a cup?", "label": "no"},
        ],
    )
    with pytest.raises(RecordError, match=r"popular/2.*coco_pope_popular.json:2.*'yes' or 'no'"):
        load_items({"popular": bad})
    policy = ErrorPolicy(on_error="skip")
    assert [item.id for item in load_items({"popular": bad}, policy=policy)] == ["popular/1"]
    assert policy.counts == {"bad-record": 1, "duplicate-id": 1}


def test_answers_from_other_tools_are_matched(tmp_path: Path) -> None:
    random = pope_file(tmp_path / "coco_pope_random.json", 3)
    popular = pope_file(tmp_path / "coco_pope_popular.json", 3)
    items = load_items({"random": random, "popular": popular})
    # LLaVA's merged answer file: question_id + category; answers in "text".
    llava = write_jsonl(
        tmp_path / "llava.jsonl",
        [
            {"question_id": 1, "category": "popular", "text": "No"},
            {"question_id": 2, "text": "?"},
            # A split that was not loaded: unmatched, never taken for another split's question.
            {"question_id": 0, "category": "adversarial", "text": "Yes"},
        ],
    )
    policy = ErrorPolicy(on_error="skip")
    answers, counts = match_predictions(llava, items, policy=policy)
    assert answers == {"popular/1": "No"}
    assert counts["unmatched"] == 1
    # question_id 2 alone names an item in each split: ambiguous, refused.
    assert policy.counts == {"ambiguous-prediction": 1}
    with pytest.raises(RecordError, match="names 2 items"):
        match_predictions(llava, items, policy=ErrorPolicy())

    # POPE's own answer files keep the question order and have no ids.
    single = load_items({"random": random})
    ordered = write_jsonl(tmp_path / "ordered.jsonl", [{"answer": "Yes"}, {"answer": "No"}])
    answers, counts = match_predictions(ordered, single, policy=ErrorPolicy())
    assert answers == {"random/0": "Yes", "random/1": "No"}

    ours = write_jsonl(
        tmp_path / "ours.jsonl",
        [
            {"id": "random/2", "answer": "Yes"},
            {"id": "random/2", "answer": "No"},
            {"id": "random/99", "answer": "No"},
            {"id": "random/0"},
        ],
    )
    with pytest.raises(RecordError, match=r"ours.jsonl:4: no answer"):
        match_predictions(ours, single, policy=ErrorPolicy())
    answers, counts = match_predictions(ours, single, policy=ErrorPolicy(on_error="skip"))
    assert answers == {"random/2": "Yes"}  # the first answer wins
    assert counts == {"unmatched": 1, "duplicates": 1}
