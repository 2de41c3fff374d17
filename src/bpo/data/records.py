"""The three records every stage reads and writes (see DESIGN.md, "Records").

- `Sample`: a supervised example; its gold `response` is the chosen answer.
- `Negative`: one bootstrapped rejected answer for a sample, with its provenance.
- `Pair`: what DPO trains on.

A prompt is the conversation before the answer: a list of chat messages
``{"role": "system"|"user"|"assistant", "content": str}``. The sample's image (if
any) belongs to the first user message; `chat_messages` renders the
transformers/TRL multimodal form with the image placed there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from bpo.errors import RecordError

ROLES = ("system", "user", "assistant")

Message = dict[str, str]


def check_utf8(text: str, what: str) -> str:
    """Return `text` if UTF-8 can encode it; a RecordError naming `what` otherwise.

    JSON's ``\\ud800`` escapes decode to lone surrogates, which no UTF-8 file can
    hold: such a string would be read here and crash the stage that writes it
    (or the id index, which hashes UTF-8 bytes). Refused where it is read instead.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RecordError(
            f"{what} holds a lone surrogate {text[error.start]!r} (an unpaired \\u escape), "
            "which UTF-8 cannot encode",
            kind="bad-encoding",
        ) from None
    return text


def check_json_value(value: Any, what: str) -> Any:
    """Return `value` if it can be written back as UTF-8 JSON; a RecordError otherwise."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError) as error:
        reason = "a lone surrogate" if isinstance(error, UnicodeEncodeError) else str(error)
        raise RecordError(
            f"{what} cannot be written back as UTF-8 JSON ({reason})", kind="bad-encoding"
        ) from None
    return value


def _require_str(data: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RecordError(f"field {key!r} is empty")
    return check_utf8(value, f"field {key!r}")


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} must be a string or null, got {type(value).__name__}")
    return check_utf8(value, f"field {key!r}")


def _record_id(data: dict[str, Any]) -> str:
    value = data.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordError("field 'id' must be a string or an integer")
    text = str(value)
    if not text.strip():
        raise RecordError("field 'id' is empty")
    return check_utf8(text, "field 'id'")


def validate_prompt(prompt: Any) -> list[Message]:
    """Check that `prompt` is a non-empty chat ending with a user message."""
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise RecordError("field 'prompt' must be a non-empty list of chat messages")
    messages: list[Message] = []
    for i, message in enumerate(prompt):
        if not isinstance(message, dict):
            raise RecordError(f"prompt message {i} is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RecordError(f"prompt message {i} has role {role!r}; expected one of {ROLES}")
        if not isinstance(content, str):
            raise RecordError(f"prompt message {i} content must be a string")
        check_utf8(content, f"prompt message {i}")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        raise RecordError("the prompt must end with a user message")
    return messages


def chat_messages(prompt: list[Message], *, with_image: bool) -> list[dict[str, Any]]:
    """The prompt in the multimodal chat form of transformers processors and TRL.

    Each message's content becomes a list of typed parts; with `with_image`, an
    ``{"type": "image"}`` part opens the first user message.
    """
    rendered: list[dict[str, Any]] = []
    image_placed = not with_image
    for message in prompt:
        parts: list[dict[str, str]] = []
        if not image_placed and message["role"] == "user":
            parts.append({"type": "image"})
            image_placed = True
        parts.append({"type": "text", "text": message["content"]})
        rendered.append({"role": message["role"], "content": parts})
    return rendered


@dataclass
class Sample:
    """A supervised example: image, prompt and gold response."""

    id: str
    image: str | None
    prompt: list[Message]
    response: str
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        if not isinstance(data, dict):
            raise RecordError("a sample must be a JSON object")
        record_id = _record_id(data)
        try:
            meta = data.get("meta") or {}
            if not isinstance(meta, dict):
                raise RecordError("field 'meta' must be an object")
            check_json_value(meta, "field 'meta'")
            return cls(
                id=record_id,
                image=_optional_str(data, "image"),
                prompt=validate_prompt(data.get("prompt")),
                response=_require_str(data, "response"),
                meta=meta,
            )
        except RecordError as error:
            raise RecordError(error.reason, record_id=record_id, kind=error.kind) from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def question(self) -> str:
        """The last user message: the question the response answers."""
        return self.prompt[-1]["content"]


def negative_id(sample_id: str, strategy: str, k: int) -> str:
    """The stable id of negative `k` of a sample: re-runs and shards agree on it."""
    return f"{sample_id}/{strategy}/{k}"


@dataclass
class Negative:
    """A rejected answer bootstrapped for one sample, with the parameters that made it."""

    id: str
    sample_id: str
    strategy: str
    text: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Negative:
        if not isinstance(data, dict):
            raise RecordError("a negative must be a JSON object")
        record_id = _record_id(data)
        try:
            params = data.get("params") or {}
            if not isinstance(params, dict):
                raise RecordError("field 'params' must be an object")
            check_json_value(params, "field 'params'")
            return cls(
                id=record_id,
                sample_id=_require_str(data, "sample_id"),
                strategy=_require_str(data, "strategy"),
                text=_require_str(data, "text", allow_empty=True),
                params=params,
            )
        except RecordError as error:
            raise RecordError(error.reason, record_id=record_id, kind=error.kind) from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pair:
    """A preference pair: chosen = gold, rejected = bootstrapped.

    `weakening` is the distortion that weakened the image the rejected answer was
    generated on (``{"kind", "params", "seed"}``, as `bpo.distort.describe` gives it),
    for image-weakening negatives; `bpo train`'s image-conditional term rebuilds the
    weakened image from it. Left out of the record when None.
    """

    id: str
    image: str | None
    prompt: list[Message]
    chosen: str
    rejected: str
    strategy: str
    weakening: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pair:
        if not isinstance(data, dict):
            raise RecordError("a pair must be a JSON object")
        record_id = _record_id(data)
        try:
            return cls(
                id=record_id,
                image=_optional_str(data, "image"),
                prompt=validate_prompt(data.get("prompt")),
                chosen=_require_str(data, "chosen"),
                rejected=_require_str(data, "rejected", allow_empty=True),
                strategy=_require_str(data, "strategy"),
                weakening=_optional_weakening(data),
            )
        except RecordError as error:
            raise RecordError(error.reason, record_id=record_id, kind=error.kind) from None

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        if record["weakening"] is None:
            del record["weakening"]
        return record


def _optional_weakening(data: dict[str, Any]) -> dict[str, Any] | None:
    """A pair's ``weakening``: None, or a distortion's kind, parameters and seed."""
    value = data.get("weakening")
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("kind"), str)
        or not isinstance(value.get("params", {}), dict)
        or isinstance(value.get("seed"), bool)
        or not isinstance(value.get("seed"), int)
    ):
        raise RecordError(
            "field 'weakening' must be null or an object with a string 'kind', an object "
            f"'params' and an integer 'seed', got {json.dumps(value)[:200]}"
        )
    return value
