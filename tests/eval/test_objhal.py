"""Object HalBench: its question file (base64 images), COCO ground truth, both extractions."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bpo.errors import ConfigError
from bpo.eval.objhal import parse_object_list
from bpo.eval.runner import EvalOptions, evaluate
from tests.eval.conftest import FakeBackend, coco_name, write_jsonl

RESPONSES = {
    # person (woman), dog (dogs), cat, dog: 4 mentions, the cat absent
    1: "A woman sits with her dogs and a cat. The dog sleeps.",
    # one mention, present; 2 words: a judge is never asked about it
    2: "A cup.",
    # no COCO object; 4 words: a judge is asked
    3: "Nothing here but sky.",
}


def coco_files(tmp_path: Path) -> tuple[Path, Path]:
    """Instances: image 1 has a person and a dog, 2 a cup, 3 a car; captions add a couch to 1."""
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"},
                  {"id": 47, "name": "cup"}, {"id": 3, "name": "car"}]  # fmt: skip
    pairs = [(1, 1), (1, 18), (2, 47), (3, 3)]
    annotations = [{"image_id": i, "category_id": c, "segmentation": [[0, 0]]} for i, c in pairs]
    instances = tmp_path / "instances_val2014.json"
    instances.write_text(json.dumps({"categories": categories, "annotations": annotations}))
    captions = tmp_path / "captions_val2014.json"
    captions.write_text(
        json.dumps({"annotations": [{"image_id": 1, "caption": "A man and a dog on a couch."}]})
    )
    return instances, captions


def question_file(tmp_path: Path, photo_root: Path) -> Path:
    """The released layout: org_idx, image_id, question, image (base64), and one by path."""
    embedded = base64.b64encode((photo_root / coco_name(1)).read_bytes()).decode()
    rows = [
        {"org_idx": 0, "image_id": 1, "question": "Describe the image in detail.", "image": embedded},
        {"org_idx": 1, "image_id": 2, "question": "What is in the image?", "image": coco_name(2)},
        {"org_idx": 2, "image_id": 3, "question": "Describe it.", "image": coco_name(3)},
    ]  # fmt: skip
    return write_jsonl(tmp_path / "obj_halbench_300_with_image.jsonl", rows)


def test_lexicon_scores_by_hand_and_embedded_images(tmp_path: Path, photo_root: Path) -> None:
    instances, captions = coco_files(tmp_path)
    options = EvalOptions(
        bench="objhal", out=tmp_path / "run", data=question_file(tmp_path, photo_root),
        image_root=photo_root, coco_instances=[instances], coco_captions=[captions],
        progress=False,
    )  # fmt: skip
    model = FakeBackend(answer=lambda request: RESPONSES[_image_id(request.messages[0]["content"])])
    results = evaluate(options, backend=model)
    # The base64 image was decoded and sent, like the ones read from the image root.
    assert [request.image.size for request in model.requests] == [(64, 64)] * 3
    assert model.requests[0].messages[0]["content"] == "Describe the image in detail."
    metrics = results["metrics"]
    # Truth: 1 {person, dog, couch}, 2 {cup}, 3 {car}.
    assert metrics["chair_s"] == pytest.approx(1 / 3)  # response 1 names a cat
    assert metrics["chair_s_refine"] == pytest.approx(1 / 2)  # of the 2 naming objects
    assert metrics["chair_i"] == pytest.approx(1 / 5)  # 1 of 4 + 1 + 0 mentions
    # distinct present objects named: {person, dog} + {cup} + {} = 3, of 3 + 1 + 1
    assert metrics["recall"] == pytest.approx(3 / 5)
    assert results["settings"]["objects_from"] == "lexicon"
    saved = (tmp_path / "run" / "predictions.jsonl").read_text()
    assert embedded_prefix(photo_root) not in saved  # the image never goes to predictions


def _image_id(question: str) -> int:
    return {"Describe the image in detail.": 1, "What is in the image?": 2, "Describe it.": 3}[
        question
    ]


def embedded_prefix(photo_root: Path) -> str:
    return base64.b64encode((photo_root / coco_name(1)).read_bytes()).decode()[:40]


def test_judge_extraction_as_rlaif_v(tmp_path: Path, photo_root: Path) -> None:
    instances, captions = coco_files(tmp_path)
    # RLAIF-V's answer file: image_id, question, text.
    answers = write_jsonl(
        tmp_path / "answers.jsonl",
        [{"image_id": i, "question": "q", "text": text} for i, text in RESPONSES.items()],
    )
    replies = {
        RESPONSES[1]: 'Here:\n```json\n["woman", "dogs", "cat", "dog"]\n```',
        RESPONSES[3]: "I see no objects.",  # no list: response 3 is left out
    }

    def reply(request: Any) -> str:
        prompt = request.messages[0]["content"]
        return next(text for answer, text in replies.items() if f"Answer: {answer}" in prompt)

    judge = FakeBackend(answer=reply, model_name="extractor")
    results = evaluate(
        EvalOptions(
            bench="objhal", out=tmp_path / "judged", data=question_file(tmp_path, photo_root),
            predictions=answers, coco_instances=instances, coco_captions=captions,
            objects_from="judge", progress=False,
        ),
        judge=judge,
    )  # fmt: skip
    metrics = results["metrics"]
    # Asked about responses 1 and 3 only (response 2 has <= 3 words: no objects).
    assert metrics["judge_calls"] == 2 and metrics["unparsed"] == 1
    # Response 1: woman, dogs, cat, dog -> person, dog, cat ("dog" once); response 2: [].
    assert metrics["mentions"] == 3 and metrics["hallucinated_mentions"] == 1
    assert metrics["chair_s"] == pytest.approx(1 / 2)
    assert metrics["chair_i"] == pytest.approx(1 / 3)
    assert metrics["recall"] == pytest.approx((2 + 0) / (3 + 1))
    assert results["settings"]["judge"] == {"backend": "fake", "model": "extractor"}


@pytest.mark.parametrize(
    ("reply", "objects"),
    [
        ('```json\n["cat", "sofa"]\n```', ["cat", "sofa"]),
        ('The objects are:\n["cat", "sofa"]', ["cat", "sofa"]),  # the last line holds ["
        ("[]", None),  # no '["' and no json block: unreadable, as the reference
        ('["cat", "sofa"] are the objects.\nDone.', None),  # the last line is no list
        ("```json\n{broken\n```", None),
    ],
)
def test_parse_object_list(reply: str, objects: list[str] | None) -> None:
    assert parse_object_list(reply) == objects


def test_coco_files_are_required(tmp_path: Path, photo_root: Path) -> None:
    answers = write_jsonl(tmp_path / "a.jsonl", [{"image_id": 1, "text": "A dog."}])
    with pytest.raises(ConfigError, match="--coco-instances"):
        evaluate(
            EvalOptions(bench="objhal", out=tmp_path / "o", predictions=answers,
                        data=question_file(tmp_path, photo_root))
        )  # fmt: skip
