"""Shared fixtures and the slow/gpu markers (skipped unless asked for)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # One intra-op thread for torch here and in the processes tests start: tiny
    # models gain nothing from more, and on a busy 2-core machine OpenMP threads
    # waiting for a core made steps 5-50x slower. Set before torch is imported.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")
    parser.addoption("--rungpu", action="store_true", help="run tests marked gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, option in (("slow", "--runslow"), ("gpu", "--rungpu")):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f"marked {marker}; pass {option} to run")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


# --- tiny models and real photos (bpo.tiny_models) ---------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Returns the tiny random checkpoint of a family by name (``"gemma3"`` ...), seed 0.

    Each family is built once per session, on first use (about 0.1 s each once torch and
    transformers are imported). Without torchvision this also applies
    `allow_processors_without_torchvision` (for the whole session), so
    `AutoProcessor.from_pretrained` loads every family. Do not write into the folders.
    """
    from bpo.compat import allow_processors_without_torchvision
    from bpo.tiny_models import build_tiny_model

    allow_processors_without_torchvision()
    built: dict[str, Path] = {}

    def checkpoint(arch: str) -> Path:
        if arch not in built:
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            built[arch] = build_tiny_model(arch, folder, seed=0)
        return built[arch]

    return checkpoint


@pytest.fixture(scope="session")
def tiny_llava_path(tiny_checkpoint: Callable[[str], Path]) -> Path:
    """A tiny random LLaVA-1.5 checkpoint (CLIP + Llama), built once per session.

    Load it with `AutoModelForImageTextToText` / `AutoProcessor`; do not write into it.
    """
    return tiny_checkpoint("llava")


@pytest.fixture(scope="session")
def tiny_qwen2vl_path(tiny_checkpoint: Callable[[str], Path]) -> Path:
    """A tiny random Qwen2-VL checkpoint, built once per session (see `tiny_checkpoint`)."""
    return tiny_checkpoint("qwen2-vl")


@pytest.fixture(scope="session")
def photo_by_name() -> Callable[[str], Any]:
    """Returns a real photo from `skimage.data` by name (astronaut, chelsea, coffee, rocket ...) as RGB PIL."""
    from PIL import Image
    from skimage import data

    def load(name: str) -> Any:
        return Image.fromarray(getattr(data, name)()).convert("RGB")

    return load


@pytest.fixture
def photo(photo_by_name: Callable[[str], Any]) -> Any:
    """A real photo (skimage's astronaut, 512x512 RGB) as a PIL image."""
    return photo_by_name("astronaut")
