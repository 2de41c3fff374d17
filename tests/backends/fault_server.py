"""A chat-completions server that misbehaves on purpose, for the openai backend's tests.

Run it as its own process (``python fault_server.py``): it binds a free loopback
port and prints ``listening on http://127.0.0.1:PORT``. The request's ``model``
picks the behaviour; the first user message's text names the scenario, so each
test counts its own attempts (``GET /attempts?key=MODEL/TEXT``).

- ``echo``: 200, the content is the request body (and whether a key came) as JSON.
- ``flaky-500``: 500 on the first attempt, then 200.
- ``rate-limit``: 429 with ``Retry-After: 1`` on the first attempt, then 200.
- ``always-503``: 503 every time.
- ``slow``: answers after 3 s.
- ``malformed``: 200 with a body that is not JSON.
- ``bad-request``: 400 with an OpenAI-style error.
- ``sleepy``: 200 after 0.2 s; ``GET /max-in-flight`` reports the peak concurrency.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

attempts: Counter[str] = Counter()
lock = threading.Lock()
in_flight = 0
max_in_flight = 0


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": "fault",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def scenario(body: dict[str, Any]) -> str:
    for message in body["messages"]:
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if p["type"] == "text")
            return f"{body['model']}/{content}"
    return body["model"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(payload).encode(), headers)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/attempts":
            key = parse_qs(url.query)["key"][0]
            self.send_json(200, {"attempts": attempts[key]})
        elif url.path == "/max-in-flight":
            self.send_json(200, {"max_in_flight": max_in_flight})
        else:
            self.send_json(404, {"error": {"message": "no such endpoint"}})

    def do_POST(self) -> None:
        global in_flight, max_in_flight
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = scenario(body)
        with lock:
            attempts[key] += 1
            attempt = attempts[key]
        model = body["model"]
        if model == "echo":
            echoed = {"body": body, "authorization": self.headers.get("Authorization")}
            self.send_json(200, completion(json.dumps(echoed)))
        elif model == "flaky-500" and attempt == 1:
            self.send_json(500, {"error": {"message": "boom"}})
        elif model == "rate-limit" and attempt == 1:
            self.send_json(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
        elif model == "always-503":
            self.send_json(503, {"error": {"message": "overloaded"}})
        elif model == "slow":
            time.sleep(3)
            self.send_json(200, completion("late"))
        elif model == "malformed":
            self.send(200, b"this is not json {")
        elif model == "bad-request":
            self.send_json(400, {"error": {"message": "max_tokens is too large"}})
        elif model == "sleepy":
            with lock:
                in_flight += 1
                max_in_flight = max(max_in_flight, in_flight)
            time.sleep(0.2)
            with lock:
                in_flight -= 1
            self.send_json(200, completion(key))
        else:
            self.send_json(200, completion(f"ok after {attempt}"))


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
