"""What every benchmark hands the runner: items to answer, and answers read back.

An `EvalItem` is one prompt (with its image) to answer, with a stable id and
the fields the scorer needs (a POPE label, a CHAIR image id ...). Answers live
in ``predictions.jsonl``, one ``{"id", "answer", ...fields}`` per item; answers
made elsewhere are matched to items by the keys of `prediction_keys`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpo.data.jsonl import iter_jsonl
from bpo.data.records import Message
from bpo.errors import ConfigError, ErrorPolicy, RecordError

# Where answers sit in prediction files: ours ("answer"), LLaVA's answer files
# ("text"), MMHal-Bench response files ("model_answer"), caption files ("caption"),
# AMBER's ("response"), HallusionBench result files ("model_prediction").
ANSWER_FIELDS = (
    "answer", "text", "model_answer", "caption", "response", "output", "model_prediction"
)  # fmt: skip
# lmms-eval's logged samples (--log_samples): the answer is the first of
# "filtered_resps" (after the task's filters), else of "resps"; the question's
# fields are under "doc".
LMMS_EVAL_ANSWERS = ("filtered_resps", "resps")


@dataclass
class EvalItem:
    """One prompt to answer.

    Attributes:
        id: stable across runs; the predictions file is keyed by it.
        prompt: the chat before the answer (bpo's prompt form).
        image: the image path, relative to the image root (None: text only).
        fields: copied into the item's predictions line (split, label, image id ...).
        keys: other names a prediction made elsewhere may give the item
            (``question_id=3@random``, ``image_id=42``, ``index=7``), see `prediction_keys`.
        image_data: the image itself, base64-encoded, for benchmark files that embed
            their images (Object HalBench); `image` then only names it. Never
            written to predictions.jsonl.
    """

    id: str
    prompt: list[Message]
    image: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    image_data: str | None = field(default=None, repr=False)


def user_prompt(template: str, question: str = "") -> list[Message]:
    """A one-message prompt: `template` with ``{question}`` replaced by `question`.

    (str.replace, not str.format: questions may hold braces.)
    """
    return [{"role": "user", "content": template.replace("{question}", question)}]


def read_json_records(
    path: str | os.PathLike[str], *, policy: ErrorPolicy | None = None
) -> Iterator[tuple[int, int | None, Any]]:
    """``(index, line, value)`` for each record of a JSON array or JSON Lines file.

    The format is told from the first non-blank byte (``[``: an array). Benchmark
    files are small (POPE 3,000 lines a split, MMHal-Bench 96 records), so an
    array is parsed whole; `line` is None for its items.

    Raises:
        ConfigError: the file is missing, or a JSON array that does not parse.
        RecordError: a JSONL line that does not parse (unless `policy` skips it).
    """
    target = Path(path)
    if not target.is_file():
        raise ConfigError(f"no such file: {target}")
    with target.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"["):
        try:
            values = json.loads(target.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as error:
            # ValueError covers bad UTF-8, bad JSON and integers past Python's digit
            # limit; RecursionError, nesting past the parser's depth.
            raise ConfigError(
                f"{target}: not valid JSON ({type(error).__name__}: {error})"
            ) from None
        for index, value in enumerate(values):
            yield index, None, value
        return
    for index, (line, value) in enumerate(iter_jsonl(target, policy=policy)):
        yield index, line, value


def located(
    error: RecordError,
    path: str | os.PathLike[str],
    position: int,
    line: int | None,
    *,
    record_id: str | None = None,
) -> RecordError:
    """`error` placed where `read_json_records` found its record: a JSONL line, or an
    array item (``item [N]`` in the reason, as arrays have no line numbers here)."""
    reason = error.reason if line is not None else f"item [{position}]: {error.reason}"
    return RecordError(
        reason, record_id=record_id or error.record_id, path=path, line=line, kind=error.kind
    )


def answer_of(row: Mapping[str, Any]) -> str | None:
    """The answer in a prediction line: the first of `ANSWER_FIELDS` that holds a
    string, else the first response of an lmms-eval logged sample."""
    for name in ANSWER_FIELDS:
        value = row.get(name)
        if isinstance(value, str):
            return value
    for name in LMMS_EVAL_ANSWERS:
        value = row.get(name)
        # [["text"]] (resps) or ["text"] (filtered_resps): the first text.
        while isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return value
    return None


def lmms_eval_doc(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """An lmms-eval logged sample's question fields (its ``doc``); other rows as they are."""
    doc = row.get("doc")
    if isinstance(doc, Mapping) and "doc_id" in row:
        return doc
    return row


RowKeys = Callable[[Mapping[str, Any], int], list[str]]


def prediction_keys(row: Mapping[str, Any], index: int) -> list[str]:
    """The names a prediction line may give its item, most specific first.

    - ``id`` alone, when the line has one: bpo's own predictions (``random/12``,
      ``coco-42``, ``mmhal-7``);
    - else ``question_id`` with ``split`` or ``category`` (LLaVA's merged POPE
      answer file), or ``question_id`` alone when no split is named (ambiguous
      across POPE splits); ``image_id`` and ``image`` (CHAIR caption files);
    - else only ``index``, the line's position in the file (the POPE reference's
      answer files, which keep the questions' order).

    Benchmarks may read lines their own way (MMHal-Bench: by position only).
    """
    if row.get("id") is not None:
        return [str(row["id"])]
    keys = []
    if row.get("question_id") is not None:
        split = row.get("split", row.get("category"))
        if split is not None:
            keys.append(f"question_id={row['question_id']}@{split}")
        else:
            keys.append(f"question_id={row['question_id']}")
    if row.get("image_id") is not None:
        keys.append(f"image_id={row['image_id']}")
    if isinstance(row.get("image"), str):
        keys.append(f"image={row['image']}")
    return keys or [f"index={index}"]


def match_predictions(
    path: str | os.PathLike[str],
    items: list[EvalItem],
    *,
    policy: ErrorPolicy,
    row_keys: RowKeys = prediction_keys,
) -> tuple[dict[str, str], dict[str, int]]:
    """Read answers made elsewhere (or by an earlier run) and match them to `items`.

    Each line goes to the item that its most specific key names alone (see
    `prediction_keys`, or the benchmark's own `row_keys`); a line whose keys name no item is counted as
    ``unmatched`` (e.g. beyond ``--limit``), one whose keys each name several
    items is a RecordError (kind ``ambiguous-prediction``). The first answer for an
    item wins; later ones are counted as ``duplicates``.

    Returns:
        ``({item id: answer}, counts)`` with counts ``unmatched`` and ``duplicates``.
    """
    index: dict[str, list[str]] = {}
    for item in items:
        for key in (item.id, *item.keys):
            index.setdefault(key, []).append(item.id)
    answers: dict[str, str] = {}
    counts = {"unmatched": 0, "duplicates": 0}
    for position, line, row in read_json_records(path, policy=policy):
        try:
            if not isinstance(row, dict):
                raise RecordError("a prediction must be a JSON object", kind="bad-prediction")
            answer = answer_of(row)
            if answer is None:
                raise RecordError(
                    f"no answer: expected one of the fields {', '.join(ANSWER_FIELDS)}",
                    kind="bad-prediction",
                )
            keys = row_keys(row, position)
            candidates = [index[key] for key in keys if key in index]
            unique = next((ids[0] for ids in candidates if len(ids) == 1), None)
            if unique is None and candidates:
                raise RecordError(
                    f"names {len(candidates[0])} items ({keys[0]}); "
                    "add an 'id', or a 'split' next to 'question_id'",
                    kind="ambiguous-prediction",
                )
        except RecordError as error:
            policy.handle(located(error, path, position, line))
            continue
        if unique is None:
            counts["unmatched"] += 1
        elif unique in answers:
            counts["duplicates"] += 1
        else:
            answers[unique] = answer
    return answers, counts
