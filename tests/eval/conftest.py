"""Fixtures for the eval tests: real photos on disk, a fake backend that counts, `bpo serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..servers import wait_for_url

PHOTOS = ("astronaut", "chelsea", "coffee")


def coco_name(image_id: int) -> str:
    return f"COCO_val2014_{image_id:012d}.jpg"


@pytest.fixture(scope="session")
def photo_root(tmp_path_factory: pytest.TempPathFactory, photo_by_name: Any) -> Path:
    """Three real photos (skimage), 64x64, saved under COCO file names with ids 1, 2, 3."""
    root = tmp_path_factory.mktemp("photos")
    for image_id, name in enumerate(PHOTOS, start=1):
        photo_by_name(name).resize((64, 64)).save(root / coco_name(image_id))
    return root


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@dataclass
class FakeBackend:
    """A backend answering with `answer(request)`; it counts calls and requests.

    `fail_on_call`: the call (1-based) that raises a BpoError, as a server would
    after its retries.
    """

    answer: Callable[[Any], str] = lambda request: "Yes."
    name: str = "fake"
    model_name: str = "fake-model"
    fail_on_call: int | None = None
    calls: int = 0
    requests: list[Any] = field(default_factory=list)

    def generate(self, requests: Sequence[Any], *, progress: bool = False) -> list[str]:
        from bpo.errors import BpoError

        self.calls += 1
        if self.calls == self.fail_on_call:
            raise BpoError("fake server: HTTP 503 (gave up after 6 attempts)")
        self.requests.extend(requests)
        return [self.answer(request) for request in requests]

    def close(self) -> None:
        pass


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()


# --- `bpo serve` in its own process ------------------------------------------------------


@dataclass
class Server:
    popen: subprocess.Popen[str]
    url: str
    stderr_path: Path


@pytest.fixture(scope="session")
def tiny_llava_server(
    tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`bpo serve` of the tiny LLaVA on a free loopback port (``--port 0``), as ``tiny-llava``."""
    stderr_path = tmp_path_factory.mktemp("serve") / "stderr.txt"
    argv = [sys.executable, "-m", "bpo.cli", "serve", "--model", str(tiny_llava_path)]
    argv += ["--port", "0", "--served-model-name", "tiny-llava"]
    popen = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=stderr_path.open("w"), text=True, env=dict(os.environ)
    )
    try:
        yield Server(popen, wait_for_url(popen, stderr_path), stderr_path)
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
