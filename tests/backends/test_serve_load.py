"""`bpo serve` under a short bounded load, an overload and a flood of idle connections.

A real server process on loopback, driven by the clients of ``bench/serve_load.py``
(imported from its file, so the benchmark's code is tested too). The long run
with the published figures is the benchmark itself:
``.venv/bin/python bench/serve_load.py``.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "serve_load.py"
MAX_QUEUE, MAX_BATCH, MAX_CONNECTIONS, IDLE_TIMEOUT = 4, 2, 16, 2.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


serve_load = _load_bench()


@pytest.fixture(scope="module")
def server(tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`bpo serve`: 4 waiting + 2 generating at most, 16 connections, 2 s idle timeout.

    Teardown checks a clean exit on SIGTERM and not one traceback on stderr
    (clients that hang up or stall are no server error).
    """
    stderr_path = tmp_path_factory.mktemp("serve-load") / "stderr.txt"
    options = ["--served-model-name", serve_load.MODEL_NAME]
    options += ["--max-queue", str(MAX_QUEUE), "--max-batch", str(MAX_BATCH)]
    options += ["--max-connections", str(MAX_CONNECTIONS), "--idle-timeout", str(IDLE_TIMEOUT)]
    with stderr_path.open("w") as stderr:
        process = serve_load.start_server(tiny_llava_path, options, stderr=stderr)
        try:
            yield process
        finally:
            status = process.stop()
    log = stderr_path.read_text()
    assert status == 0, log
    assert "Traceback" not in log


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    return serve_load.request_bodies(max_tokens=8, image_side=32)


def test_a_bounded_load_is_answered_in_full(server: Any, bodies: list[bytes]) -> None:
    # No more clients than the queue holds: it is never full, so every answer is 200.
    load = serve_load.run_clients(server.url, bodies, clients=MAX_QUEUE, seconds=2)
    assert load.errors == {}
    assert load.bad_answers == 0
    assert set(load.statuses) == {200}
    assert load.answered >= 4


def test_overload_answers_429_and_the_queue_stays_bounded(server: Any, bodies: list[bytes]) -> None:
    with serve_load.Sampler(server.popen.pid, server.url, interval=0.05) as sampler:
        sampler.phase = "overload"
        # More clients than the server holds (4 queued + 2 generating).
        load = serve_load.run_clients(server.url, bodies, clients=12, seconds=2)
    assert load.errors == {}
    assert load.bad_answers == 0  # every 429 came with Retry-After
    assert load.statuses[429] > 0
    assert load.statuses[200] > 0
    assert set(load.statuses) == {200, 429}
    queued = sampler.of("overload", "queued")
    assert queued
    assert max(queued) <= MAX_QUEUE
    status, _ = serve_load.one_request(server.url, bodies[0])
    assert status == 200


def test_idle_connections_cannot_exhaust_the_server(server: Any, bodies: list[bytes]) -> None:
    threads_before = serve_load.proc_status(server.popen.pid)["Threads"]
    # More than the cap, few enough that the request behind waits one idle timeout.
    opened = time.monotonic()
    idle = serve_load.hold_idle_connections(server.url, MAX_CONNECTIONS + 8)
    try:
        time.sleep(0.2)
        # One handler thread per accepted connection, no more than the cap.
        assert serve_load.proc_status(server.popen.pid)["Threads"] <= (
            threads_before + MAX_CONNECTIONS
        )
        # Behind them, a request waits for the idle ones to time out, then is served.
        status, _ = serve_load.one_request(server.url, bodies[0])
        assert status == 200
        assert time.monotonic() - opened >= IDLE_TIMEOUT
        # The server closed the silent connections it accepted (EOF, not a timeout here).
        idle[0].settimeout(10)
        assert idle[0].recv(1) == b""
    finally:
        for connection in idle:
            connection.close()


def test_a_stalled_body_is_answered_408_and_closed(server: Any) -> None:
    host, port = socket.getaddrinfo(*server.address, socket.AF_INET)[0][4][:2]
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
        start = time.monotonic()
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - start >= IDLE_TIMEOUT * 0.9


@pytest.mark.slow
def test_the_benchmark_passes_its_own_checks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(serve_load, "RESULTS", tmp_path / "serve_load.json")
    argv = ["--clients", "4", "--seconds", "3", "--overload-clients", "16"]
    argv += ["--overload-seconds", "3", "--idle-connections", "64"]
    assert serve_load.main(argv) == 0
    assert (tmp_path / "serve_load.json").exists()
