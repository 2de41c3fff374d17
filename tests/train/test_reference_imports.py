"""bpo.train.reference owns the reference cache and imports nothing of the trainer that uses it."""

from __future__ import annotations

import ast
from pathlib import Path

import bpo.train.reference


def test_reference_imports_no_trainer():
    # The trainer imports the reference module; an import back (even under TYPE_CHECKING)
    # was a cycle. The trainer hands the pass a function instead (`batch_logps`).
    tree = ast.parse(Path(bpo.train.reference.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert "bpo.train.data" in imported  # the walk sees the module's imports
    assert not any(name.startswith(("bpo.train.trainer", "bpo.train.runner")) for name in imported)
