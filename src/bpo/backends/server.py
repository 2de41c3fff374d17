"""An OpenAI-compatible chat-completions server in front of a local model.

Endpoints: ``POST /v1/chat/completions`` (text and ``image_url`` data-URL parts,
n=1, no streaming), ``GET /v1/models`` and ``GET /health``.

Handler threads (`http.server.ThreadingHTTPServer`, the standard library: no web
framework needed for three endpoints) validate requests and put them on a
bounded queue; one worker thread takes whatever is queued, up to `max_batch`,
and generates it as one batch. Nothing grows with the load:

- A full queue answers 429 with ``Retry-After``, so clients back off instead of
  piling up.
- At most `max_connections` connections have a handler thread; further ones wait
  in the kernel's listen backlog until one closes. A connection idle (or a body
  stalled) for `idle_timeout` seconds is closed, so idle clients cannot hold
  every slot.
- A request the headers already refuse (401, 404, 411, 413) is answered without
  reading its body: before the body is sent when the client asked
  ``Expect: 100-continue``, otherwise with a bounded "lingering close" (see
  `_Handler._linger`).
- A batch that fails is retried one request at a time, so one bad request
  cannot fail the requests batched with it.

Remote image URLs are refused: the server never fetches from the network on a
client's behalf.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import queue
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from bpo.backends.base import Completion, GenerationRequest
from bpo.errors import BpoError, ImageError

# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS, ~89 Mpx) is
# only a warning; a request that decodes to more than this is refused outright.
MAX_IMAGE_PIXELS = 50_000_000
ROLES = ("system", "user", "assistant")
# The image formats OpenAI's chat API accepts (PNG, JPEG, WEBP, non-animated GIF).
# Pillow would open many more, some through external programs (EPS runs
# Ghostscript), which a server should not do on a stranger's bytes.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# torch.Generator.manual_seed takes seeds in [-2**63, 2**64 - 1]; outside it raises,
# which would fail the whole batch the request is in.
SEED_RANGE = (-(2**63), 2**64 - 1)
# How long a refused request's unread body is read and discarded before the
# connection closes (nginx's lingering_timeout is 5 s; loopback and LAN clients
# finish far sooner, and a client still sending after this is cut off).
LINGER_SECONDS = 2.0


class CompletingBackend(Protocol):
    """What the server needs from a backend: `HFBackend.complete`."""

    is_vision: bool

    def complete(
        self, requests: Sequence[GenerationRequest], *, progress: bool = False
    ) -> list[Completion]: ...


class ApiError(Exception):
    """A request the server refuses, with its HTTP status and OpenAI error type."""

    def __init__(self, status: HTTPStatus, message: str, error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


@dataclass
class _Job:
    request: GenerationRequest
    done: threading.Event = field(default_factory=threading.Event)
    completion: Completion | None = None
    error: ApiError | None = None


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{key!r} must be a number in [{low}, {high}]")
    return float(value)


def _decode_image(url: Any) -> Any:
    """An RGB PIL image from a base64 data URL; anything else is a 400.

    Decoded by `bpo.data.images.decode_image`, as image files are, so an image sent
    here gives the same pixels (alpha over white) and the same refusals.
    """
    from bpo.data.images import decode_image

    if not isinstance(url, str):
        raise ApiError(HTTPStatus.BAD_REQUEST, "image_url.url must be a string")
    if not url.startswith("data:"):
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            "remote image URLs are not fetched; send the image as a base64 data URL "
            "(data:image/png;base64,...)",
        )
    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ApiError(HTTPStatus.BAD_REQUEST, "the image must be a data:image/...;base64 URL")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error as error:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"unreadable image: {error}") from None
    try:
        return decode_image(io.BytesIO(data), max_pixels=MAX_IMAGE_PIXELS, formats=IMAGE_FORMATS)
    except ImageError as error:
        raise ApiError(HTTPStatus.BAD_REQUEST, error.reason) from None


def _messages(raw: Any, *, is_vision: bool) -> tuple[list[dict[str, str]], Any]:
    """Our prompt form (string contents) and the image, from OpenAI-style messages."""
    if not isinstance(raw, list) or not raw:
        raise ApiError(HTTPStatus.BAD_REQUEST, "'messages' must be a non-empty list")
    messages: list[dict[str, str]] = []
    image = None
    first_user = True
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"message {i} needs a role in {ROLES}")
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind == "image_url":
                    if not (message["role"] == "user" and first_user) or image is not None:
                        raise ApiError(
                            HTTPStatus.BAD_REQUEST,
                            "one image at most, in the first user message",
                        )
                    if not is_vision:
                        raise ApiError(HTTPStatus.BAD_REQUEST, "this model is text-only")
                    image_url = part.get("image_url")
                    url = image_url.get("url") if isinstance(image_url, dict) else image_url
                    image = _decode_image(url)
                else:
                    raise ApiError(HTTPStatus.BAD_REQUEST, f"message {i}: unsupported content part")
            content = "\n".join(texts)
        if not isinstance(content, str):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"message {i}: content must be text or parts")
        if message["role"] == "user":
            first_user = False
        messages.append({"role": message["role"], "content": content})
    if messages[-1]["role"] != "user":
        raise ApiError(HTTPStatus.BAD_REQUEST, "the last message must come from the user")
    return messages, image


class ChatCompletionServer(ThreadingHTTPServer):
    """The HTTP server, its request queue and the worker that batches generation.

    Args:
        backend: generates batches (`HFBackend`).
        model_name: the name clients must send as ``model``.
        host, port: where to listen (port 0: any free port).
        max_batch: the most requests generated together.
        max_queue: the most requests waiting; more are answered 429.
        max_body_bytes: the largest request body; larger are answered 413.
        max_tokens_limit: the largest ``max_tokens`` a client may ask for.
        api_key: when set, requests to /v1 need ``Authorization: Bearer <key>``.
        max_connections: the most connections served at once (one thread each);
            more wait in the listen backlog.
        idle_timeout: seconds a connection may stay silent (between requests or
            within one) before it is closed.
    """

    daemon_threads = True
    # The listen backlog, where connections over max_connections wait (socketserver's
    # default of 5 drops a burst's SYNs, costing clients a 1 s retransmit).
    request_queue_size = 128

    def __init__(
        self,
        backend: CompletingBackend,
        *,
        model_name: str,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_batch: int = 8,
        max_queue: int = 64,
        max_body_bytes: int = 20 * 1024 * 1024,
        max_tokens_limit: int = 4096,
        api_key: str | None = None,
        max_connections: int = 256,
        idle_timeout: float = 60.0,
    ) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__((host, port), _Handler)
        self.backend = backend
        self.model_name = model_name
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.max_tokens_limit = max_tokens_limit
        self.api_key = api_key
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.created = int(time.time())
        self.jobs: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="bpo-serve-worker", daemon=True)
        self._worker.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection once a handler slot is free (at most max_connections)."""
        # Wait in short steps (serve_forever takes an OSError here as "nothing to
        # accept" and polls again), so shutdown() is never stuck behind a full house.
        if not self._slots.acquire(timeout=0.5):
            raise OSError("every connection slot is busy")
        try:
            return super().get_request()
        except BaseException:
            self._slots.release()
            raise

    def shutdown_request(self, request: Any) -> None:
        """Close a connection and free its slot (socketserver calls this once per accept)."""
        try:
            super().shutdown_request(request)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up or stalled is no server error: no traceback for it."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def _work(self) -> None:
        """Take what is queued (up to max_batch) and generate it as one batch."""
        while not self._stopping.is_set():
            try:
                jobs = [self.jobs.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            self._generate(jobs)
            for job in jobs:
                job.done.set()

    def _generate(self, jobs: list[_Job]) -> None:
        """Fill each job's completion or error; a failed batch is retried one by one."""
        try:
            completions = self.backend.complete([job.request for job in jobs])
        except Exception as error:  # a failed batch must not stop the server
            if len(jobs) > 1:
                # One bad request must not fail the others batched with it.
                for job in jobs:
                    self._generate([job])
                return
            if isinstance(error, BpoError):
                jobs[0].error = ApiError(HTTPStatus.BAD_REQUEST, str(error))
            else:
                jobs[0].error = ApiError(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    f"generation failed: {type(error).__name__}: {error}",
                    "server_error",
                )
        else:
            for job, completion in zip(jobs, completions, strict=True):
                job.completion = completion

    def submit(self, request: GenerationRequest) -> Completion:
        """Queue one request and wait for its completion (429 when the queue is full)."""
        if self._stopping.is_set():
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "the server is shutting down")
        job = _Job(request)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise ApiError(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"the queue is full ({self.jobs.maxsize} requests waiting); retry later",
                "rate_limit_error",
            ) from None
        while not job.done.wait(timeout=0.5):
            if self._stopping.is_set():
                raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "the server is shutting down")
        if job.error is not None:
            raise job.error
        assert job.completion is not None
        return job.completion

    def chat_request(self, body: Any) -> GenerationRequest:
        """A `GenerationRequest` from a chat-completions body, or an ApiError."""
        if not isinstance(body, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str):
            raise ApiError(HTTPStatus.BAD_REQUEST, "'model' is required")
        if model != self.model_name:
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                f"model {model!r} not found; this server serves {self.model_name!r}",
                "model_not_found",
            )
        if body.get("stream"):
            raise ApiError(HTTPStatus.BAD_REQUEST, "streaming is not supported")
        if body.get("n", 1) != 1:
            raise ApiError(HTTPStatus.BAD_REQUEST, "only n=1 is supported")
        messages, image = _messages(body.get("messages"), is_vision=self.backend.is_vision)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = GenerationRequest.max_new_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise ApiError(HTTPStatus.BAD_REQUEST, "'max_tokens' must be an integer")
        if not 1 <= max_tokens <= self.max_tokens_limit:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"'max_tokens' must be in [1, {self.max_tokens_limit}]"
            )
        seed = body.get("seed")
        if seed is not None and (
            isinstance(seed, bool)
            or not isinstance(seed, int)
            or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]
        ):
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                f"'seed' must be an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]",
            )
        return GenerationRequest(
            messages=messages,
            image=image,
            max_new_tokens=max_tokens,
            # OpenAI's ranges: temperature in [0, 2], top_p in (0, 1].
            temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
            top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
            seed=seed,
        )

    def close(self) -> None:
        """Stop the worker, answer waiting clients 503 and close the socket."""
        self._stopping.set()
        self._worker.join(timeout=60)
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ChatCompletionServer
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connections
    body_read = False

    def setup(self) -> None:
        super().setup()
        # Every read (request line, headers, body) and write waits at most this long.
        self.connection.settimeout(self.server.idle_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: a bootstrap run sends thousands of requests; errors reach the client.
        pass

    def _send(
        self, status: HTTPStatus, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: ApiError) -> None:
        headers = {}
        if error.status == HTTPStatus.TOO_MANY_REQUESTS:
            headers["Retry-After"] = "1"
        elif error.status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = "Bearer"
        payload = {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "param": None,
                "code": error.status.value,
            }
        }
        self._send(error.status, payload, headers)

    def _refuse(self, error: ApiError) -> None:
        """Answer `error` to a request whose body was not read, then close the connection."""
        self.close_connection = True
        self._send_error(error)
        self._linger()

    def _linger(self) -> None:
        """Read and discard what the client still sends, for `LINGER_SECONDS` at most.

        Closing a socket with unread data makes the kernel answer with a reset,
        and a client still writing its body then sees "connection reset" (or a
        broken pipe) instead of our 413 or 401. So, as web servers do: end our
        side (the answer is complete), drain the rest without keeping it, close.
        """
        connection = self.connection
        deadline = time.monotonic() + LINGER_SECONDS
        try:
            connection.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                connection.settimeout(left)
                if not connection.recv(65536):
                    break  # the client closed: all read
        except OSError:  # timed out, or the client reset first: nothing more to do
            pass

    def handle_expect_100(self) -> bool:
        """Refuse before the body is sent when the headers already decide (RFC 9110 10.1.1).

        Clients such as curl send ``Expect: 100-continue`` before a large body; the
        standard library's answer is always "100 Continue", which invites a body we
        are about to refuse.
        """
        if self.command == "POST":
            try:
                self._check_headers()
            except ApiError as error:
                self._refuse(error)
                return False
        return super().handle_expect_100()

    def _check_headers(self) -> int:
        """What the request line and headers decide: endpoint, key, body size (returned)."""
        path = urlsplit(self.path).path
        if path != "/v1/chat/completions":
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {path}")
        self._authorize()
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if size > self.server.max_body_bytes:
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body has {size} bytes; the limit is {self.server.max_body_bytes}",
            )
        return size

    def _authorize(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {key}"
        if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            raise ApiError(
                HTTPStatus.UNAUTHORIZED, "a valid API key is required", "authentication_error"
            )

    def _read_json(self, size: int) -> Any:
        try:
            data = self.rfile.read(size)
        except TimeoutError:
            raise ApiError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body stalled for {self.server.idle_timeout:g} s",
            ) from None
        self.body_read = True
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, bad UTF-8, deep nesting
            raise ApiError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {error}") from None

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/health":
                self._send(HTTPStatus.OK, {"status": "ok", "queued": self.server.jobs.qsize()})
            elif path == "/v1/models":
                self._authorize()
                model = {
                    "id": self.server.model_name,
                    "object": "model",
                    "created": self.server.created,
                    "owned_by": "bpo",
                }
                self._send(HTTPStatus.OK, {"object": "list", "data": [model]})
            else:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: GET {path}")
        except ApiError as error:
            self._send_error(error)

    def do_POST(self) -> None:
        self.body_read = False
        try:
            request = self.server.chat_request(self._read_json(self._check_headers()))
            completion = self.server.submit(request)
        except ApiError as error:
            if self.body_read:
                self._send_error(error)
            else:
                self._refuse(error)  # the body is still on the wire: do not read it
            return
        except Exception:  # a bug of ours: still answer, and log it
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._send_error(
                ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error", "server_error")
            )
            return
        self._send(
            HTTPStatus.OK,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.server.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": completion.text},
                        "finish_reason": completion.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "total_tokens": completion.prompt_tokens + completion.completion_tokens,
                },
            },
        )
