"""Streaming JSONL: read line by line, append with stable ids, resume after a crash.

Outputs are append-only. A process killed mid-write can leave a torn last line;
`JsonlWriter` cuts it off when it reopens the file, so a resumed run loses at
most the record in flight and never writes an id twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from bpo.errors import ErrorPolicy, RecordError


def iter_jsonl(
    path: str | os.PathLike[str], *, policy: ErrorPolicy | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of a JSONL file.

    Args:
        path: the JSONL file.
        policy: with ``on_error="skip"``, a bad line is counted in the policy and
            reading goes on; without a policy (or with ``"raise"``) it raises.

    Raises:
        RecordError: on bytes that are not UTF-8 (kind ``"bad-encoding"``) or a
            line that is not JSON (kind ``"bad-json"``), naming the file and the
            1-based line.
    """
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = _parse_line(raw, path, line_number)
            except RecordError as error:
                if policy is None:
                    raise
                policy.handle(error)
                continue
            yield line_number, value


def _parse_line(raw: bytes, path: str | os.PathLike[str], line_number: int) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecordError(
            f"bytes that are not UTF-8 at column {error.start + 1}",
            path=path,
            line=line_number,
            kind="bad-encoding",
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(
            f"malformed JSON ({error.msg} at column {error.colno})",
            path=path,
            line=line_number,
            kind="bad-json",
        ) from None
    except (ValueError, RecursionError) as error:
        # json.loads refuses integers past Python's digit limit (ValueError) and
        # nesting past the interpreter's depth (RecursionError).
        raise RecordError(
            f"JSON that Python cannot read ({type(error).__name__}: {str(error)[:100]})",
            path=path,
            line=line_number,
            kind="bad-json",
        ) from None


class IdIndex:
    """A compact set of record ids: 8 bytes per id instead of a Python string.

    Resuming and duplicate checks must remember every id seen, and a plain
    ``set[str]`` costs ~100 bytes per id. Ids are kept as 64-bit BLAKE2b digests
    in a sorted NumPy array (new ones buffered, merged in blocks). The chance of
    two ids colliding among 10 million is about 3e-6.
    """

    _MERGE_EVERY = 8192

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._pending: set[int] = set()
        for record_id in ids:
            self.add(record_id)

    @staticmethod
    def _digest(record_id: str) -> int:
        return int.from_bytes(
            hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest(), "little"
        )

    def __contains__(self, record_id: object) -> bool:
        if not isinstance(record_id, str):
            return False
        key = self._digest(record_id)
        if key in self._pending:
            return True
        position = int(np.searchsorted(self._sorted, np.uint64(key)))
        return position < len(self._sorted) and int(self._sorted[position]) == key

    def add(self, record_id: str) -> None:
        self._pending.add(self._digest(record_id))
        if len(self._pending) >= self._MERGE_EVERY:
            self._merge()

    def _merge(self) -> None:
        # Insert the new keys into the sorted array in one copy. (np.union1d makes
        # about four temporary copies of the whole index, which at 100k ids showed
        # as several MiB of peak RSS in bench/data_stream.py.)
        fresh = np.fromiter(self._pending, dtype=np.uint64, count=len(self._pending))
        fresh.sort()
        positions = np.searchsorted(self._sorted, fresh)
        if len(self._sorted):
            present = self._sorted[np.minimum(positions, len(self._sorted) - 1)] == fresh
            fresh, positions = fresh[~present], positions[~present]
        self._sorted = np.insert(self._sorted, positions, fresh)
        self._pending.clear()

    def __len__(self) -> int:
        if self._pending:
            self._merge()
        return len(self._sorted)


def repair_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut an unterminated last line (a write killed mid-record) off `path`.

    Returns:
        The number of bytes removed (0 when the file ends cleanly).
    """
    target = Path(path)
    if not target.exists():
        return 0
    size = target.stat().st_size
    if size == 0:
        return 0
    with open(target, "rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # Walk back in blocks to the last newline; keep everything up to it.
        position, block = size, 65536
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            chunk = handle.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        else:
            keep = 0
        handle.truncate(keep)
        return size - keep


def read_ids(path: str | os.PathLike[str]) -> IdIndex:
    """The ids already written to a JSONL output (empty if it does not exist)."""
    index = IdIndex()
    if not Path(path).exists():
        return index
    for line_number, value in iter_jsonl(path):
        if not isinstance(value, dict) or "id" not in value:
            raise RecordError("output line has no 'id'", path=path, line=line_number)
        index.add(str(value["id"]))
    return index


class JsonlWriter:
    """Append records to a JSONL file, one complete line per write.

    With ``resume=True`` (the default) an existing file is kept: its torn tail is
    repaired and its ids are loaded, so `write` skips ids already present and a
    re-run continues where the last one stopped. With ``resume=False`` the file is
    truncated. Each line is flushed as it is written.

    The file is opened (created, or truncated) at the first write, not before, and
    `before_first_write` is called just then: a run that fails before producing a
    record leaves no empty file, and a stage saves its settings record there
    (`bpo.provenance.Provenance.commit`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        resume: bool = True,
        before_first_write: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._resume = resume
        self._before_first_write = before_first_write
        if resume:
            self.repaired_bytes = repair_torn_tail(self.path)
            self.ids = read_ids(self.path)
        else:
            self.repaired_bytes = 0
            self.ids = IdIndex()
        self.resumed = len(self.ids)
        self.written = 0
        self._handle: IO[str] | None = None

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.ids

    def open(self) -> None:
        """Create (or truncate) the file now, as the first write would."""
        if self._handle is None:
            if self._before_first_write is not None:
                self._before_first_write()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a" if self._resume else "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: Any) -> bool:
        """Append `record` (a dict or an object with ``to_dict``) unless its id is present.

        Returns:
            True if the record was written, False if its id was already there.
        """
        data = record.to_dict() if hasattr(record, "to_dict") else record
        record_id = str(data["id"])
        if record_id in self.ids:
            return False
        self.open()
        assert self._handle is not None
        self._handle.write(json.dumps(data, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.ids.add(record_id)
        self.written += 1
        return True

    def close(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
