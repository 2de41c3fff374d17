"""The openai backend against a real misbehaving server process (fault_server.py)."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from typing import Any

import httpx
import pytest

from bpo.backends import GenerationRequest
from bpo.backends.openai import OpenAIBackend
from bpo.errors import BpoError


def ask(text: str, **settings: Any) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": text}], **settings)


def backend(url: str, model: str, **options: Any) -> OpenAIBackend:
    options = {"max_retries": 3, "backoff": 0.01, "timeout": 10.0, **options}
    return OpenAIBackend(model, base_url=f"{url}/v1", **options)


def attempts(url: str, model: str, text: str) -> int:
    response = httpx.get(f"{url}/attempts", params={"key": f"{model}/{text}"})
    return int(response.json()["attempts"])


def test_request_fields_pass_through(
    fault_server: str, photo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.setenv("FAULT_KEY", "sk-test-123")
    image = photo.resize((40, 30))
    request = GenerationRequest(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is shown?"}],
        image=image,
        max_new_tokens=77,
        temperature=0.7,
        top_p=0.8,
        seed=1234,
    )
    client = backend(fault_server, "echo", api_key_env="FAULT_KEY")
    echoed = json.loads(client.generate([request])[0])
    client.close()
    body = echoed["body"]
    assert echoed["authorization"] == "Bearer sk-test-123"
    assert "sk-test-123" not in repr(client)
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (
        77,
        0.7,
        0.8,
        1234,
    )
    system, user = body["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    image_part, text_part = user["content"]
    assert text_part == {"type": "text", "text": "What is shown?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.tobytes() == image.tobytes()  # PNG: lossless


def test_no_key_no_header_and_no_seed_when_unset(
    fault_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNSET_KEY", raising=False)
    client = backend(fault_server, "echo", api_key_env="UNSET_KEY")
    echoed = json.loads(client.generate([ask("plain text")])[0])
    client.close()
    assert echoed["authorization"] is None
    assert "seed" not in echoed["body"]
    assert echoed["body"]["messages"] == [{"role": "user", "content": "plain text"}]


def test_a_500_is_retried(fault_server: str) -> None:
    client = backend(fault_server, "flaky-500")
    assert client.generate([ask("retry 500")]) == ["ok after 2"]
    assert attempts(fault_server, "flaky-500", "retry 500") == 2


def test_a_429_waits_for_retry_after(fault_server: str) -> None:
    client = backend(fault_server, "rate-limit")
    start = time.perf_counter()
    assert client.generate([ask("retry 429")]) == ["ok after 2"]
    assert time.perf_counter() - start >= 1.0  # Retry-After: 1, not the 0.01 s backoff
    assert attempts(fault_server, "rate-limit", "retry 429") == 2


def test_persistent_5xx_gives_a_clear_error(fault_server: str) -> None:
    client = backend(fault_server, "always-503", max_retries=2)
    with pytest.raises(BpoError, match=r"HTTP 503: overloaded \(gave up after 3 attempts\)"):
        client.generate([ask("always down")])
    assert attempts(fault_server, "always-503", "always down") == 3


def test_a_timeout_gives_a_clear_error(fault_server: str) -> None:
    client = backend(fault_server, "slow", timeout=0.3, max_retries=1)
    start = time.perf_counter()
    with pytest.raises(BpoError, match=r"no response within 0.3s"):
        client.generate([ask("too slow")])
    assert time.perf_counter() - start < 2.5  # did not wait for the 3 s answers


def test_malformed_json_is_retried_then_a_clear_error(fault_server: str) -> None:
    client = backend(fault_server, "malformed", max_retries=2)
    with pytest.raises(BpoError, match="malformed response"):
        client.generate([ask("garbage")])
    assert attempts(fault_server, "malformed", "garbage") == 3


def test_a_client_error_is_not_retried(fault_server: str) -> None:
    client = backend(fault_server, "bad-request")
    with pytest.raises(BpoError, match="HTTP 400: max_tokens is too large"):
        client.generate([ask("bad once")])
    assert attempts(fault_server, "bad-request", "bad once") == 1


def test_connection_refused_gives_a_clear_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = backend(f"http://127.0.0.1:{port}", "any", max_retries=1)
    with pytest.raises(BpoError, match="connection failed"):
        client.generate([ask("anyone?")])


def test_concurrency_is_bounded_and_order_kept(fault_server: str) -> None:
    client = backend(fault_server, "sleepy", concurrency=3)
    texts = [f"question {i}" for i in range(9)]
    start = time.perf_counter()
    answers = client.generate([ask(text) for text in texts], progress=True)
    elapsed = time.perf_counter() - start
    client.close()
    assert answers == [f"sleepy/{text}" for text in texts]
    peak = httpx.get(f"{fault_server}/max-in-flight").json()["max_in_flight"]
    assert 1 < peak <= 3
    assert elapsed < 9 * 0.2  # in parallel, not one after another
