"""Benchmark: `bpo serve` under load, overload and a flood of idle connections.

Starts a real ``bpo serve`` process on 127.0.0.1 (the tiny random LLaVA of
`bpo.tiny_models`, or ``--model``) and drives it with client threads, each one
keep-alive `http.client` connection sending chat requests (half with a real
photo as a data URL) back to back:

1. steady: ``--clients`` clients for ``--seconds``, no more than ``--max-queue``
   (so the queue can never be full, and every answer must be 200);
2. overload: ``--overload-clients`` clients (more than it holds) for
   ``--overload-seconds``; the surplus must get 429 with ``Retry-After`` (clients
   wait ``--backoff`` s, not the second it asks, to keep the pressure on), and
   ``GET /health`` must never show more than ``--max-queue`` requests waiting;
3. idle flood: ``--idle-connections`` silent connections (more than
   ``--max-connections``): the thread count must stay bounded, and a request sent
   behind them is answered once ``--idle-timeout`` has closed them;
4. after: one more request answers 200, and nothing is left waiting.

The server's RSS and thread count are read from ``/proc/PID/status`` every
0.2 s throughout. Reports requests/s, p50/p99 latency and counts per status per
phase, and RSS at start (after warm-up), peak and end.

Usage::

    .venv/bin/python bench/serve_load.py                    # ~45 s on 2 CPU cores
    .venv/bin/python bench/serve_load.py --clients 4 --seconds 5 --overload-seconds 3

Prints a table and writes ``bench/results/serve_load.json``. Exit status 1 when a
check fails: any 5xx or connection error, a non-200 in the steady phase, no 429
under overload, a queue longer than its bound, threads past the connection cap,
RSS growth past ``--rss-growth``, or no normal answer afterwards.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import io
import json
import os
import platform
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"
MODEL_NAME = "tiny-llava"
QUESTIONS = (
    "Describe the image in detail.",
    "What objects are on the table?",
    "How many animals can you see?",
    "Is there anything unusual in this picture?",
)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


# --- the server process and what /proc says about it -------------------------------------


@dataclass
class Server:
    """A `bpo serve` process and the URL it printed."""

    popen: subprocess.Popen[str]
    url: str

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None
        return parts.hostname, parts.port

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed after 30 s)."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def start_server(
    model: str | Path, options: list[str], *, stderr: Any = None, threads: int = 1
) -> Server:
    """Start ``bpo serve --model MODEL --port 0 OPTIONS`` and wait for its URL (3 min max)."""
    argv = [sys.executable, "-m", "bpo.cli", "serve", "--model", str(model), "--port", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    popen = subprocess.Popen(
        argv + options, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # drains stdout for the server's whole life
        assert popen.stdout is not None
        for line in popen.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=180)
        except queue.Empty:
            popen.kill()
            raise RuntimeError("bpo serve printed no URL within 180 s") from None
        if line is None:
            raise RuntimeError(f"bpo serve exited with status {popen.wait()}")
        if "http://" in line:
            return Server(popen, line.split()[-1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads of a process, from /proc/PID/status (Linux)."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "Threads"):
                values[name] = int(value.split()[0])
    return values


class Sampler:
    """Samples a process's RSS and threads (and the server's queue) every `interval` s."""

    def __init__(self, pid: int, url: str | None = None, interval: float = 0.2) -> None:
        self.pid, self.url, self.interval = pid, url, interval
        self.phase = "start"
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            sample: dict[str, Any] = {"t": time.monotonic() - start, "phase": self.phase}
            sample.update(proc_status(self.pid))
            if self.url is not None:
                sample["queued"] = queued(self.url)
            self.samples.append(sample)
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def of(self, phase: str, key: str) -> list[int]:
        return [s[key] for s in self.samples if s["phase"] == phase and s.get(key) is not None]


def queued(url: str) -> int | None:
    """How many requests wait in the server's queue (``GET /health``), None if no answer."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    connection = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/health")
        return int(json.loads(connection.getresponse().read())["queued"])
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return None
    finally:
        connection.close()


# --- clients --------------------------------------------------------------------------------


def request_bodies(max_tokens: int, image_side: int = 64) -> list[bytes]:
    """Chat request bodies: each question, with and without a real photo (PNG data URL)."""
    from PIL import Image
    from skimage import data

    bodies = []
    for i, question in enumerate(QUESTIONS):
        photo = Image.fromarray(getattr(data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
        buffer = io.BytesIO()
        photo.resize((image_side, image_side)).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        with_image = [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        for content in (question, with_image):
            body = {
                "model": MODEL_NAME,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            bodies.append(json.dumps(body).encode("utf-8"))
    return bodies


@dataclass
class Load:
    """What a group of clients saw: answers by status, latencies, errors."""

    seconds: float = 0.0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    latencies: dict[int, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    bad_answers: int = 0  # a 200 without a chat completion, or a 429 without Retry-After

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> dict[str, Any]:
        ok = sorted(self.latencies.get(200, []))
        return {
            "seconds": round(self.seconds, 2),
            "requests": self.answered + sum(self.errors.values()),
            "answered_per_second": round(self.answered / self.seconds, 2) if self.seconds else 0,
            "ok_per_second": round(len(ok) / self.seconds, 2) if self.seconds else 0,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "bad_answers": self.bad_answers,
            "p50_ms_200": round(1000 * percentile(ok, 50), 1) if ok else None,
            "p99_ms_200": round(1000 * percentile(ok, 99), 1) if ok else None,
            "p50_ms_429": round(1000 * statistics.median(self.latencies[429]), 1)
            if self.latencies.get(429)
            else None,
        }


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted values."""
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def run_clients(
    url: str,
    bodies: list[bytes],
    *,
    clients: int,
    seconds: float,
    backoff: float = 0.05,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
    keepalive_expiry: float = 0.5,
) -> Load:
    """`clients` threads send `bodies` (round robin) back to back for `seconds`.

    Each client keeps one connection open and, after a 429, waits `backoff`
    seconds. Like httpx (its ``keepalive_expiry``), a client reopens a connection
    left idle for `keepalive_expiry` seconds rather than race the server's idle
    timeout; it also reopens after an error. A request started before the deadline
    is always finished: its answer (or error) is counted.
    """
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port
    load = Load()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    all_headers = {"Content-Type": "application/json", **(headers or {})}

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        sent = index
        last_answer = time.monotonic()
        while time.monotonic() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            if time.monotonic() - last_answer > keepalive_expiry:
                connection.close()  # http.client connects again on the next request
            start = time.perf_counter()
            try:
                connection.request("POST", "/v1/chat/completions", body=body, headers=all_headers)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
                with lock:
                    load.errors[type(error).__name__] += 1
                continue
            elapsed = time.perf_counter() - start
            last_answer = time.monotonic()
            with lock:
                load.statuses[response.status] += 1
                load.latencies[response.status].append(elapsed)
                load.bad_answers += not well_formed(response.status, response.headers, data)
            if response.status == 429:
                time.sleep(backoff)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.seconds = time.monotonic() - start
    return load


def well_formed(status: int, headers: Any, data: bytes) -> bool:
    """A 200 carries a chat completion, a 429 a Retry-After, any error an OpenAI error."""
    try:
        payload = json.loads(data)
        if status == 200:
            return isinstance(payload["choices"][0]["message"]["content"], str)
        if status == 429 and headers.get("Retry-After") is None:
            return False
        return isinstance(payload["error"]["message"], str)
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def hold_idle_connections(url: str, count: int) -> list[socket.socket]:
    """Open `count` connections that send nothing (the kernel completes their handshakes)."""
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port
    return [socket.create_connection((host, port), timeout=10) for _ in range(count)]


def one_request(url: str, body: bytes, timeout: float = 120) -> tuple[int, float]:
    """Status and seconds of one request on a fresh connection."""
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    start = time.perf_counter()
    try:
        connection.request("POST", "/v1/chat/completions", body=body)
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - start
    finally:
        connection.close()


# --- the benchmark ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint to serve (default: a tiny random LLaVA)")
    parser.add_argument("--clients", type=int, default=8, help="steady-phase clients")
    parser.add_argument("--seconds", type=float, default=15.0, help="steady-phase duration")
    parser.add_argument("--overload-clients", type=int, default=32)
    parser.add_argument("--overload-seconds", type=float, default=8.0)
    parser.add_argument("--backoff", type=float, default=0.05, help="client wait after a 429")
    parser.add_argument("--max-queue", type=int, default=8, help="bpo serve --max-queue")
    parser.add_argument("--max-batch", type=int, default=4, help="bpo serve --max-batch")
    parser.add_argument("--max-connections", type=int, default=48)
    parser.add_argument("--idle-timeout", type=float, default=2.0)
    parser.add_argument("--idle-connections", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument(
        "--rss-growth",
        type=float,
        default=0.25,
        help="largest allowed peak RSS over the RSS after warm-up, as a fraction (0.25: +25%%)",
    )
    args = parser.parse_args(argv)
    if args.clients > args.max_queue:
        parser.error("--clients must be at most --max-queue (the steady phase)")
    if args.overload_clients <= args.max_queue + args.max_batch:
        parser.error("--overload-clients must exceed --max-queue + --max-batch")

    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            from bpo.tiny_models import build_tiny_model

            model = build_tiny_model("llava", Path(folder) / "tiny-llava", seed=0)
        options = ["--served-model-name", MODEL_NAME, "--max-queue", str(args.max_queue)]
        options += ["--max-batch", str(args.max_batch), "--max-connections"]
        options += [str(args.max_connections), "--idle-timeout", str(args.idle_timeout)]
        stderr_path = Path(folder) / "serve.stderr"
        with stderr_path.open("w") as stderr:
            server = start_server(model, options, stderr=stderr, threads=args.threads)
            try:
                result = measure(server, args)
            finally:
                result_status = server.stop()
        server_stderr = stderr_path.read_text()
    result["exit_status_on_sigterm"] = result_status
    tracebacks = server_stderr.count("Traceback")
    result["server_tracebacks"] = tracebacks
    if result_status != 0:
        result["failures"].append(f"bpo serve exited {result_status} on SIGTERM")
    if tracebacks:
        result["failures"].append(f"{tracebacks} tracebacks on the server's stderr")
    report(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from bpo.fsio import write_text

    write_text(RESULTS, json.dumps(result, indent=2) + "\n")
    return 1 if result["failures"] else 0


def measure(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Run the four phases against `server`; the results and the failed checks."""
    bodies = request_bodies(args.max_tokens)
    url, pid = server.url, server.popen.pid
    failures: list[str] = []
    # Warm-up: every body once, one at a time (first calls allocate and compile).
    for body in bodies:
        one_request(url, body)
    with Sampler(pid, url) as sampler:
        time.sleep(0.5)  # a few samples of the idle server after warm-up
        sampler.phase = "steady"
        steady = run_clients(url, bodies, clients=args.clients, seconds=args.seconds)
        sampler.phase = "overload"
        overload = run_clients(
            url,
            bodies,
            clients=args.overload_clients,
            seconds=args.overload_seconds,
            backoff=args.backoff,
        )
        sampler.phase = "idle-flood"
        threads_before = proc_status(pid)["Threads"]
        idle = hold_idle_connections(url, args.idle_connections)
        time.sleep(0.5)  # let the server accept what it will
        threads_held = proc_status(pid)["Threads"]
        status_behind, seconds_behind = one_request(url, bodies[0])
        for connection in idle:
            connection.close()
        sampler.phase = "after"
        status_after, _ = one_request(url, bodies[1])
        time.sleep(0.5)
        queued_after = queued(url)
    phases = {"steady": steady.summary(), "overload": overload.summary()}

    for name, load in (("steady", steady), ("overload", overload)):
        server_errors = sum(n for status, n in load.statuses.items() if status >= 500)
        if server_errors:
            failures.append(f"{name}: {server_errors} answers 5xx")
        if load.errors:
            failures.append(f"{name}: connection errors {dict(load.errors)}")
        if load.bad_answers:
            failures.append(f"{name}: {load.bad_answers} malformed answers")
    if set(steady.statuses) != {200}:
        failures.append(f"steady: statuses {dict(steady.statuses)}, expected only 200")
    if not overload.statuses[429]:
        failures.append("overload: no 429")
    if not set(overload.statuses) <= {200, 429}:
        failures.append(f"overload: statuses {dict(overload.statuses)}")
    most_queued = max(sampler.of("overload", "queued"), default=None)
    if most_queued is None or most_queued > args.max_queue:
        failures.append(f"overload: {most_queued} requests queued, bound {args.max_queue}")
    # Handler threads: one per accepted connection, at most max_connections.
    if threads_held > threads_before + args.max_connections:
        failures.append(
            f"idle flood: {threads_held} threads, bound {threads_before + args.max_connections}"
        )
    if status_behind != 200:
        failures.append(f"idle flood: the request behind the idle connections got {status_behind}")
    if status_after != 200 or queued_after != 0:
        failures.append(f"after: status {status_after}, {queued_after} still queued")

    rss = sampler.of("start", "VmRSS") or sampler.of("steady", "VmRSS")
    rss_start = rss[-1]
    rss_all = [s["VmRSS"] for s in sampler.samples]
    rss_peak, rss_end = max(rss_all), rss_all[-1]
    if rss_peak > rss_start * (1 + args.rss_growth):
        failures.append(
            f"RSS peaked at {rss_peak / 1024:.0f} MiB, over {1 + args.rss_growth:g}x "
            f"the {rss_start / 1024:.0f} MiB after warm-up"
        )
    rss_by_phase = {
        phase: {
            "end_mib": round(values[-1] / 1024, 1),
            "peak_mib": round(max(values) / 1024, 1),
        }
        for phase in ("steady", "overload", "idle-flood", "after")
        if (values := sampler.of(phase, "VmRSS"))
    }
    return {
        "benchmark": "serve_load",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "settings": {k: v for k, v in vars(args).items() if k != "model"},
        "model": args.model or "tiny random LLaVA (bpo.tiny_models, seed 0)",
        "phases": phases,
        "overload_most_queued": most_queued,
        "idle_flood": {
            "connections": args.idle_connections,
            "threads_before": threads_before,
            "threads_held": threads_held,
            "request_behind": status_behind,
            "seconds_behind": round(seconds_behind, 2),
        },
        "after": {"status": status_after, "queued": queued_after},
        "rss_mib": {
            "start": round(rss_start / 1024, 1),
            "peak": round(rss_peak / 1024, 1),
            "end": round(rss_end / 1024, 1),
            "by_phase": rss_by_phase,
        },
        "threads_peak": max(s["Threads"] for s in sampler.samples),
        "samples": sampler.samples,
        "failures": failures,
    }


def report(result: dict[str, Any]) -> None:
    """Print the phases as a table, then memory, the bounds and the verdict."""
    print(f"{'phase':<9} {'clients':>7} {'s':>5} {'req/s':>7} {'ok/s':>6} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'200':>5} {'429':>5} {'other':>5} {'errors':>6}")  # fmt: skip
    settings = result["settings"]
    for name, clients in (("steady", "clients"), ("overload", "overload_clients")):
        phase = result["phases"][name]
        statuses = {int(k): v for k, v in phase["statuses"].items()}
        other = sum(v for k, v in statuses.items() if k not in (200, 429))
        print(
            f"{name:<9} {settings[clients]:>7} {phase['seconds']:>5.1f} "
            f"{phase['answered_per_second']:>7.1f} {phase['ok_per_second']:>6.1f} "
            f"{phase['p50_ms_200'] or 0:>7.0f} {phase['p99_ms_200'] or 0:>7.0f} "
            f"{statuses.get(200, 0):>5} {statuses.get(429, 0):>5} {other:>5} "
            f"{sum(phase['errors'].values()):>6}"
        )
    rss = result["rss_mib"]
    flood = result["idle_flood"]
    print(
        f"RSS MiB: start {rss['start']}, peak {rss['peak']}, end {rss['end']} "
        f"(bound {1 + settings['rss_growth']:g}x start); threads peak {result['threads_peak']}"
    )
    print(
        f"overload: at most {result['overload_most_queued']} queued (bound "
        f"{settings['max_queue']}); idle flood: {flood['connections']} connections held "
        f"{flood['threads_held']} threads (cap {settings['max_connections']} handlers), "
        f"a request behind them {flood['request_behind']} in {flood['seconds_behind']} s; "
        f"after: {result['after']['status']}"
    )
    for failure in result["failures"]:
        print(f"FAILED: {failure}")
    print("all checks passed" if not result["failures"] else f"{len(result['failures'])} failed")


if __name__ == "__main__":
    sys.exit(main())
