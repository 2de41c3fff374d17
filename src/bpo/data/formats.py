"""Readers for the sample formats bpo takes in, streaming, with clear errors.

Formats (``format=``):

- ``"llava"``: LLaVA instruct JSON, ``{"id", "image", "conversations": [{"from":
  "human"|"gpt"|"system", "value"}]}``. The ``<image>`` placeholder (with its
  adjacent newline) is removed from the human turn; the image belongs to the first
  user message (see `bpo.data.records`). Every gpt turn is a sample whose prompt is
  the conversation before it; its id is the record id when the conversation has
  one answer, else ``f"{id}#{k}"`` (k: 1-based answer index). A record without
  ``image`` is text-only (``image=None``; llava_v1_5_mix665k.json holds ~40k such
  ShareGPT conversations). A leading gpt turn is dropped, as LLaVA's own
  preprocessing does (``llava/train/train.py``, ``preprocess_v1``).
- ``"sharegpt4v"``: ShareGPT4V captions, the same shape as LLaVA.
- ``"bpo"``: the BPO release (Pi et al., ECCV 2024; huggingface.co/datasets/renjiepi/BPO),
  ``{"prompt", "image", "completions": [{"response", "score", "type"}]}``. The first
  completion with score 1 is the gold answer; score-0 completions are the published
  negatives (`read_bpo_release`); other completions are ignored. The sample id is
  the record's ``id`` if present, else ``"bpo-"`` + the first 16 hex digits of the
  SHA-1 of image, prompt and gold answer (stable across runs and file orders).
- ``"jsonl"``: our own `Sample` records.
- ``"auto"``: the format is told from the first record's keys.

Every format may come as a JSON array or as JSON Lines (told from the file's first
byte). Nothing is held in memory beyond one record: JSON arrays are parsed
incrementally with ``ijson``. Errors name the file and the line (JSONL) or the
0-based array item (``item [i]``); the ids read so far are kept in a compact
`IdIndex` to refuse duplicates.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bpo.data.jsonl import IdIndex, iter_jsonl
from bpo.data.records import Message, Negative, Pair, Sample, negative_id
from bpo.errors import ConfigError, ErrorPolicy, RecordError

FORMATS = ("llava", "sharegpt4v", "bpo", "jsonl")

RecordT = TypeVar("RecordT", Sample, Negative, Pair)
ItemT = TypeVar("ItemT")

# LLaVA writes "human"/"gpt"; some conversions write "user"/"assistant".
_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
_PLACEHOLDER = "<image>"
# One placeholder with one adjacent newline: "<image>\nQ" -> "Q", "Q\n<image>" -> "Q",
# "A\n<image>\nB" -> "A\nB" (the leftmost alternative wins at the newline before it).
_PLACEHOLDER_PATTERN = re.compile(r"<image>\n|\n<image>|<image>")
# BPO release completion types (data_generation/ in the BPO repository) -> our strategies.
_BPO_STRATEGIES = {"mllm-hal": "image-weakening", "llm-hal": "llm-injection"}
_PIECE = 1 << 16  # bytes per read when locating a parse error


@dataclass(frozen=True)
class _Where:
    """Where a record sits in its file: a JSONL line, or a JSON array item."""

    line: int | None = None
    item: int | None = None


def read_samples(
    path: str | os.PathLike[str], *, format: str = "auto", policy: ErrorPolicy | None = None
) -> Iterator[Sample]:
    """Stream the samples of a file in any supported format (see the module docstring).

    Args:
        path: a JSON array or JSONL file.
        format: ``"auto"`` or one of `FORMATS`.
        policy: what to do with a bad record; the default raises at the first.
            With ``on_error="skip"`` a bad record is counted in the policy and
            reading goes on. A JSON array that cannot be parsed further (broken
            syntax, bytes that are not UTF-8) stops reading with a `RecordError`
            even then, since nothing after the fault can be located.

    Returns:
        An iterator of samples, in file order.

    Raises:
        ConfigError: for an unknown format name or a missing file.
        RecordError: for a bad record (kinds ``"bad-json"``, ``"bad-encoding"``,
            ``"duplicate-id"``, ``"unknown-format"``, ``"missing-placeholder"``,
            ``"bad-record"``), unless skipped.
    """
    _check_format(format)
    _check_file(path)
    return _read_samples(Path(path), format, _policy(policy))


def read_bpo_release(
    path: str | os.PathLike[str], *, policy: ErrorPolicy | None = None
) -> Iterator[tuple[Sample, list[Negative]]]:
    """Stream the BPO release: each gold sample with its published negatives.

    A negative's strategy comes from its completion ``type``: ``"mllm-hal"`` ->
    ``"image-weakening"``, ``"llm-hal"`` -> ``"llm-injection"``, any other type is
    kept as is. Its id is ``negative_id(sample_id, strategy, k)`` (k: the completion's
    index) and its params record ``{"source": "bpo-release", "type", "score"}``.

    Args and errors as `read_samples`.
    """
    _check_file(path)
    policy = _policy(policy)
    return _read(
        Path(path), _iter_values(Path(path), policy), _bpo_record, lambda item: item[0].id, policy
    )


def read_records(
    path: str | os.PathLike[str], record_type: type[RecordT], *, policy: ErrorPolicy | None = None
) -> Iterator[RecordT]:
    """Stream `Sample`, `Negative` or `Pair` records from a JSONL file (or JSON array).

    Args and errors as `read_samples`; duplicate ids are refused.
    """
    _check_file(path)
    policy = _policy(policy)
    return _read(
        Path(path),
        _iter_values(Path(path), policy),
        lambda value: [record_type.from_dict(value)],
        lambda record: record.id,
        policy,
    )


def detect_format(value: Any) -> str | None:
    """The format of a record, from its keys (None when it is not recognised)."""
    if not isinstance(value, dict):
        return None
    if "conversations" in value:
        return "llava"
    if "completions" in value:
        return "bpo"
    if "prompt" in value and "response" in value:
        return "jsonl"
    return None


def _policy(policy: ErrorPolicy | None) -> ErrorPolicy:
    return policy if policy is not None else ErrorPolicy()


def _check_format(format: str) -> None:
    if format != "auto" and format not in FORMATS:
        valid = ", ".join(("auto", *FORMATS))
        raise ConfigError(f"unknown sample format {format!r}; valid formats: {valid}")


def _check_file(path: str | os.PathLike[str]) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"input file not found: {os.fspath(path)}")


def _read_samples(path: Path, format: str, policy: ErrorPolicy) -> Iterator[Sample]:
    values = _iter_values(path, policy)
    if format == "auto":
        first = next(values, None)
        if first is None:
            return
        where, value = first
        detected = detect_format(value)
        if detected is None:
            keys = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise _located(
                RecordError(
                    f"cannot tell the format from the first record (keys: {keys}); "
                    f"pass a format, one of: {', '.join(FORMATS)}",
                    kind="unknown-format",
                ),
                path,
                where,
            )
        format = detected
        values = itertools.chain([first], values)
    if format == "bpo":
        for sample, _ in _read(path, values, _bpo_record, lambda item: item[0].id, policy):
            yield sample
    elif format == "jsonl":
        yield from _read(path, values, lambda v: [Sample.from_dict(v)], lambda s: s.id, policy)
    else:  # llava, sharegpt4v
        yield from _read(path, values, _llava_samples, lambda s: s.id, policy)


def _read(
    path: Path,
    values: Iterator[tuple[_Where, Any]],
    convert: Callable[[Any], list[ItemT]],
    id_of: Callable[[ItemT], str],
    policy: ErrorPolicy,
) -> Iterator[ItemT]:
    """Convert each value, refuse duplicate ids, and route errors through `policy`."""
    seen = IdIndex()
    for where, value in values:
        try:
            items = convert(value)
            ids = [id_of(item) for item in items]
            for position, record_id in enumerate(ids):
                if record_id in seen or record_id in ids[:position]:
                    raise RecordError(
                        "duplicate id (an earlier record in this file has it)",
                        record_id=record_id,
                        kind="duplicate-id",
                    )
        except RecordError as error:
            policy.handle(_located(error, path, where, _raw_id(value)))
            continue
        for record_id in ids:
            seen.add(record_id)
        yield from items


def _located(
    error: RecordError, path: Path, where: _Where, record_id: str | None = None
) -> RecordError:
    """`error` with the file, the line or array item, and the id filled in."""
    reason = error.reason if where.item is None else f"item [{where.item}]: {error.reason}"
    return RecordError(
        reason,
        record_id=error.record_id if error.record_id is not None else record_id,
        path=path,
        line=where.line,
        kind=error.kind,
    )


def _raw_id(value: Any) -> str | None:
    raw = value.get("id") if isinstance(value, dict) else None
    return str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None


# --- containers: JSON Lines or one JSON array ---------------------------------------


def _iter_values(path: Path, policy: ErrorPolicy) -> Iterator[tuple[_Where, Any]]:
    """Each top-level value with its place: JSONL lines, or the items of a JSON array."""
    with open(path, "rb") as handle:
        head = handle.read(_PIECE).lstrip()
        while not head:
            chunk = handle.read(_PIECE)
            if not chunk:
                return
            head = chunk.lstrip()
    if head.startswith(b"["):
        yield from _iter_json_array(path)
    else:
        for line, value in iter_jsonl(path, policy=policy):
            yield _Where(line=line), value


def _iter_json_array(path: Path) -> Iterator[tuple[_Where, Any]]:
    import ijson

    count = 0
    with open(path, "rb") as handle:
        try:
            for value in ijson.items(handle, "item", use_float=True):
                yield _Where(item=count), value
                count += 1
        except (ijson.JSONError, UnicodeDecodeError) as error:
            raise _array_error(path, count, error) from None


def _array_error(path: Path, item: int, error: Exception) -> RecordError:
    """The error for a JSON array that cannot be parsed past item `item`."""
    message = error.args[0] if error.args else str(error)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "parse error"
    bad_bytes = isinstance(error, UnicodeDecodeError) or "UTF8" in first_line
    reason = "bytes that are not UTF-8" if bad_bytes else f"malformed JSON ({first_line})"
    return RecordError(
        f"{reason} in array item [{item}]; the rest of the file cannot be read",
        path=path,
        line=_line_of_parse_error(path),
        kind="bad-encoding" if bad_bytes else "bad-json",
    )


def _line_of_parse_error(path: Path) -> int | None:
    """The 1-based line where a JSON parser first fails on `path` (error path only).

    ijson reports no positions, so the file is parsed again, fed one line (or
    64 KiB) at a time, until the parser fails.
    """
    import ijson

    events = ijson.sendable_list()
    parser = ijson.basic_parse_coro(events)
    line, at_line_start = 0, True
    with open(path, "rb") as handle:
        try:
            while piece := handle.readline(_PIECE):
                line += at_line_start
                at_line_start = piece.endswith(b"\n")
                parser.send(piece)
                del events[:]
            parser.close()
        except (ijson.JSONError, UnicodeDecodeError):
            return max(line, 1)
    return None


# --- record formats ------------------------------------------------------------------


def _record_id(value: dict[str, Any]) -> str:
    record_id = _raw_id(value)
    if record_id is None or not record_id.strip():
        raise RecordError("field 'id' must be a non-empty string or an integer")
    return record_id


def _image_field(value: dict[str, Any]) -> str | None:
    image = value.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise RecordError("field 'image' must be a non-empty string (one image per record)")
    return image


def _strip_placeholder(text: str) -> str:
    return _PLACEHOLDER_PATTERN.sub("", text).strip()


def _llava_samples(value: Any) -> list[Sample]:
    """The samples of one LLaVA / ShareGPT4V record: one per gpt turn."""
    if not isinstance(value, dict):
        raise RecordError("a LLaVA record must be a JSON object")
    record_id = _record_id(value)
    image = _image_field(value)
    turns = value.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RecordError("field 'conversations' must be a non-empty list", record_id=record_id)
    messages: list[Message] = []
    placeholders = 0
    for index, turn in enumerate(turns):
        where = f"conversations[{index}]"
        if not isinstance(turn, dict):
            raise RecordError(f"{where} is not an object", record_id=record_id)
        speaker, text = turn.get("from"), turn.get("value")
        role = _ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise RecordError(
                f"{where} is from {speaker!r}; expected 'human', 'gpt' or 'system'",
                record_id=record_id,
            )
        if not isinstance(text, str):
            raise RecordError(f"{where} value must be a string", record_id=record_id)
        if _PLACEHOLDER in text:
            if role != "user":
                raise RecordError(
                    f"{where} ({speaker}) holds an <image> placeholder; only human turns may",
                    record_id=record_id,
                )
            placeholders += text.count(_PLACEHOLDER)
            text = _strip_placeholder(text)
        messages.append({"role": role, "content": text})
    if image is not None and placeholders == 0:
        raise RecordError(
            f"the record has image {image!r} but no <image> placeholder in its conversation",
            record_id=record_id,
            kind="missing-placeholder",
        )
    if image is None and placeholders:
        raise RecordError("<image> placeholder in a record with no 'image'", record_id=record_id)
    if placeholders > 1:
        raise RecordError(
            f"{placeholders} <image> placeholders; one image per record is supported",
            record_id=record_id,
        )
    while messages and messages[0]["role"] == "assistant":
        messages.pop(0)
    answers = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    if not answers:
        raise RecordError("the conversation has no gpt answer", record_id=record_id)
    samples = []
    for k, position in enumerate(answers, start=1):
        if messages[position - 1]["role"] != "user":
            raise RecordError(f"gpt answer {k} does not follow a human turn", record_id=record_id)
        response = messages[position]["content"]
        if not response.strip():
            raise RecordError(f"gpt answer {k} is empty", record_id=record_id)
        samples.append(
            Sample(
                id=record_id if len(answers) == 1 else f"{record_id}#{k}",
                image=image,
                prompt=[dict(message) for message in messages[:position]],
                response=response,
            )
        )
    return samples


def _bpo_record(value: Any) -> list[tuple[Sample, list[Negative]]]:
    """One BPO release record: its gold sample and its score-0 negatives."""
    if not isinstance(value, dict):
        raise RecordError("a BPO record must be a JSON object")
    record_id = _record_id(value) if "id" in value else None
    prompt, image = value.get("prompt"), _image_field(value)
    completions = value.get("completions")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RecordError("field 'prompt' must be a non-empty string", record_id=record_id)
    if not isinstance(completions, list) or not completions:
        raise RecordError("field 'completions' must be a non-empty list", record_id=record_id)
    for index, completion in enumerate(completions):
        if (
            not isinstance(completion, dict)
            or not isinstance(completion.get("response"), str)
            or isinstance(completion.get("score"), bool)
            or not isinstance(completion.get("score"), (int, float))
        ):
            raise RecordError(
                f"completions[{index}] must be an object with a string 'response' "
                "and a numeric 'score'",
                record_id=record_id,
            )
    gold = next((c["response"] for c in completions if c["score"] == 1), None)
    if gold is None or not gold.strip():
        raise RecordError(
            "no non-empty completion with score 1 (the gold answer)", record_id=record_id
        )
    if record_id is None:
        content = "\0".join((image or "", prompt, gold)).encode("utf-8")
        record_id = "bpo-" + hashlib.sha1(content).hexdigest()[:16]
    sample = Sample(
        id=record_id,
        image=image,
        prompt=[{"role": "user", "content": _strip_placeholder(prompt)}],
        response=gold,
    )
    negatives = []
    for index, completion in enumerate(completions):
        if completion["score"] != 0:
            continue
        kind = str(completion.get("type") or "unknown")
        strategy = _BPO_STRATEGIES.get(kind, kind)
        negatives.append(
            Negative(
                id=negative_id(record_id, strategy, index),
                sample_id=record_id,
                strategy=strategy,
                text=completion["response"],
                params={"source": "bpo-release", "type": kind, "score": completion["score"]},
            )
        )
    return [(sample, negatives)]
