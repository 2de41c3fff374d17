"""What every export shares: the result it reports, JSON arrays written as they stream."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpo.errors import ConfigError
from bpo.fsio import atomic_write

# The image placeholder of LLaVA-style prompts, used by the BPO release and LLaMA-Factory.
IMAGE_TOKEN = "<image>"


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        format: the export format.
        paths: the files or folders written.
        rows: the records written (pairs; for ``bpo``, grouped records).
        pairs: the pairs they hold.
        left_out: pairs the format cannot hold, by reason.
    """

    format: str
    paths: list[Path]
    rows: int = 0
    pairs: int = 0
    left_out: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        text = f"{self.format}: {self.pairs} pairs in {self.rows} records -> "
        text += ", ".join(str(path) for path in self.paths)
        if self.left_out:
            text += " (left out: " + ", ".join(f"{k}: {n}" for k, n in self.left_out.items()) + ")"
        return text


def write_json_array(path: Path, items: Iterable[dict[str, Any]]) -> int:
    """Write `items` as a JSON array, one item per line, atomically; return the count."""
    count = 0
    with atomic_write(path) as handle:
        handle.write("[")
        for item in items:
            handle.write(",\n" if count else "\n")
            handle.write(json.dumps(item, ensure_ascii=False))
            count += 1
        handle.write("\n]\n" if count else "]\n")
    return count


def export_name(name: str | None, pairs_path: Path) -> str:
    """The prefix of an export's files: `name`, or the pairs file's stem when None.

    Raises:
        ConfigError: for a name that is empty, holds a path separator (the files
            would land outside the export folder) or starts with a dot (bpo's own
            hidden temporaries and caches do).
    """
    name = pairs_path.stem if name is None else name
    if not name or any(sep in name for sep in ("/", "\\", "\0")) or name.startswith("."):
        raise ConfigError(
            f"invalid dataset name {name!r}: the name prefixes the export's files, so it "
            "must be non-empty, hold no '/' or '\\' and not start with '.'"
        )
    return name
