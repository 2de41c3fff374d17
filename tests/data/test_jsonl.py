"""Streaming JSONL: resume after a torn write, skip ids already written, compact id index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo.data.jsonl import IdIndex, JsonlWriter, iter_jsonl, read_ids, repair_torn_tail
from bpo.errors import ErrorPolicy, RecordError


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_torn_tail_is_repaired_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path, resume=False) as writer:
        for i in range(3):
            writer.write({"id": f"r{i}", "text": "é" * i})
    torn = b'{"id": "r3", "text": "half wri'
    with open(path, "ab") as handle:
        handle.write(torn)  # a process killed mid-line
    with JsonlWriter(path) as writer:
        assert writer.repaired_bytes == len(torn)
        assert writer.resumed == 3
        assert writer.write({"id": "r3", "text": "whole"})
    assert [line["id"] for line in lines_of(path)] == ["r0", "r1", "r2", "r3"]
    assert lines_of(path)[3]["text"] == "whole"


def test_torn_single_line_empties_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "only", "te')
    assert repair_torn_tail(path) == len(b'{"id": "only", "te')
    assert path.read_bytes() == b""
    assert repair_torn_tail(path) == 0


def test_resume_skips_ids_already_written(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path) as writer:
        assert [writer.write({"id": i}) for i in ("a", "b")] == [True, True]
    with JsonlWriter(path) as writer:
        results = [writer.write({"id": i}) for i in ("a", "c", "b", "c")]
        assert results == [False, True, False, False]
        assert "c" in writer and writer.written == 1
    assert [line["id"] for line in lines_of(path)] == ["a", "b", "c"]


def test_no_resume_truncates(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "old"}\n')
    with JsonlWriter(path, resume=False) as writer:
        writer.write({"id": "new"})
    assert [line["id"] for line in lines_of(path)] == ["new"]


def test_id_index_beyond_one_merge_block() -> None:
    count = 3 * IdIndex._MERGE_EVERY + 123  # several merges plus a pending tail
    ids = [f"sample-{i}" for i in range(count)]
    index = IdIndex(ids[: count // 2])
    for record_id in ids[count // 2 :]:
        index.add(record_id)
    assert all(record_id in index for record_id in ids)
    assert not any(f"other-{i}" in index for i in range(2000))
    assert 12345 not in index  # not a string
    for record_id in ids[::3]:  # already there, some merged, some pending: no double count
        index.add(record_id)
    assert len(index) == count
    keys = index._sorted
    assert bool((keys[1:] > keys[:-1]).all())  # sorted, no duplicates
    assert all(record_id in index for record_id in ids[::97])  # after the final merge too


def test_read_ids_needs_an_id_per_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n{"text": "no id"}\n')
    with pytest.raises(RecordError, match=":2"):
        read_ids(path)
    assert len(read_ids(tmp_path / "absent.jsonl")) == 0


def test_iter_jsonl_skip_policy_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": \n\xff\xfe\n  \n{"a": 4}\n')
    with pytest.raises(RecordError) as caught:
        list(iter_jsonl(path))
    assert caught.value.line == 3 and caught.value.kind == "bad-json"
    policy = ErrorPolicy(on_error="skip")
    assert list(iter_jsonl(path, policy=policy)) == [(1, {"a": 1}), (6, {"a": 4})]
    assert policy.counts == {"bad-json": 1, "bad-encoding": 1}
    assert [entry["line"] for entry in policy.skipped] == [3, 4]
