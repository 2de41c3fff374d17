"""Byte-for-byte snapshots of folders: a refused run must change none of them."""

from __future__ import annotations

import hashlib
from pathlib import Path


def folder_digest(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` (hidden ones too), by relative path.

    Folders count too (with an empty digest), so a folder created by a refused
    run shows as a difference.
    """
    root = Path(folder)
    digests: dict[str, str] = {}
    if not root.exists():
        return digests
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return digests
