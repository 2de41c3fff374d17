"""Generation through any OpenAI-compatible ``/v1/chat/completions`` server.

vLLM (`vllm serve`), TGI, SGLang, `bpo serve` and hosted APIs all speak this
protocol. Requests run in parallel threads (bounded by `concurrency`) over one
httpx connection pool; images travel as base64 PNG data URLs.

Failures: 429, 408 and 5xx responses, timeouts, dropped connections and
malformed bodies are retried with exponential backoff and jitter (a 429's
``Retry-After`` is honoured); other 4xx are the caller's mistake and fail at
once. What still fails after the retries is a `BpoError` naming the server and
the cause. The API key is read from an environment variable and never logged.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any

from bpo.backends.base import GenerationRequest, check_request, openai_messages
from bpo.errors import BpoError, ConfigError

# A server asking for a longer pause than this is effectively down for this run.
_MAX_RETRY_AFTER = 120.0
_RETRIED_STATUS = {408, 429}


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _error_message(response: Any) -> str:
    """The server's own error message (OpenAI error JSON), else the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200].strip() or response.reason_phrase


class OpenAIBackend:
    """Generates through an OpenAI-compatible chat-completions endpoint.

    Args:
        model: the model name the server knows (the request's ``model`` field).
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: the environment variable holding the API key; when it is
            unset no ``Authorization`` header is sent (local servers need none).
        concurrency: the most requests in flight at once.
        timeout: seconds to wait for one response.
        max_retries: retries after the first attempt, on transient failures.
        backoff: the first retry's delay in seconds; it doubles each retry.
        max_backoff: the cap on the exponential delay, in seconds.

    Seeds are sent per request (``seed``), so a request's text does not depend on
    the other requests wherever the server honours seeds (vLLM does).
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        self.model_name = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        headers = {}
        api_key = os.environ.get(api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bpo-openai")
        self._closed = threading.Event()

    def __repr__(self) -> str:
        # Never the headers: they hold the API key.
        return f"OpenAIBackend(model={self.model_name!r}, url={self.url!r})"

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: bool = False
    ) -> list[str]:
        """One text per request, in order; the first request that fails for good raises."""
        from tqdm.auto import tqdm

        for request in requests:
            check_request(request)
        futures: dict[Future[str], int] = {
            self._pool.submit(self._complete, request): index
            for index, request in enumerate(requests)
        }
        texts: list[str] = [""] * len(requests)
        with tqdm(
            total=len(requests), desc="generating", unit="sample", disable=not progress
        ) as bar:
            try:
                for future in as_completed(futures):
                    texts[futures[future]] = future.result()
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return texts

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_name,
            "messages": openai_messages(request),
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "n": 1,
        }
        if request.seed is not None:
            payload["seed"] = request.seed
        return payload

    def _complete(self, request: GenerationRequest) -> str:
        """One request, retried on transient failures; a BpoError when they persist."""
        import httpx

        payload = self._payload(request)
        problem = ""
        for attempt in range(self.max_retries + 1):
            if self._closed.is_set():
                raise BpoError(f"{self.url}: the backend was closed")
            wait: float | None = None
            try:
                response = self._client.post(self.url, json=payload)
            except httpx.TimeoutException:
                problem = f"no response within {self.timeout:g}s"
            except httpx.TransportError as error:
                problem = f"connection failed ({type(error).__name__}: {error})"
            else:
                status = response.status_code
                if status in _RETRIED_STATUS or status >= 500:
                    problem = f"HTTP {status}: {_error_message(response)}"
                    wait = _retry_after(response.headers.get("retry-after"))
                elif status >= 400:
                    raise BpoError(f"{self.url}: HTTP {status}: {_error_message(response)}")
                else:
                    try:
                        return self._text(response.json())
                    except (ValueError, KeyError, IndexError, TypeError) as error:
                        problem = f"malformed response ({type(error).__name__}: {error})"
            if attempt < self.max_retries:
                if wait is None:
                    # Exponential backoff with jitter: clients that failed together
                    # do not all come back at the same instant.
                    delay = min(self.max_backoff, self.backoff * 2**attempt)
                    wait = delay * random.uniform(0.5, 1.0)
                time.sleep(wait)
        raise BpoError(f"{self.url}: {problem} (gave up after {self.max_retries + 1} attempts)")

    @staticmethod
    def _text(data: Any) -> str:
        content = data["choices"][0]["message"]["content"]
        if content is None:  # a refusal or a tool call: no text
            return ""
        if not isinstance(content, str):
            raise TypeError(f"message content is {type(content).__name__}, not a string")
        return content.strip()

    def close(self) -> None:
        """Stop pending requests and close the connections."""
        self._closed.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
