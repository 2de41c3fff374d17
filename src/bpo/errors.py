"""The project's error types and the `--on-error skip|raise` policy.

Every failure a user can cause (a bad record, a bad image, a bad config) is a
`BpoError` with a message that names what, where and why, so the CLI can print
one line instead of a traceback.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from bpo.fsio import write_text

OnError = Literal["skip", "raise"]


class BpoError(Exception):
    """Base class of the errors bpo reports to the user as one clear message."""


class ConfigError(BpoError):
    """A recipe, a flag or an option that cannot be used."""


class RecordError(BpoError):
    """A record that cannot be read or used.

    Args:
        reason: what is wrong, in words.
        record_id: the id of the record, when it is known.
        path: the file the record came from (or the image file at fault).
        line: the 1-based line in `path` (a JSON array item's index goes in `reason`).
        kind: a short stable label used to count skipped records by cause.
    """

    kind = "bad-record"

    def __init__(
        self,
        reason: str,
        *,
        record_id: str | None = None,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        kind: str | None = None,
    ) -> None:
        self.reason = reason
        self.record_id = record_id
        self.path = str(path) if path is not None else None
        self.line = line
        if kind is not None:
            self.kind = kind
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.record_id is not None:
            where.append(f"record {self.record_id!r}")
        if self.path is not None:
            where.append(f"{self.path}" + (f":{self.line}" if self.line is not None else ""))
        elif self.line is not None:
            where.append(f"line {self.line}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "record_id": self.record_id,
            "path": self.path,
            "line": self.line,
            "reason": self.reason,
        }


class ImageError(RecordError):
    """An image that is missing, unreadable, unsafe or outside the image root."""

    kind = "bad-image"


@dataclass
class ErrorPolicy:
    """Applies `--on-error skip|raise` and keeps count of what was skipped.

    With ``on_error="raise"`` the first `RecordError` propagates. With ``"skip"``
    it is recorded (count per kind, the first `max_kept` in full) and the run goes on.
    """

    on_error: OnError = "raise"
    max_kept: int = 1000
    counts: Counter[str] = field(default_factory=Counter)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "raise"):
            raise ConfigError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")

    def handle(self, error: RecordError) -> None:
        """Raise `error`, or record it as skipped, according to the policy."""
        if self.on_error == "raise":
            raise error
        self.counts[error.kind] += 1
        if len(self.skipped) < self.max_kept:
            self.skipped.append(error.to_dict())

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "skipped no records"
        parts = ", ".join(f"{kind} {n}" for kind, n in sorted(self.counts.items()))
        return f"skipped {self.total} record{'s' if self.total != 1 else ''} ({parts})"

    def report(self, path: str | os.PathLike[str] | None = None) -> None:
        """Say what was skipped (when anything was) and, if `path` is given, save it as JSON."""
        if self.total:
            from bpo.console import say

            say(self.summary())
        if path is not None:
            payload = {"total": self.total, "counts": dict(self.counts), "skipped": self.skipped}
            write_text(path, json.dumps(payload, indent=2) + "\n")
