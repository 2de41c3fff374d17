"""`bpo serve` as its own process: the openai backend and the official client talk to it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from bpo.backends import GenerationRequest
from bpo.backends.base import image_data_url
from bpo.backends.hf import HFBackend
from bpo.backends.openai import OpenAIBackend
from bpo.cli import main
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
    assert post(server, {**chat("hi"), "model": "other"}).status_code == 404
    too_big = post(server, chat("x" * 300_000))
    assert too_big.status_code == 413
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/nothing-here").status_code == 404


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
