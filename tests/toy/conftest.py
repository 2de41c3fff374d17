"""A small toy world, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

# Small but large enough for the statistical checks (corpus: ~6000 anchors).
SMALL_WORLD = {
    "vision": 400,
    "corpus": 4000,
    "sft": 300,
    "preference": 100,
    "validation": 40,
    "test": 60,
}


@pytest.fixture(scope="session")
def toy_world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy world with seed 0 and `SMALL_WORLD` sizes; do not write into it."""
    from bpo.toy.world import write_world

    return write_world(tmp_path_factory.mktemp("toy-world"), seed=0, progress=False, **SMALL_WORLD)
