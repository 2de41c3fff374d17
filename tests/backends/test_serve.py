"""`bpo serve` as its own process: the openai backend and the official client talk to it.

Also, in-process, what a real model cannot show on cue: a batch that fails, and
how images are decoded. The load and the connection limits: test_serve_load.py.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bpo.backends import GenerationRequest
from bpo.backends.base import Completion, image_data_url
from bpo.backends.hf import HFBackend
from bpo.backends.openai import OpenAIBackend
from bpo.backends.server import ApiError, ChatCompletionServer, _decode_image
from bpo.cli import main
from bpo.data.images import to_rgb
from bpo.errors import BpoError

# The official client (a dev dependency) checks protocol conformance.
openai = pytest.importorskip("openai")

MODEL = "tiny-llava"
Process = Any  # conftest.Process: a server process with .url and .api_key


def chat(content: Any, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def post(server: Process, body: Any, *, key: str | None = "") -> httpx.Response:
    key = server.api_key if key == "" else key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.url}/v1/chat/completions", content=data, headers=headers, timeout=60
    )


def test_openai_backend_through_bpo_serve_matches_local_generation(
    served: dict[str, Process],
    tiny_llava_path: Path,
    photo_by_name: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVE_KEY", served["main"].api_key)
    images = [photo_by_name(name).resize((64, 64)) for name in ("astronaut", "chelsea", "coffee")]
    requests = [
        GenerationRequest(
            [{"role": "user", "content": f"Describe picture {i}."}],
            image=image,
            max_new_tokens=6,
            temperature=0,
        )
        for i, image in enumerate(images)
    ]
    remote = OpenAIBackend(MODEL, base_url=f"{served['main'].url}/v1", api_key_env="SERVE_KEY")
    try:
        texts = remote.generate(requests)
    finally:
        remote.close()
    # Greedy: the server (batching whatever arrives together) gives what local generation gives,
    # so prompt, image pixels and settings survived the trip.
    assert texts == HFBackend(tiny_llava_path).generate(requests)


def test_official_openai_client(served: dict[str, Process], photo: Any) -> None:
    server = served["main"]
    small = photo.resize((128, 128))  # under the main server's 200 kB body limit
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    assert [model.id for model in client.models.list()] == [MODEL]
    response = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in the picture?"},
                    {"type": "image_url", "image_url": {"url": image_data_url(small)}},
                ],
            }
        ],
        max_tokens=5,
        temperature=0,
        seed=3,
    )
    choice = response.choices[0]
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert response.usage is not None
    assert 1 <= response.usage.completion_tokens <= 5
    assert response.usage.prompt_tokens > 16  # the image alone is 16 tokens


def test_official_client_errors(served: dict[str, Process]) -> None:
    base_url = f"{served['main'].url}/v1"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=base_url, api_key=served["main"].api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_http_errors(served: dict[str, Process]) -> None:
    server = served["main"]
    assert post(server, chat("hi"), key=None).status_code == 401
    assert post(server, chat("hi"), key="wrong").status_code == 401
    malformed = post(server, b'{"model": "tiny-llava", "messages": [')
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["error"]["message"]
    assert post(server, b"[" * 100_000).status_code == 400  # nesting too deep to parse
    remote_image = post(
        server, chat([{"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}}])
    )
    assert remote_image.status_code == 400
    assert "not fetched" in remote_image.json()["error"]["message"]
    not_an_image = post(
        server, chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    )
    assert not_an_image.status_code == 400
    assert post(server, chat("hi", n=2)).status_code == 400
    assert post(server, chat("hi", temperature=-1)).status_code == 400
    # torch cannot seed past 2**64 - 1: refused here, not a 500 for the whole batch.
    assert post(server, chat("hi", seed=2**64)).status_code == 400
    assert post(server, chat("hi", seed=2**64 - 1, max_tokens=2)).status_code == 200
    assert post(server, {**chat("hi"), "model": "other"}).status_code == 404
    too_big = post(server, chat("x" * 300_000))
    assert too_big.status_code == 413
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/nothing-here").status_code == 404


def address(server: Process) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


@pytest.mark.parametrize(("key", "status"), [("test-key-not-secret", 413), ("wrong", 401)])
def test_a_refused_body_is_answered_not_reset(
    served: dict[str, Process], key: str, status: int
) -> None:
    # 8 MB, far more than the socket buffers: unread, it used to cost the client a
    # reset (BrokenPipeError) instead of the answer.
    connection = http.client.HTTPConnection(*address(served["main"]), timeout=30)
    body = json.dumps(chat("x" * 8_000_000)).encode()
    connection.request(
        "POST", "/v1/chat/completions", body=body, headers={"Authorization": f"Bearer {key}"}
    )
    response = connection.getresponse()
    assert response.status == status
    assert json.loads(response.read())["error"]["code"] == status
    assert response.headers["Connection"] == "close"


def raw_exchange(server: Process, head: str, body: bytes | None = None) -> bytes:
    """Send a request head (and, after the server's first answer, `body`); all it answers.

    Reads until the server closes the connection (send ``Connection: close``).
    """
    with socket.create_connection(address(server), timeout=30) as connection:
        connection.sendall(head.encode("latin-1"))
        answer = connection.recv(65536)
        if body is not None:
            connection.sendall(body)
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("key", "length", "status"),
    [("test-key-not-secret", 8_000_000, b"413"), ("wrong", 100, b"401"), (None, 100, b"401")],
)
def test_expect_100_continue_is_refused_before_the_body(
    served: dict[str, Process], key: str | None, length: int, status: bytes
) -> None:
    authorization = f"Authorization: Bearer {key}\r\n" if key else ""
    answer = raw_exchange(
        served["main"],
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{authorization}"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n",
    )
    # A final answer instead of "100 Continue": the client never sends the body.
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert b"100 Continue" not in answer


def test_expect_100_continue_then_a_body_that_is_welcome(served: dict[str, Process]) -> None:
    body = json.dumps(chat("hi", max_tokens=2)).encode()
    answer = raw_exchange(
        served["main"],
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {served['main'].api_key}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body,
    )
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert b'"chat.completion"' in answer


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(IPv4 address, port) of each TCP socket process `pid` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # closed in the meantime
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and inode in inodes:  # 0A: LISTEN
            hex_address, hex_port = local.split(":")
            address = socket.inet_ntoa(bytes.fromhex(hex_address)[::-1])  # little-endian
            found.append((address, int(hex_port, 16)))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_binds_loopback_unless_told(served: dict[str, Process]) -> None:
    # The fixture starts `bpo serve` without --host: it must listen on 127.0.0.1 only.
    for server in served.values():
        assert listening_addresses(server.popen.pid) == [("127.0.0.1", address(server)[1])]


def test_a_full_queue_answers_429(served: dict[str, Process]) -> None:
    # One request generating, one waiting: the rest of a burst is turned away.
    server = served["queue"]
    body = chat("Tell me a long story.", max_tokens=150, temperature=0)
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: post(server, body, key=None), range(6)))
    statuses = sorted(response.status_code for response in responses)
    assert 429 in statuses
    assert 200 in statuses
    rejected = next(response for response in responses if response.status_code == 429)
    assert rejected.headers["Retry-After"] == "1"


def test_the_openai_backend_rides_out_a_full_queue(served: dict[str, Process]) -> None:
    # 429s are retried after Retry-After, so every request ends with a text.
    remote = OpenAIBackend(MODEL, base_url=f"{served['queue'].url}/v1", concurrency=4)
    requests = [
        GenerationRequest([{"role": "user", "content": f"story {i}"}], max_new_tokens=40)
        for i in range(4)
    ]
    try:
        assert len(remote.generate(requests)) == 4
    finally:
        remote.close()


def test_bpo_serve_on_a_missing_model_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "bpo serve: error:" in err
    assert "Traceback" not in err


def test_openai_backend_without_the_key_is_a_bpo_error(served: dict[str, Process]) -> None:
    remote = OpenAIBackend(MODEL, base_url=f"{served['main'].url}/v1", api_key_env="NO_SUCH_VAR")
    try:
        with pytest.raises(BpoError, match="HTTP 401"):
            remote.generate([GenerationRequest([{"role": "user", "content": "hi"}])])
    finally:
        remote.close()


# --- in-process: a batch that fails, images ------------------------------------------------


class GatedBackend:
    """Echoes each prompt; fails a batch holding "boom"; its first call waits for `gate`."""

    is_vision = False

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.batches: list[list[str]] = []

    def complete(
        self, requests: Sequence[GenerationRequest], *, progress: bool = False
    ) -> list[Completion]:
        texts = [request.messages[-1]["content"] for request in requests]
        if not self.started.is_set():
            self.started.set()
            self.gate.wait(30)
        self.batches.append(texts)
        if "boom" in texts:
            raise ValueError("boom")
        return [Completion(text, 1, 1, "stop") for text in texts]


@pytest.fixture
def gated_server() -> Iterator[tuple[ChatCompletionServer, GatedBackend]]:
    backend = GatedBackend()
    server = ChatCompletionServer(backend, model_name="echo", port=0, max_batch=8)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, backend
    finally:
        backend.gate.set()
        server.shutdown()
        server.close()
        thread.join(10)


def test_one_failing_request_does_not_fail_its_batch(
    gated_server: tuple[ChatCompletionServer, GatedBackend],
) -> None:
    server, backend = gated_server

    def send(text: str) -> httpx.Response:
        body = {"model": "echo", "messages": [{"role": "user", "content": text}]}
        return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)

    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(send, "hold")  # the worker takes it and waits on the gate
        assert backend.started.wait(10)
        futures = {text: pool.submit(send, text) for text in ("ok-1", "boom", "ok-2")}
        deadline = time.monotonic() + 10
        while server.jobs.qsize() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        backend.gate.set()
        responses = {text: future.result() for text, future in futures.items()}
        assert first.result().status_code == 200
    # The three were generated together, failed together, then retried one by one.
    assert sorted(backend.batches[1]) == ["boom", "ok-1", "ok-2"]
    assert responses["boom"].status_code == 500
    for text in ("ok-1", "ok-2"):
        assert responses[text].status_code == 200
        assert responses[text].json()["choices"][0]["message"]["content"] == text


def data_url(image: Any, format: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_sent_image_decodes_like_a_loaded_file(photo: Any) -> None:
    from PIL import Image

    # Half-transparent: alpha over white (as load_image does), not over black.
    rgba = photo.resize((32, 32)).convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 128))
    decoded = _decode_image(data_url(rgba, "PNG"))
    assert decoded.mode == "RGB"
    assert list(decoded.getdata()) == list(to_rgb(rgba).getdata())


@pytest.mark.parametrize("format", ["BMP", "TIFF", "PPM"])
def test_image_formats_outside_openais_list_are_refused(photo: Any, format: str) -> None:
    with pytest.raises(ApiError, match="not an image in a format bpo reads") as refused:
        _decode_image(data_url(photo.resize((16, 16)), format))
    assert refused.value.status == 400


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    from PIL import Image

    # 64 Mpx of one colour (over our 50 Mpx, under PIL's own limit): a few kB of PNG,
    # 192 MB once decoded as RGB.
    bomb = data_url(Image.new("1", (8_000, 8_000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ApiError, match="pixels") as refused:
        _decode_image(bomb)
    assert refused.value.status == 400
