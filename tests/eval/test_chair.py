"""CHAIR: object extraction on tricky captions, numbers worked out by hand, COCO ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo.data.records import Sample
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.eval.chair import (
    coco_image_id,
    ground_truth,
    load_coco_objects,
    load_items,
    score_chair,
    score_samples,
)
from bpo.lexicon import ObjectLexicon
from tests.eval.conftest import write_jsonl


@pytest.mark.parametrize(
    ("caption", "mentions"),
    [
        # plurals, regular and irregular
        ("Two dogs and three knives near some people.", ["dog", "knife", "person"]),
        # synonyms
        ("A puppy naps on the sofa beside a kitten.", ["dog", "couch", "cat"]),
        # two-word names are one object, not their words
        (
            "A hot dog and a teddy bear on the dining table.",
            ["hot dog", "teddy bear", "dining table"],
        ),
        # an object named twice counts twice
        ("A man holds a cake while the man smiles.", ["person", "cake", "person"]),
        # context phrases: a baby bird is a bird, a toilet seat is the toilet's
        ("A baby bird sits on a toilet seat.", ["bird", "toilet"]),
    ],
)
def test_object_mentions_in_tricky_captions(caption: str, mentions: list[str]) -> None:
    result = score_chair([caption], [mentions])
    found = [category for _, category in result["captions"][0]["mentions"]]
    assert found == mentions
    assert result["metrics"]["chair_i"] == 0.0  # every mention is present


def test_chair_worked_out_by_hand() -> None:
    captions = [
        "A dog and a cat sit on a couch.",  # mentions dog, cat, couch; cat is absent
        "Two dogs play. The dog chases a frisbee near a dog.",  # dog x3 absent, frisbee present
        "A man holds a hot dog.",  # person, hot dog: both present
        "An empty room.",  # no mentions at all
    ]
    objects = [
        ["dog", "couch"],
        ["frisbee"],
        ["people", "hot dogs", "bench"],  # synonyms and plurals map to person, hot dog
        ["chair"],
    ]
    result = score_chair(captions, objects, ObjectLexicon.default(), ids=["a", "b", "c", "d"])
    metrics = result["metrics"]
    # CHAIR_s: captions a and b hallucinate -> 2 / 4
    assert metrics["chair_s"] == pytest.approx(2 / 4)
    # CHAIR_i: hallucinated mentions 1 (cat) + 3 (dog, dog, dog) = 4,
    # over all mentions 3 + 4 + 2 + 0 = 9 (repeats counted, as the reference does)
    assert metrics["mentions"] == 9
    assert metrics["hallucinated_mentions"] == 4
    assert metrics["chair_i"] == pytest.approx(4 / 9)
    # Recall: objects mentioned and present, 2 (dog, couch) + 1 (frisbee) + 2 (person,
    # hot dog) + 0, over objects present 2 + 1 + 3 + 1 = 7
    assert metrics["recall"] == pytest.approx(5 / 7)
    assert metrics["mentions_per_caption"] == pytest.approx(9 / 4)

    by_id = {caption["id"]: caption for caption in result["captions"]}
    assert by_id["a"]["hallucinated"] == [["cat", "cat"]]
    assert by_id["b"]["hallucinated"] == [["dogs", "dog"], ["dog", "dog"], ["dog", "dog"]]
    assert by_id["b"]["chair_i"] == pytest.approx(3 / 4)
    assert by_id["c"]["objects"] == ["bench", "hot dog", "person"]
    assert by_id["c"]["recall"] == pytest.approx(2 / 3)
    assert by_id["d"] == {
        "id": "d",
        "mentions": [],
        "hallucinated": [],
        "objects": ["chair"],
        "chair_s": 0,
        "chair_i": 0.0,
        "recall": 0.0,
    }


def test_empty_inputs_give_zero_rates() -> None:
    assert score_chair([], [])["metrics"]["chair_s"] == 0.0
    metrics = score_chair(["Nothing to see."], [[]])["metrics"]
    assert (metrics["chair_i"], metrics["recall"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="2 captions but 1"):
        score_chair(["a", "b"], [[]])


def test_toy_hook_scores_samples_with_meta_objects() -> None:
    samples = [
        Sample(
            "s1", "1.png", [{"role": "user", "content": "Describe."}], "x", {"objects": ["cat"]}
        ),
        Sample(
            "s2", "2.png", [{"role": "user", "content": "Describe."}], "x", {"objects": ["cup"]}
        ),
    ]
    result = score_samples(samples, {"s1": "A cat and a dog.", "s2": "A cup."})
    # s1 hallucinates the dog: CHAIR_s 1/2, CHAIR_i 1/3 (cat, dog, cup mentioned)
    assert result["metrics"]["chair_s"] == pytest.approx(1 / 2)
    assert result["metrics"]["chair_i"] == pytest.approx(1 / 3)
    with pytest.raises(RecordError, match=r"meta\.objects"):
        score_samples(
            [Sample("s3", None, [{"role": "user", "content": "?"}], "x")], {"s3": "A cat."}
        )


def write_coco(tmp_path: Path) -> tuple[Path, Path]:
    polygon = {"segmentation": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], "area": 10.5, "bbox": [1, 2, 3, 4]}
    crowd = {"segmentation": {"counts": [1, 2, 3], "size": [4, 4]}, "iscrowd": 1}
    instances = {
        "info": {"description": "hand-made"},
        "images": [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 18, **polygon},
            {"id": 11, "image_id": 2, "category_id": 67, **crowd},
            {"id": 12, "image_id": 3, "category_id": 17, **polygon},  # not asked for
        ],
        # Categories come last in COCO's files, after the annotations that name them.
        "categories": [
            {"supercategory": "animal", "id": 17, "name": "cat"},
            {"supercategory": "animal", "id": 18, "name": "dog"},
            {"supercategory": "furniture", "id": 67, "name": "dining table"},
        ],
    }
    captions = {
        "annotations": [
            {"image_id": 1, "id": 1, "caption": "A puppy sleeps on a sofa."},
            {"image_id": 2, "id": 2, "caption": "Pizzas on a table."},
            {"image_id": 3, "id": 3, "caption": "A cat and a laptop."},
        ]
    }
    instances_path, captions_path = tmp_path / "instances.json", tmp_path / "captions.json"
    instances_path.write_text(json.dumps(instances))
    captions_path.write_text(json.dumps(captions))
    return instances_path, captions_path


def test_coco_ground_truth_unions_instances_and_caption_objects(tmp_path: Path) -> None:
    instances, captions = write_coco(tmp_path)
    objects = load_coco_objects([1, 2, 4], instances=instances, captions=captions)
    # image 1: dog (instance) + dog, couch (caption); image 2: dining table + pizza, table
    assert objects == {1: {"dog", "couch"}, 2: {"dining table", "pizza"}, 4: set()}
    assert load_coco_objects([1], instances=instances) == {1: {"dog"}}
    assert load_coco_objects([1], captions=captions) == {1: {"dog", "couch"}}
    with pytest.raises(ConfigError, match="no such file"):
        load_coco_objects([1], instances=tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"annotations": [{"image_id": 1,')
    with pytest.raises(ConfigError, match="not a COCO instances file"):
        load_coco_objects([1], instances=broken)


def test_items_and_ground_truth_from_records(tmp_path: Path) -> None:
    instances, captions = write_coco(tmp_path)
    data = write_jsonl(
        tmp_path / "chair.jsonl",
        [
            {"image": "COCO_val2014_000000000001.jpg"},
            {"image": "COCO_val2014_000000000002.jpg", "prompt": "Caption it."},
            {"id": "mine", "image": "photo.png", "objects": ["cat"]},
            {"image": "other.png"},
        ],
    )
    items = load_items(data, prompt="Describe.")
    assert [item.id for item in items] == ["coco-1", "coco-2", "mine", "other.png"]
    assert items[0].prompt == [{"role": "user", "content": "Describe."}]
    assert items[1].prompt == [{"role": "user", "content": "Caption it."}]
    assert items[0].fields["image_id"] == 1
    assert coco_image_id("photo.png") is None

    policy = ErrorPolicy(on_error="skip")
    truth = ground_truth(items, instances=instances, captions=captions, policy=policy)
    # With COCO files, images with a COCO id use them; others fall back on "objects".
    assert truth == {
        "coco-1": ["couch", "dog"],
        "coco-2": ["dining table", "pizza"],
        "mine": ["cat"],
    }
    assert policy.counts == {"no-ground-truth": 1}
    assert ground_truth(items[2:3]) == {"mine": ["cat"]}
    with pytest.raises(RecordError, match=r"other\.png.*no ground truth: needs 'objects'"):
        ground_truth(items[2:])
