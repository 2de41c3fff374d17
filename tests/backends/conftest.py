"""Fixtures for the backend tests: real server processes on loopback, a tiny text LLM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..servers import wait_for_url

HERE = Path(__file__).parent
API_KEY = "test-key-not-secret"


@dataclass
class Process:
    """A server started as its own process, with the URL it printed."""

    popen: subprocess.Popen[str]
    url: str
    stderr_path: Path
    api_key: str | None = None

    def stop(self) -> int:
        """SIGTERM, as a scheduler or `docker stop` would send; the exit status."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise


def _start(
    argv: list[str], stderr_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("w"),
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of `fault_server.py` running in its own process."""
    stderr_path = tmp_path_factory.mktemp("fault-server") / "stderr.txt"
    popen = _start([sys.executable, str(HERE / "fault_server.py")], stderr_path)
    try:
        yield wait_for_url(popen, stderr_path)
    finally:
        popen.kill()
        popen.wait()


@pytest.fixture(scope="session")
def served(
    tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Process]]:
    """Two `bpo serve` processes on free loopback ports, started side by side.

    - ``main``: an API key is required (`API_KEY`), a 200 kB body limit.
    - ``queue``: one request waits at most, one generates at a time (for 429).

    Teardown sends SIGTERM and checks that each exits cleanly (status 0).
    """
    folder = tmp_path_factory.mktemp("serve")
    serve = [
        sys.executable,
        "-m",
        "bpo.cli",
        "serve",
        "--model",
        str(tiny_llava_path),
        "--port",
        "0",
    ]
    options = {
        "main": [
            "--served-model-name", "tiny-llava", "--api-key-env", "BPO_TEST_KEY",
            "--max-body-bytes", "200000",
        ],
        "queue": ["--served-model-name", "tiny-llava", "--max-queue", "1", "--max-batch", "1"],
    }  # fmt: skip
    popens = {
        name: _start(
            serve + extra,
            folder / f"{name}.stderr",
            {"BPO_TEST_KEY": API_KEY, "OMP_NUM_THREADS": "1"},
        )
        for name, extra in options.items()
    }
    processes = {}
    for name, popen in popens.items():
        stderr_path = folder / f"{name}.stderr"
        api_key = API_KEY if "--api-key-env" in options[name] else None
        processes[name] = Process(popen, wait_for_url(popen, stderr_path), stderr_path, api_key)
    yield processes
    for name, process in processes.items():
        status = process.stop()
        assert status == 0, f"{name}: exit {status} on SIGTERM: {process.stderr_path.read_text()}"
        assert "stopping" in process.stderr_path.read_text()


@pytest.fixture(scope="session")
def tiny_text_llm_path(tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama causal LM (text only) with the tiny LLaVA's tokenizer and template."""
    import torch
    from transformers import AutoConfig, AutoProcessor, LlamaForCausalLM

    processor = AutoProcessor.from_pretrained(tiny_llava_path)
    tokenizer = processor.tokenizer
    tokenizer.chat_template = processor.chat_template
    text_config = AutoConfig.from_pretrained(tiny_llava_path).text_config
    torch.manual_seed(0)
    model = LlamaForCausalLM(text_config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out = tmp_path_factory.mktemp("tiny-text-llm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
