"""Record readers under hostile input: a result or a bpo error that names the file and line.

Covers `read_samples` (every format), `read_bpo_release`, `read_records`, the records'
``from_dict`` and `iter_jsonl`, plus the defects this testing found (each with a test).
"""

from __future__ import annotations

import json
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpo.data.formats import MAX_NESTING, read_bpo_release, read_records, read_samples
from bpo.data.jsonl import JsonlWriter, iter_jsonl
from bpo.data.records import Negative, Pair, Sample
from bpo.errors import BpoError, ErrorPolicy, RecordError
from tests.property import examples
from tests.property.strategies import RECORDS, files, json_values, write

RECORD_TYPES: dict[str, type[Sample] | type[Negative] | type[Pair]] = {
    "jsonl": Sample,
    "negative": Negative,
    "pair": Pair,
}


def reader(kind: str) -> Callable[[Path, ErrorPolicy], Iterator[Any]]:
    """The reader of one record kind: a sample format, the BPO release, or read_records."""
    if kind == "bpo-release":
        return lambda path, policy: read_bpo_release(path, policy=policy)
    if kind in ("negative", "pair"):
        return lambda path, policy: read_records(path, RECORD_TYPES[kind], policy=policy)
    return lambda path, policy: read_samples(path, format=kind, policy=policy)


def check_records(items: list[Any], folder: Path) -> None:
    """What a reader yields is valid: it round-trips, can be written, and ids are unique."""
    records = [
        r for item in items for r in ([item[0], *item[1]] if isinstance(item, tuple) else [item])
    ]
    samples = [r for r in records if isinstance(r, Sample)]
    assert len({s.id for s in samples}) == len(samples)
    with JsonlWriter(folder / "out.jsonl", resume=False) as writer:
        for record in records:
            assert type(record).from_dict(record.to_dict()) == record
            writer.write(record)


def check_located(error: RecordError, path: Path) -> None:
    """A record error names the file, and the line (JSONL) or the array item."""
    assert error.path == str(path)
    assert error.line is not None or "item [" in error.reason


KINDS = [*RECORDS, "bpo-release"]


@pytest.mark.parametrize("kind", KINDS)
@examples(40)
@given(data=st.data())
def test_readers_give_records_or_located_record_errors(kind: str, data: st.DataObject) -> None:
    content = data.draw(files(RECORDS["bpo" if kind == "bpo-release" else kind]))
    read = reader(kind)
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "input.json", content)
        # raise: the records up to the first error, then a located RecordError
        items: list[Any] = []
        try:
            items.extend(read(path, ErrorPolicy(on_error="raise")))
        except RecordError as error:
            check_located(error, path)
        check_records(items, Path(folder))
        # skip: every bad record counted with its place; only a broken JSON array stops
        policy = ErrorPolicy(on_error="skip")
        skipped_items: list[Any] = []
        try:
            skipped_items.extend(read(path, policy))
        except RecordError as error:
            assert content.lstrip().startswith(b"["), "a JSONL file never stops under skip"
            check_located(error, path)
        check_records(skipped_items, Path(folder))
        for entry in policy.skipped:
            assert entry["path"] == str(path)
            assert entry["line"] is not None or "item [" in entry["reason"]
        assert len(skipped_items) >= len(items)


@pytest.mark.parametrize("format", ["auto", "llava", "bpo", "jsonl"])
@examples(40)
@given(content=st.binary(max_size=64))
def test_readers_take_any_bytes(format: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "input.jsonl", content)
        try:
            list(read_samples(path, format=format))
        except RecordError as error:
            check_located(error, path)


@pytest.mark.parametrize("record_type", [Sample, Negative, Pair])
@examples(60)
@given(value=json_values | RECORDS["jsonl"] | RECORDS["negative"] | RECORDS["pair"])
def test_from_dict_gives_a_record_or_a_record_error(
    record_type: type[Sample] | type[Negative] | type[Pair], value: Any
) -> None:
    try:
        record = record_type.from_dict(value)
    except RecordError:
        return
    assert record_type.from_dict(record.to_dict()) == record
    json.dumps(record.to_dict(), ensure_ascii=False).encode("utf-8")  # writable as UTF-8


@examples(60)
@given(content=st.binary(max_size=200))
def test_iter_jsonl_takes_any_bytes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "x.jsonl", content)
        try:
            list(iter_jsonl(path))
        except RecordError as error:
            assert error.path == str(path) and error.line is not None
        policy = ErrorPolicy(on_error="skip")
        lines = [line for line, _ in iter_jsonl(path, policy=policy)]
        assert lines == sorted(set(lines))
        assert len(lines) + policy.total == sum(1 for raw in content.split(b"\n") if raw.strip())


# --- defects found, each with its test -------------------------------------------------


def test_a_lone_surrogate_in_an_id_is_a_record_error_not_a_crash(tmp_path: Path) -> None:
    # Was: UnicodeEncodeError from the id index (which hashes UTF-8 bytes).
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"id": "\\ud800", "prompt": "Q?", "response": "A."}\n'
        '{"id": "ok", "prompt": "Q?", "response": "A.\\udfff"}\n'
        '{"id": "fine", "prompt": "Q?", "response": "A \\ud83d\\ude00"}\n',
        encoding="ascii",
    )
    policy = ErrorPolicy(on_error="skip")
    assert [s.id for s in read_samples(path, policy=policy)] == ["fine"]
    assert policy.counts == {"bad-encoding": 2}
    assert [entry["line"] for entry in policy.skipped] == [1, 2]
    assert "field 'response'" in policy.skipped[1]["reason"]


def test_a_lone_surrogate_in_meta_or_params_is_refused() -> None:
    with pytest.raises(RecordError) as caught:
        Sample.from_dict({"id": "s", "prompt": "Q", "response": "A", "meta": {"x": "\udc80"}})
    assert caught.value.kind == "bad-encoding" and caught.value.record_id == "s"
    with pytest.raises(RecordError):
        Negative.from_dict(
            {"id": "n", "sample_id": "s", "strategy": "x", "text": "t", "params": {"\ud800": 1}}
        )


def test_a_deeply_nested_array_item_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    # Was: ijson.items keeps the dotted path of every open level: memory grew with
    # depth squared (100,000 levels took more than 20 GB before the process was killed).
    depth = 3000
    good = {"id": "g", "prompt": "Q?", "response": "A."}
    path = tmp_path / "deep.json"
    path.write_text(
        f"[{json.dumps(good)}, {'[' * depth}{']' * depth}, {json.dumps({**good, 'id': 'h'})}]"
    )
    policy = ErrorPolicy(on_error="skip")
    tracemalloc.start()
    try:
        ids = [s.id for s in read_samples(path, format="jsonl", policy=policy)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ids == ["g", "h"]
    assert policy.counts == {"too-deep": 1} and "item [1]" in policy.skipped[0]["reason"]
    assert peak < 4 * 2**20  # ijson.items: ~5 bytes x depth^2 / 2 = 22 MB here
    with pytest.raises(RecordError, match=f"nested deeper than {MAX_NESTING}"):
        list(read_samples(path, format="jsonl"))


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    meta: Any = "leaf"
    for _ in range(MAX_NESTING - 2):  # the record and its meta are two levels
        meta = [meta]
    record = {"id": "s", "prompt": "Q?", "response": "A.", "meta": {"deep": meta}}
    path = tmp_path / "s.json"
    path.write_text(json.dumps([record]))
    assert next(read_samples(path)).meta == {"deep": meta}


def llava(record_id: Any, question: str, answer: str = "A.") -> dict[str, Any]:
    return {
        "id": record_id,
        "image": "coco/1.jpg",
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def test_llava_repeated_ids_are_kept_with_a_suffix(tmp_path: Path) -> None:
    # LLaVA's files name each conversation after its COCO image: the same id comes back
    # for an image's other conversations. Was: the repeats were refused (the default
    # "raise" stopped at the first; "skip" dropped real samples).
    records = [llava(33471, "What is it?"), llava("9", "Q"), llava(33471, "Detail?")]
    records += [llava("33471", "Why?"), {**llava(33471, "Bad"), "conversations": []}]
    records += [llava(33471, "Last?")]
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(records))
    policy = ErrorPolicy(on_error="skip")
    samples = list(read_samples(path, policy=policy))
    assert [s.id for s in samples] == ["33471", "9", "33471~2", "33471~3", "33471~5"]
    assert [s.question for s in samples][2:] == ["Detail?", "Why?", "Last?"]
    assert policy.total == 1  # the invalid record still counts as the 4th occurrence
    again = [s.id for s in read_samples(path, policy=ErrorPolicy(on_error="skip"))]
    assert again == [s.id for s in samples]  # stable ids: the negatives join on them


def test_a_renamed_id_that_clashes_names_both_items(tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    path.write_text(json.dumps([llava("x", "Q"), llava("x", "Q2"), llava("x~2", "Q3")]))
    with pytest.raises(RecordError) as caught:
        list(read_samples(path))
    assert caught.value.kind == "duplicate-id" and caught.value.record_id == "x~2"
    assert "item [2]" in str(caught.value) and "item [1] has it first" in str(caught.value)


@pytest.mark.parametrize("record_type", [Negative, Pair])
def test_duplicate_records_name_both_lines(tmp_path: Path, record_type: type[Any]) -> None:
    good = {
        Negative: {"sample_id": "s", "strategy": "x", "text": "t"},
        Pair: {"prompt": "Q", "chosen": "A", "rejected": "B", "strategy": "x"},
    }[record_type]
    path = tmp_path / "r.jsonl"
    lines = [{"id": "r1", **good}, "", {"id": "r2", **good}, {"id": "r1", **good}]
    path.write_text("\n".join(json.dumps(line) if line else "" for line in lines) + "\n")
    with pytest.raises(RecordError) as caught:
        list(read_records(path, record_type))
    assert (caught.value.path, caught.value.line) == (str(path), 4)
    assert f"{path}:4" in str(caught.value) and "line 1 has it first" in str(caught.value)
    policy = ErrorPolicy(on_error="skip")  # skipping stays one pass: no earlier line named
    assert [r.id for r in read_records(path, record_type, policy=policy)] == ["r1", "r2"]
    assert policy.skipped[0]["line"] == 4


def test_read_records_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    good = {"id": "n1", "sample_id": "s", "strategy": "x", "text": "t"}
    path.write_text(f"{json.dumps(good)}\n{json.dumps({**good, 'id': 'n2', 'text': 5})}\n")
    with pytest.raises(RecordError) as caught:
        list(read_records(path, Negative))
    assert caught.value.record_id == "n2" and f"{path}:2" in str(caught.value)


@pytest.mark.parametrize("line", ["1" * 5000, "[" * 100_000], ids=["huge-int", "deep"])
def test_iter_jsonl_refuses_lines_json_loads_cannot_take(tmp_path: Path, line: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(f'{{"id": "a"}}\n{line}\n{{"id": "b"}}\n')
    policy = ErrorPolicy(on_error="skip")
    assert [value["id"] for _, value in iter_jsonl(path, policy=policy)] == ["a", "b"]
    assert policy.skipped[0]["line"] == 2
    with pytest.raises(BpoError):
        list(iter_jsonl(path))
