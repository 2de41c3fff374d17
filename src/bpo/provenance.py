"""What made an output, saved beside it, and the refusal to mix outputs of other settings.

Every stage that writes resumable output (bootstrap, pairs, train, eval, run)
describes the settings that shape it as a flat mapping (``{"strategy":
"cooccurrence", "seed": 0, ...}``) and hands it, with the paths it writes, to a
`Provenance`. Before the stage does anything, `Provenance.check` compares the
settings with the record saved by the run that wrote the existing output; on a
difference it raises a `ConfigError` naming each setting (old -> new) and the
two ways on (another output, or ``--overwrite``). Only reads happen before that
point, so a refused run changes no byte.

The record is written by `Provenance.commit`, which a stage calls just before
the first byte of output (`bpo.data.jsonl.JsonlWriter` calls it on its first
write): a run that fails before producing anything leaves nothing behind, and
with ``--overwrite`` the old output is removed only then.

Settings that cannot change the result (progress bars, batch sizes where results
do not depend on them, logging and saving frequency) stay out of the mapping.
A key that only the new settings have is not compared (a newer bpo records a
setting an older one did not); one that only the record has is a difference.

Record files: ``<file>.settings.json`` beside a file output (`file_record`),
``<folder>/settings.json`` inside a folder output (`folder_record`)::

    {"stage": "bootstrap", "bpo_version": "0.1.0", "settings": {...}}
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpo.errors import ConfigError
from bpo.fsio import write_text

RECORD_NAME = "settings.json"


def file_record(out: str | os.PathLike[str]) -> Path:
    """Where the settings of a file output are saved: ``negatives.jsonl.settings.json``."""
    return Path(f"{out}.{RECORD_NAME}")


def folder_record(folder: str | os.PathLike[str]) -> Path:
    """Where the settings of a folder output are saved: ``FOLDER/settings.json``."""
    return Path(folder) / RECORD_NAME


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in blocks: a file setting's value (its content counts,
    not where it lies)."""
    import hashlib

    sha = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    return sha.hexdigest()


def plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` as JSON would read them back (tuples as lists, paths as strings)."""
    return dict(json.loads(json.dumps(dict(settings), sort_keys=True, default=str)))


def _show(value: Any) -> str:
    """A setting's value for a message: bare words bare, anything else as JSON, cut short."""
    bare = isinstance(value, str) and value and not any(c.isspace() or c in '"' for c in value)
    text = value if bare else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """``"key old → new"`` for each setting that differs, sorted.

    A key only `after` has is no difference (a newer bpo records a setting an
    older one did not). A key only `before` has is one (the output used a setting
    this run does not), but it is named only when no shared key differs: it comes
    from another kind of run (another strategy), which a shared key already says.
    """
    changed = [
        f"{key} {_show(before[key])} → {_show(after[key])}"
        for key in sorted(set(before) & set(after))
        if before[key] != after[key]
    ]
    if changed:
        return changed
    return [f"{key} {_show(before[key])} → (not set)" for key in sorted(set(before) - set(after))]


def _exists(path: Path) -> bool:
    """Whether `path` holds output: a non-empty file or a folder with something in it."""
    if path.is_dir():
        return any(path.iterdir())
    return path.is_file() and path.stat().st_size > 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@dataclass
class Provenance:
    """The settings a stage's output is made with, checked against the existing output's.

    Args:
        stage: the command that writes the output ("bootstrap", "pairs", "train", ...).
        record: the record file (`file_record` or `folder_record`).
        settings: the settings that shape the output, a flat JSON-able mapping.
        outputs: every file or folder the stage writes, the main one first; the
            record is never among them.
        where: the flag that names another output, for the refusal's message.
        overwrite: replace the existing output instead of refusing other settings.
        subject: what the messages call the output (default: the main output).
    """

    stage: str
    record: Path
    settings: dict[str, Any]
    outputs: Sequence[Path]
    where: str = "--out"
    overwrite: bool = False
    subject: str | None = None
    _committed: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.record = Path(self.record)
        self.outputs = [Path(path) for path in self.outputs]
        self.settings = plain(self.settings)

    def existing(self) -> list[Path]:
        """The outputs that hold something."""
        return [path for path in self.outputs if _exists(path)]

    def recorded(self) -> dict[str, Any] | None:
        """The saved record, or None when there is none."""
        if not self.record.is_file():
            return None
        try:
            data = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
            raise ConfigError(
                f"{self.record} is not a bpo settings record; move it away or pass --overwrite"
            )
        return data

    def check(self) -> None:
        """Refuse, before anything is written, to add to output made with other settings.

        Raises:
            ConfigError: when the record is another stage's (whatever `overwrite`
                says), or, unless `overwrite`, when existing output has no record
                or other settings (each named, old -> new).
        """
        main = self.subject or str(self.outputs[0])
        ways = f"write to another {self.where}, or pass --overwrite to replace it"
        recorded = self.recorded()
        if recorded is not None and recorded.get("stage") != self.stage:
            # Another command's folder: not ours to add to, nor to replace.
            raise ConfigError(
                f"{self.record.parent} holds the output of `bpo {recorded.get('stage')}`, "
                f"not of `bpo {self.stage}`; write to another {self.where}"
            )
        existing = self.existing()
        if self.overwrite or not existing:
            return
        if recorded is None:
            raise ConfigError(
                f"{existing[0]} exists, but no record says which settings made it "
                f"({self.record.name} is missing); {ways}"
            )
        changed = differences(recorded["settings"], self.settings)
        if changed:
            raise ConfigError(
                f"{main} was made with other settings: {'; '.join(changed)}. To keep both, {ways}"
            )

    def commit(self) -> None:
        """Just before the first byte of output: remove the old output (with `overwrite`)
        and save the record. Later calls do nothing."""
        if self._committed:
            return
        if self.overwrite:
            for path in self.outputs:
                _remove(path)
        from bpo import __version__

        payload = {"stage": self.stage, "bpo_version": __version__, "settings": self.settings}
        write_text(self.record, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        self._committed = True
