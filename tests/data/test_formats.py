"""Readers: LLaVA / ShareGPT4V / BPO release / JSONL, streaming, errors by kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bpo.data.formats import FORMATS, read_bpo_release, read_records, read_samples
from bpo.data.jsonl import JsonlWriter
from bpo.data.records import Negative, Pair, Sample
from bpo.errors import ConfigError, ErrorPolicy, RecordError


def llava(record_id: str, *turns: str, image: str | None = "coco/1.jpg") -> dict[str, Any]:
    """A LLaVA record; turns alternate human, gpt, human, ..."""
    record: dict[str, Any] = {"id": record_id}
    if image is not None:
        record["image"] = image
    record["conversations"] = [
        {"from": "human" if i % 2 == 0 else "gpt", "value": text} for i, text in enumerate(turns)
    ]
    return record


def write_array(path: Path, records: list[Any]) -> Path:
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def write_lines(path: Path, lines: list[Any]) -> Path:
    """JSONL; a `bytes` or `str` item is written as the raw line."""
    with open(path, "wb") as handle:
        for line in lines:
            if isinstance(line, bytes):
                handle.write(line + b"\n")
            elif isinstance(line, str):
                handle.write(line.encode() + b"\n")
            else:
                handle.write(json.dumps(line).encode() + b"\n")
    return path


def sample_dict(record_id: str) -> dict[str, Any]:
    return Sample(record_id, "a.jpg", [{"role": "user", "content": "Q?"}], "A.").to_dict()


# --- LLaVA / ShareGPT4V ------------------------------------------------------------


def test_llava_single_turn_and_text_only(tmp_path: Path) -> None:
    path = write_array(
        tmp_path / "llava.json",
        [
            llava("1", "<image>\nWhat is this?", "A cat."),
            llava("2", "Describe it.\n<image>", "A dog."),
            llava("3", "Say hi.", "Hi!", image=None),  # ShareGPT text-only, as in mix665k
        ],
    )
    samples = list(read_samples(path))
    assert [s.id for s in samples] == ["1", "2", "3"]
    assert [s.image for s in samples] == ["coco/1.jpg", "coco/1.jpg", None]
    assert [s.question for s in samples] == ["What is this?", "Describe it.", "Say hi."]
    assert [s.response for s in samples] == ["A cat.", "A dog.", "Hi!"]


def test_placeholder_between_lines_keeps_one_newline(tmp_path: Path) -> None:
    path = write_array(tmp_path / "l.json", [llava("1", "Look.\n<image>\nWhat now?", "Run.")])
    assert next(read_samples(path, format="llava")).question == "Look.\nWhat now?"


def test_multi_turn_gives_one_sample_per_answer(tmp_path: Path) -> None:
    turns = ["<image>\nWhat animal?", "A cat.", "What color?", "Orange.", "Is it awake?", "No."]
    path = write_array(tmp_path / "l.json", [llava("42", *turns), llava("43", "<image>\nQ", "A")])
    samples = list(read_samples(path))
    assert [s.id for s in samples] == ["42#1", "42#2", "42#3", "43"]
    third = samples[2]
    assert third.prompt == [
        {"role": "user", "content": "What animal?"},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "What color?"},
        {"role": "assistant", "content": "Orange."},
        {"role": "user", "content": "Is it awake?"},
    ]
    assert third.response == "No."
    assert all(len(s.prompt) == 2 * k - 1 for k, s in enumerate(samples[:3], start=1))


def test_system_turn_and_leading_gpt_turn(tmp_path: Path) -> None:
    record = {
        "id": "s",
        "conversations": [
            {"from": "gpt", "value": "dropped, as LLaVA drops it"},
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
        ],
    }
    (sample,) = read_samples(write_array(tmp_path / "s.json", [record]), format="sharegpt4v")
    assert sample.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


def test_llava_image_without_placeholder(tmp_path: Path) -> None:
    path = write_array(
        tmp_path / "l.json", [llava("ok", "<image>\nQ", "A"), llava("nope", "Q", "A")]
    )
    with pytest.raises(RecordError) as caught:
        list(read_samples(path))
    message = str(caught.value)
    assert caught.value.kind == "missing-placeholder"
    assert "'nope'" in message and str(path) in message and "item [1]" in message
    assert "placeholder" in message


# --- the BPO release ---------------------------------------------------------------


def test_bpo_release_round_trip(tmp_path: Path) -> None:
    gold = [
        Sample("r1", "coco/9.jpg", [{"role": "user", "content": "What is here?"}], "Two dogs."),
        Sample("r2", "sam/3.jpg", [{"role": "user", "content": "Describe."}], "A red car."),
    ]
    negatives = {
        "r1": [("image-weakening", "mllm-hal", "Two dogs and a frisbee.")],
        "r2": [
            ("llm-injection", "llm-hal", "A blue car."),
            ("image-weakening", "mllm-hal", "A car and a man."),
        ],
    }
    release = []
    for sample in gold:
        completions = [{"score": 1, "response": sample.response, "type": "gt"}]
        completions += [{"score": 0, "response": t, "type": k} for _, k, t in negatives[sample.id]]
        release.append(
            {
                "prompt": f"{sample.question}\n<image>",
                "image": sample.image,
                "completions": completions,
            }
        )
    for path in (
        write_array(tmp_path / "bpo.json", release),
        write_lines(tmp_path / "bpo.jsonl", release),
    ):
        read = list(read_bpo_release(path))
        assert [s for s, _ in read] == [
            Sample(s.id, s.image, s.prompt, s.response) for s in list(read_samples(path))
        ]
        for (sample, negs), expected in zip(read, gold, strict=True):
            assert (sample.image, sample.prompt, sample.response) == (
                expected.image,
                expected.prompt,
                expected.response,
            )
            assert sample.id.startswith("bpo-")
            assert [(n.strategy, n.params["type"], n.text) for n in negs] == negatives[expected.id]
            assert all(n.sample_id == sample.id for n in negs)
            assert len({n.id for n in negs}) == len(negs)
    # Ids derive from the content alone: the same in both containers, in any order.
    ids_array = [s.id for s in read_samples(tmp_path / "bpo.json")]
    reversed_path = write_array(tmp_path / "reversed.json", release[::-1])
    assert [s.id for s in read_samples(reversed_path)] == ids_array[::-1]
    assert [s.id for s in read_samples(tmp_path / "bpo.jsonl")] == ids_array


def test_bpo_release_keeps_an_explicit_id_and_needs_a_gold(tmp_path: Path) -> None:
    records = [
        {
            "id": "mine",
            "prompt": "Q",
            "image": "x.jpg",
            "completions": [{"score": 1, "response": "A"}],
        },
        {"prompt": "Q", "image": "y.jpg", "completions": [{"score": 0, "response": "B"}]},
    ]
    policy = ErrorPolicy(on_error="skip")
    samples = list(read_samples(write_array(tmp_path / "b.json", records), policy=policy))
    assert [s.id for s in samples] == ["mine"]
    assert "score 1" in policy.skipped[0]["reason"]


# --- plain JSONL, records, detection -----------------------------------------------


def test_jsonl_samples_written_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    originals = [
        Sample("a", "x.jpg", [{"role": "user", "content": "Q1"}], "A1", {"objects": ["cat"]}),
        Sample("b", None, [{"role": "user", "content": "Q2"}], "A2"),
    ]
    with JsonlWriter(path, resume=False) as writer:
        for sample in originals:
            writer.write(sample)
    assert list(read_samples(path)) == originals
    assert list(read_samples(path, format="jsonl")) == originals


def test_read_records_for_negatives_and_pairs(tmp_path: Path) -> None:
    negative = Negative("n1", "s1", "image-weakening", "text", {"step": 500})
    pair = Pair("p1", "x.jpg", [{"role": "user", "content": "Q"}], "good", "bad", "llm-injection")
    write_lines(tmp_path / "n.jsonl", [negative.to_dict(), {"id": "n2"}, negative.to_dict()])
    write_lines(tmp_path / "p.jsonl", [pair.to_dict()])
    policy = ErrorPolicy(on_error="skip")
    assert list(read_records(tmp_path / "n.jsonl", Negative, policy=policy)) == [negative]
    assert policy.counts == {"bad-record": 1, "duplicate-id": 1}
    assert list(read_records(tmp_path / "p.jsonl", Pair)) == [pair]


def test_unknown_format_name_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", [sample_dict("a")])
    with pytest.raises(ConfigError) as caught:
        read_samples(path, format="alpaca")
    for name in ("auto", *FORMATS):
        assert name in str(caught.value)


def test_undetectable_first_record(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "odd.jsonl", [{"id": "1", "question": "Q", "answer": "A"}])
    with pytest.raises(RecordError) as caught:
        list(read_samples(path, policy=ErrorPolicy(on_error="skip")))
    assert caught.value.kind == "unknown-format"
    assert f"{path}:1" in str(caught.value) and "question" in str(caught.value)


def test_missing_input_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_samples(tmp_path / "absent.json")


def test_empty_file_has_no_samples(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    (tmp_path / "empty.json").write_text("[]")
    assert list(read_samples(tmp_path / "empty.jsonl")) == []
    assert list(read_samples(tmp_path / "empty.json")) == []


# --- bad input: messages and the skip policy ---------------------------------------


def test_malformed_json_line_gives_the_line_number(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", [sample_dict("a"), sample_dict("b"), '{"id": "c",'])
    with pytest.raises(RecordError) as caught:
        list(read_samples(path))
    assert caught.value.kind == "bad-json"
    assert caught.value.line == 3 and f"{path}:3" in str(caught.value)


def test_non_utf8_bytes_in_jsonl(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "s.jsonl", [sample_dict("a"), b'{"id": "b", "prompt": "caf\xe9"}']
    )
    with pytest.raises(RecordError) as caught:
        list(read_samples(path))
    assert caught.value.kind == "bad-encoding" and f"{path}:2" in str(caught.value)


def test_non_utf8_bytes_in_json_array(tmp_path: Path) -> None:
    good = json.dumps(llava("1", "<image>\nQ", "A"), indent=1).encode()
    bad = b'{"id": "2", "conversations": [{"from": "human", "value": "caf\xe9"}]}'
    path = tmp_path / "bad.json"
    path.write_bytes(b"[\n" + good + b",\n" + bad + b"\n]\n")
    line_of_bad = (b"[\n" + good + b",\n").count(b"\n") + 1
    reader = read_samples(path, policy=ErrorPolicy(on_error="skip"))
    assert next(reader).id == "1"  # streamed: the good record comes before the fault
    with pytest.raises(RecordError) as caught:
        next(reader)
    assert caught.value.kind == "bad-encoding"
    assert caught.value.line == line_of_bad
    assert str(path) in str(caught.value) and "item [1]" in str(caught.value)


def test_malformed_json_array_stops_even_when_skipping(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    records = [json.dumps(llava(str(i), "<image>\nQ", "A")) for i in range(3)]
    path.write_text("[\n" + ",\n".join(records) + ",\n{oops}\n]\n")
    policy = ErrorPolicy(on_error="skip")
    read = []
    with pytest.raises(RecordError) as caught:
        for sample in read_samples(path, policy=policy):
            read.append(sample.id)
    assert read == ["0", "1", "2"]
    assert caught.value.kind == "bad-json"
    assert caught.value.line == 5 and "item [3]" in str(caught.value)


def test_duplicate_ids(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", [sample_dict("a"), sample_dict("b"), sample_dict("a")])
    with pytest.raises(RecordError) as caught:
        list(read_samples(path))
    assert caught.value.kind == "duplicate-id"
    assert caught.value.record_id == "a" and f"{path}:3" in str(caught.value)


def test_duplicate_ids_across_llava_turns(tmp_path: Path) -> None:
    path = write_array(
        tmp_path / "l.json",
        [llava("x", "<image>\nQ", "A", "Q2", "A2"), llava("x#2", "<image>\nQ", "A")],
    )
    policy = ErrorPolicy(on_error="skip")
    assert [s.id for s in read_samples(path, policy=policy)] == ["x#1", "x#2"]
    assert policy.skipped[0]["record_id"] == "x#2" and policy.counts == {"duplicate-id": 1}


def test_skip_goes_on_and_counts_by_kind(tmp_path: Path) -> None:
    lines: list[Any] = [
        sample_dict("g1"),
        '{"id": "broken"',  # bad-json
        sample_dict("g2"),
        b'{"id": "latin", "x": "\xe9"}',  # bad-encoding
        sample_dict("g3"),
        sample_dict("g1"),  # duplicate-id
        sample_dict("g4"),
        {"id": "no-response", "prompt": "Q?"},  # bad-record
        sample_dict("g5"),
    ]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    policy = ErrorPolicy(on_error="skip")
    samples = list(read_samples(path, policy=policy))
    assert [s.id for s in samples] == ["g1", "g2", "g3", "g4", "g5"]
    assert policy.total == 4
    assert policy.counts == {"bad-json": 1, "bad-encoding": 1, "duplicate-id": 1, "bad-record": 1}
    assert [entry["line"] for entry in policy.skipped] == [2, 4, 6, 8]
    assert policy.skipped[3]["record_id"] == "no-response"


def test_skip_in_a_json_array_counts_bad_llava_records(tmp_path: Path) -> None:
    records = [
        llava("1", "<image>\nQ", "A"),
        llava("2", "Q", "A"),  # image without placeholder
        llava("3", "<image>\nQ", "A", image=None),  # placeholder without image
        llava("4", "<image>\nQ", "A"),
        {"id": "5", "conversations": [{"from": "robot", "value": "?"}]},
        llava("6", "<image>\nQ", ""),  # empty answer
        llava("7", "Q", "A", image=None),
    ]
    policy = ErrorPolicy(on_error="skip")
    samples = list(read_samples(write_array(tmp_path / "l.json", records), policy=policy))
    assert [s.id for s in samples] == ["1", "4", "7"]
    assert policy.total == 4
    assert [entry["record_id"] for entry in policy.skipped] == ["2", "3", "5", "6"]
    assert all(entry["reason"].startswith("item [") for entry in policy.skipped)
