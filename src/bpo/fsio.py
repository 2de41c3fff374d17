"""Writing files so that a crash never leaves half of one under its final name.

Every output that is not an append-only JSONL file (see `bpo.data.jsonl.JsonlWriter`)
is written to a temporary name next to the target and renamed over it: `os.replace`
is atomic on POSIX and Windows, so a reader (or a resumed run) sees either the old
file or the whole new one. A process killed mid-write leaves only a hidden
``.NAME.HOST.PID.tmp`` file or folder; the next write of the same target on the
same host removes those whose process is gone (a staged checkpoint can be
gigabytes). The host in the name keeps a writer on another node of a shared
filesystem from deleting a temporary that is still being written.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike[str]) -> None:
    """Delete what killed writers of `target` on this host left behind."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    prefix = f".{target.name}.{socket.gethostname()}."
    for path in target.parent.iterdir():
        pid = path.name[len(prefix) : -len(".tmp")]
        ours = path.name.startswith(prefix) and path.name.endswith(".tmp") and pid.isdigit()
        if not ours or _alive(int(pid)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing and rename it to `path` when the block ends.

    Args:
        path: the final file; its folder is created.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: text encoding (ignored for bytes).

    On an exception the temporary file is removed and `path` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = _temporary(target)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` atomically (UTF-8) and return the path."""
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Fill a staging folder and move it to `path` when the block ends.

    For outputs that are a folder (a checkpoint, a `datasets` export): a crash leaves
    the staging folder behind, never a half-filled `path`. An existing `path` is
    replaced only once the new one is complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    staging = _temporary(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            old = target.with_name(f".{target.name}.{os.getpid()}.old")  # not .tmp: kept apart
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def copy_missing(
    source: str | os.PathLike[str], target: str | os.PathLike[str], names: list[str]
) -> None:
    """Copy the entries `names` of folder `source` that `target` lacks, in that order.

    Each file or folder is staged (`atomic_write`, `atomic_dir`), so a crash leaves
    every entry whole or absent, and a rerun copies on where it stopped.
    """
    for name in names:
        origin, destination = Path(source) / name, Path(target) / name
        if not origin.exists() or destination.exists():
            continue
        if origin.is_dir():
            with atomic_dir(destination) as staging:
                shutil.copytree(origin, staging, dirs_exist_ok=True)
        else:
            with open(origin, "rb") as reader, atomic_write(destination, "wb") as writer:
                shutil.copyfileobj(reader, writer)
