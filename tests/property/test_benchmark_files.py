"""Benchmark files under hostile input: POPE questions, CHAIR records and COCO
annotations, MMHal-Bench, AMBER, Object HalBench and HallusionBench records. Each
loader gives items or a bpo error."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpo.errors import BpoError, ConfigError, ErrorPolicy, RecordError
from bpo.eval import amber, chair, hallusion, mmhal, objhal, pope
from tests.property import examples
from tests.property.strategies import either, files, json_values, texts, write

pope_records = st.fixed_dictionaries(
    {
        "question_id": either(st.integers(0, 3)),
        "image": either(st.just("COCO_val2014_000000000042.jpg")),
        "text": either(st.sampled_from(["Is there a dog in the image?", ""]) | texts),
        "label": either(st.sampled_from(["yes", "no", "Yes ", True])),
    }
)
chair_records = st.fixed_dictionaries(
    {"image": either(st.sampled_from(["COCO_val2014_000000000042.jpg", "x.png", ""]))},
    optional={
        "id": json_values,
        "image_id": either(st.sampled_from([42, "42", "²", "0" * 30]) | st.integers()),
        "objects": either(st.lists(st.sampled_from(["dog", "puppies", "toaster", "x"]))),
        "prompt": either(st.sampled_from(["Describe.", [{"role": "user", "content": "Hi"}]])),
    },
)
mmhal_records = st.fixed_dictionaries(
    {
        "question_type": either(st.sampled_from(["attribute", "counting"])),
        "question": either(texts),
        "gt_answer": either(texts),
    },
    optional={
        "image_src": either(st.sampled_from(["https://x.org/a/b.jpg", "http://[oops/", "", 5])),
        "image_path": either(st.just("b.jpg")),
        "image_content": either(st.lists(texts, max_size=3) | texts),
    },
)


amber_records = st.fixed_dictionaries(
    {
        "id": either(st.sampled_from([1, 1005, "7", True]) | st.integers()),
        "image": either(st.just("AMBER_1.jpg")),
        "query": either(texts),
    }
)
objhal_records = st.fixed_dictionaries(
    {
        "image_id": either(st.sampled_from([42, "42", "²", 10**30]) | st.integers()),
        "question": either(texts),
        "image": either(st.sampled_from(["COCO_val2014_000000000042.jpg", "aGVsbG8=", ""])),
    }
)
hallusion_records = st.fixed_dictionaries(
    {
        "category": either(st.sampled_from(["VD", "VS", "XX"])),
        "subcategory": either(st.just("chart")),
        "visual_input": either(st.sampled_from(["0", "1", "2"])),
        "set_id": either(st.sampled_from(["0", 0])),
        "figure_id": either(st.sampled_from(["0", "1"])),
        "question_id": either(st.sampled_from(["0", "1"])),
        "question": either(texts),
        "gt_answer": either(st.sampled_from(["0", "1", "yes"])),
    },
    optional={"filename": either(st.sampled_from(["./hallusion_bench/VS/chart/0_1.png", ""]))},
)


def load(benchmark: str, path: Path, policy: ErrorPolicy) -> list[Any]:
    if benchmark == "pope":
        return pope.load_items({"random": path}, policy=policy)
    loaders = {"chair": chair, "mmhal": mmhal, "amber": amber, "objhal": objhal,
               "hallusion": hallusion}  # fmt: skip
    return loaders[benchmark].load_items(path, policy=policy)  # type: ignore[attr-defined]


RECORDS = {
    "pope": pope_records, "chair": chair_records, "mmhal": mmhal_records,
    "amber": amber_records, "objhal": objhal_records, "hallusion": hallusion_records,
}  # fmt: skip


@pytest.mark.parametrize("benchmark", RECORDS)
@examples(40)
@given(data=st.data())
def test_benchmark_loaders_give_items_or_bpo_errors(benchmark: str, data: st.DataObject) -> None:
    content = data.draw(files(RECORDS[benchmark]))
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "questions.jsonl", content)
        for on_error in ("raise", "skip"):
            try:
                items = load(benchmark, path, ErrorPolicy(on_error=on_error))
            except BpoError as error:
                assert str(path) in str(error)
                continue
            assert len({item.id for item in items}) == len(items)
            for item in items:  # each item's fields go into predictions.jsonl
                json.dumps(item.fields, ensure_ascii=False).encode("utf-8")


coco_files = st.fixed_dictionaries(
    {},
    optional={
        "annotations": either(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "image_id": either(st.sampled_from([42, 7])),
                        "category_id": either(st.sampled_from([18, 99])),
                        "caption": either(st.sampled_from(["A dog on a sofa.", "Two cats."])),
                    }
                ),
                max_size=4,
            )
        ),
        "categories": either(
            st.lists(
                st.fixed_dictionaries(
                    {"id": either(st.just(18)), "name": either(st.sampled_from(["dog", "cat"]))}
                ),
                max_size=2,
            )
        ),
    },
)


@examples(60)
@given(value=coco_files | json_values, cut=st.integers(0, 3))
def test_coco_annotation_files_give_objects_or_config_errors(value: Any, cut: int) -> None:
    content = json.dumps(value).encode()
    if cut == 0 and content:
        content = content[: len(content) // 2]
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "coco.json", content)
        for files_given in ({"instances": path}, {"captions": path}):
            try:
                objects = chair.load_coco_objects([42, 7], **files_given)
            except ConfigError:
                continue
            assert set(objects) == {42, 7}
            assert all(isinstance(name, str) for names in objects.values() for name in names)


# --- defects found, each with its test ------------------------------------------------


def test_coco_captions_with_a_list_image_id_is_a_config_error(tmp_path: Path) -> None:
    # Was: TypeError (unhashable list tested for membership in a set).
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"annotations": [{"image_id": [42], "caption": "A dog."}]}))
    with pytest.raises(ConfigError, match="image_id"):
        chair.load_coco_objects([42], captions=path)


def test_coco_instances_with_a_huge_decimal_id_is_a_config_error(tmp_path: Path) -> None:
    # Was: int(Decimal("1e999999999")) building a billion-digit integer.
    path = tmp_path / "instances.json"
    path.write_text(
        '{"categories": [{"id": 18, "name": "dog"}],'
        ' "annotations": [{"image_id": 1e999999999, "category_id": 18}]}'
    )
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="not an integer"):
        chair.load_coco_objects([42], instances=path)
    assert time.perf_counter() - start < 1.0


def test_coco_file_nested_deeply_is_refused_quickly(tmp_path: Path) -> None:
    # Was: ijson's dotted paths, memory growing with depth squared.
    path = tmp_path / "captions.json"
    depth = 200_000
    path.write_text('{"annotations": ' + "[" * depth + "]" * depth + "}")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="nested too deeply"):
        chair.load_coco_objects([42], captions=path)
    assert time.perf_counter() - start < 5.0


def test_coco_objects_still_read(tmp_path: Path) -> None:
    instances = tmp_path / "instances.json"
    instances.write_text(
        json.dumps(
            {
                "annotations": [
                    {"image_id": 42, "category_id": 18, "segmentation": [[1.5, 2.0, 3.0]]},
                    {
                        "image_id": 7,
                        "category_id": 18,
                        "segmentation": {"counts": [1], "size": [2]},
                    },
                ],
                "categories": [{"id": 18, "name": "dog"}],
            }
        )
    )
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"annotations": [{"image_id": 42, "caption": "A cat."}]}))
    objects = chair.load_coco_objects([42, 9], instances=instances, captions=captions)
    assert objects == {42: {"dog", "cat"}, 9: set()}


def test_chair_image_id_of_unicode_digits_is_no_id(tmp_path: Path) -> None:
    # Was: ValueError: "²".isdigit() is True but int("²") fails.
    path = tmp_path / "chair.jsonl"
    path.write_text(json.dumps({"image": "x.jpg", "image_id": "²", "objects": ["dog"]}) + "\n")
    (item,) = chair.load_items(path)
    assert item.fields["image_id"] is None and item.id == "x.jpg"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"image_src": "http://[oops/b.jpg"}, "not a URL"),  # was: ValueError from urlparse
        ({"image_path": "b.jpg", "image_content": 5}, "image_content"),  # was: TypeError
    ],
)
def test_mmhal_bad_image_fields_are_record_errors(
    tmp_path: Path, extra: dict[str, Any], reason: str
) -> None:
    path = tmp_path / "mmhal.jsonl"
    record = {"question_type": "counting", "question": "How many?", "gt_answer": "Two."}
    path.write_text(json.dumps({**record, **extra}) + "\n")
    with pytest.raises(RecordError, match=reason) as caught:
        mmhal.load_items(path)
    assert caught.value.line == 1 and caught.value.record_id == "mmhal-0"


@pytest.mark.parametrize("benchmark", RECORDS)
def test_lone_surrogates_are_refused_before_predictions(tmp_path: Path, benchmark: str) -> None:
    # Was: read fine, then a UnicodeEncodeError when the item's fields were written.
    record = {
        "pope": {"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "no"},
        "chair": {"image": "a.jpg", "objects": ["dog"]},
        "mmhal": {"question_type": "t", "question": "Q?", "gt_answer": "A", "image_path": "a.jpg"},
        "amber": {"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."},
        "objhal": {"image_id": 42, "question": "Describe.", "image": "a.jpg"},
        "hallusion": {
            "category": "VD",
            "subcategory": "s",
            "visual_input": "1",
            "set_id": "0",
            "figure_id": "0",
            "question_id": "0",
            "question": "Q?",
            "gt_answer": "1",
            "filename": "./a.png",
        },
    }[benchmark]
    lone = "\\udc80"
    good = json.dumps(record)
    path = tmp_path / "b.jsonl"
    path.write_text(good + "\n" + good[:-1] + f', "note": "{lone}"}}\n', encoding="ascii")
    policy = ErrorPolicy(on_error="skip")
    items = load(benchmark, path, policy)
    assert len(items) == 1
    assert policy.counts.get("bad-encoding") == 1 and policy.skipped[0]["line"] == 2


@pytest.mark.parametrize("text", ["[" + "1" * 5000 + "]", "[" * 100_000], ids=["int", "deep"])
def test_benchmark_arrays_json_loads_cannot_take(tmp_path: Path, text: str) -> None:
    path = tmp_path / "q.json"
    path.write_text(text)
    with pytest.raises(BpoError):
        pope.load_items({"random": path})
