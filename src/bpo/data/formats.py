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

Repeated ids. LLaVA's own files repeat record ids: ``llava_instruct_150k.json``
and ``llava_v1_5_mix665k.json`` name each conversation after its COCO image, and
an image with several conversations (conversation, detail, reasoning) has its
id several times. LLaVA trains on every entry, so the LLaVA and ShareGPT4V
readers keep them all: the n-th record (n >= 2) with an id gets the id
``f"{id}~{n}"`` (``"000000033471~2"``), counted in file order whether or not
the record is valid, so ids are stable for a given file. Everywhere else (our
JSONL, the BPO release, `read_records`) a repeated sample id is a
`RecordError` (kind ``"duplicate-id"``); under the default ``raise`` policy its
message also names the line (or array item) that has the id first.

Hostile input. Every failure is a `RecordError` (or a `ConfigError` for a bad
argument). Strings that UTF-8 cannot encode (lone surrogates from ``\\ud800``
escapes) are refused where they are read, and a record nested deeper than
`MAX_NESTING` arrays and objects is refused before it is built: ijson's own
item builder keeps the dotted path of every open level, so memory would grow
with the square of the depth (100,000 ``[`` took more than 20 GB).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bpo.data.jsonl import IdIndex, iter_jsonl
from bpo.data.records import Message, Negative, Pair, Sample, check_utf8, negative_id
from bpo.errors import ConfigError, ErrorPolicy, RecordError

FORMATS = ("llava", "sharegpt4v", "bpo", "jsonl")

RecordT = TypeVar("RecordT", Sample, Negative, Pair)
ItemT = TypeVar("ItemT")
Converter = Callable[[Any], list[ItemT]]

# Arrays and objects open at once in one JSON-array record (the array itself not
# counted). LLaVA records use 3 (record, conversations, turn); the limit leaves
# room for nested `meta` and bounds the memory of a hostile file (module doc).
MAX_NESTING = 100

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
            ``"too-deep"``, ``"bad-record"``), unless skipped. ``"bad-encoding"``
            also covers strings UTF-8 cannot encode (lone surrogates).
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
    return _read(Path(path), lambda: _bpo_record, lambda item: item[0].id, policy)


def read_records(
    path: str | os.PathLike[str], record_type: type[RecordT], *, policy: ErrorPolicy | None = None
) -> Iterator[RecordT]:
    """Stream `Sample`, `Negative` or `Pair` records from a JSONL file (or JSON array).

    Args and errors as `read_samples`; duplicate ids are refused.
    """
    _check_file(path)

    def convert(value: Any) -> list[RecordT]:
        return [record_type.from_dict(value)]

    return _read(Path(path), lambda: convert, lambda record: record.id, _policy(policy))


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
    if format == "auto":
        # A look at the first record that parses; the reading proper (below) then
        # handles every bad line under `policy`, those before it included.
        first = next(_iter_values(path, ErrorPolicy(on_error="skip")), None)
        if first is None:
            for _ in _iter_values(path, policy):  # only bad lines, if any: report them
                pass
            return
        where, value = first
        detected = detect_format(value)
        if detected is None:
            keys = sorted(value)[:20] if isinstance(value, dict) else type(value).__name__
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
    if format == "bpo":
        for sample, _ in _read(path, lambda: _bpo_record, lambda item: item[0].id, policy):
            yield sample
    elif format == "jsonl":
        yield from _read(path, lambda: _jsonl_sample, lambda s: s.id, policy)
    else:  # llava, sharegpt4v
        yield from _read(path, _LlavaRecords, lambda s: s.id, policy)


def _read(
    path: Path,
    make_converter: Callable[[], Converter[ItemT]],
    id_of: Callable[[ItemT], str],
    policy: ErrorPolicy,
) -> Iterator[ItemT]:
    """Convert each value, refuse duplicate ids, and route errors through `policy`.

    `make_converter` gives a fresh converter (one may count ids, see `_LlavaRecords`),
    so that a second pass can find where a duplicated id first appeared.
    """
    seen = IdIndex()
    convert = make_converter()
    for where, value in _iter_values(path, policy):
        try:
            items = convert(value)
            ids = [id_of(item) for item in items]
            for position, record_id in enumerate(ids):
                if record_id in seen or record_id in ids[:position]:
                    raise RecordError(
                        _duplicate_reason(path, make_converter, id_of, record_id, policy),
                        record_id=record_id,
                        kind="duplicate-id",
                    )
        except RecordError as error:
            policy.handle(_located(error, path, where, _raw_id(value)))
            continue
        for record_id in ids:
            seen.add(record_id)
        yield from items


def _duplicate_reason(
    path: Path,
    make_converter: Callable[[], Converter[ItemT]],
    id_of: Callable[[ItemT], str],
    record_id: str,
    policy: ErrorPolicy,
) -> str:
    """Why a record is refused as a duplicate, naming where the id first appeared.

    The index keeps 8-byte digests, not places, so the place is found by reading
    the file again up to the first record with the id: done only when the error
    stops the run (``raise``), so skipping many duplicates stays one pass.
    """
    reason = "duplicate id (an earlier record in this file has it)"
    if policy.on_error != "raise":
        return reason
    convert = make_converter()
    try:
        for where, value in _iter_values(path, ErrorPolicy(on_error="skip")):
            try:
                ids = [id_of(item) for item in convert(value)]
            except RecordError:
                continue
            if record_id in ids:
                place = f"line {where.line}" if where.line is not None else f"item [{where.item}]"
                return f"duplicate id: {place} has it first"
    except RecordError:  # the file broke after the first reading: keep the plain reason
        pass
    return reason


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
        yield from _iter_json_array(path, policy)
    else:
        for line, value in iter_jsonl(path, policy=policy):
            yield _Where(line=line), value


def _iter_json_array(path: Path, policy: ErrorPolicy) -> Iterator[tuple[_Where, Any]]:
    """The items of a JSON array, each built from ijson's parser events.

    Not ``ijson.items``: its memory grows with the square of the nesting depth
    (module doc). Here an item nested deeper than `MAX_NESTING` is refused
    (under `policy`) and its events are passed over without building anything.
    """
    import ijson
    from ijson.common import ObjectBuilder

    count = 0
    with open(path, "rb") as handle:
        try:
            events = ijson.basic_parse(handle, use_float=True)
            next(events)  # the array's own start_array: the file starts with "["
            builder: ObjectBuilder | None = None
            for event, value in events:
                if builder is None:
                    if event == "end_array":
                        break
                    builder = ObjectBuilder()
                builder.event(event, value)
                if len(builder.containers) > MAX_NESTING:
                    error = RecordError(
                        f"item [{count}]: nested deeper than {MAX_NESTING} arrays and objects",
                        path=path,
                        kind="too-deep",
                    )
                    builder = None
                    policy.handle(error)
                    _skip_open_containers(events, MAX_NESTING + 1)
                    count += 1
                elif not builder.containers:  # the item is complete
                    yield _Where(item=count), builder.value
                    builder = None
                    count += 1
            for _ in events:  # anything after the array is an error
                pass
        except (ijson.JSONError, UnicodeDecodeError) as error:
            raise _array_error(path, count, error) from None


def _skip_open_containers(events: Iterator[tuple[str, Any]], depth: int) -> None:
    """Consume parser events until the `depth` arrays and objects now open are closed."""
    for event, _ in events:
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                return


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
    return check_utf8(record_id, "field 'id'")


def _image_field(value: dict[str, Any]) -> str | None:
    image = value.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise RecordError("field 'image' must be a non-empty string (one image per record)")
    return image if image is None else check_utf8(image, "field 'image'")


def _jsonl_sample(value: Any) -> list[Sample]:
    return [Sample.from_dict(value)]


def _strip_placeholder(text: str) -> str:
    return _PLACEHOLDER_PATTERN.sub("", text).strip()


class _LlavaRecords:
    """Converts LLaVA / ShareGPT4V records, renaming repeated ids (see the module doc)."""

    def __init__(self) -> None:
        self.ids = IdIndex()
        self.repeats: dict[str, int] = {}  # only the ids seen more than once: few

    def __call__(self, value: Any) -> list[Sample]:
        if not isinstance(value, dict):
            raise RecordError("a LLaVA record must be a JSON object")
        record_id = _record_id(value)
        if record_id in self.ids:
            self.repeats[record_id] = self.repeats.get(record_id, 1) + 1
            record_id = f"{record_id}~{self.repeats[record_id]}"
        else:
            self.ids.add(record_id)
        return _llava_samples(value, record_id)


def _llava_samples(value: dict[str, Any], record_id: str) -> list[Sample]:
    """The samples of one LLaVA / ShareGPT4V record: one per gpt turn."""
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
        check_utf8(text, f"{where} value")
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
    try:
        return _bpo_sample(value, record_id)
    except RecordError as error:
        raise RecordError(error.reason, record_id=record_id, kind=error.kind) from None


def _bpo_sample(
    value: dict[str, Any], record_id: str | None
) -> list[tuple[Sample, list[Negative]]]:
    prompt, image = value.get("prompt"), _image_field(value)
    completions = value.get("completions")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RecordError("field 'prompt' must be a non-empty string")
    check_utf8(prompt, "field 'prompt'")
    if not isinstance(completions, list) or not completions:
        raise RecordError("field 'completions' must be a non-empty list")
    for index, completion in enumerate(completions):
        if (
            not isinstance(completion, dict)
            or not isinstance(completion.get("response"), str)
            or isinstance(completion.get("score"), bool)
            or not isinstance(completion.get("score"), (int, float))
        ):
            raise RecordError(
                f"completions[{index}] must be an object with a string 'response' "
                "and a numeric 'score'"
            )
        check_utf8(completion["response"], f"completions[{index}] response")
        if isinstance(completion.get("type"), str):
            check_utf8(completion["type"], f"completions[{index}] type")
    gold = next((c["response"] for c in completions if c["score"] == 1), None)
    if gold is None or not gold.strip():
        raise RecordError("no non-empty completion with score 1 (the gold answer)")
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
