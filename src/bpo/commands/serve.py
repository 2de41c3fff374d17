"""Serve a model as an OpenAI-compatible chat-completions endpoint.

Any checkpoint the `hf` backend loads (a VLM or a text LLM) is served at
``POST /v1/chat/completions`` (text and base64 ``image_url`` parts),
``GET /v1/models`` and ``GET /health``. Queued requests are generated in
batches by one worker. Point the `openai` backend (or any OpenAI
client) at it, e.g. to share one GPU between several bootstrap shards.

Load is bounded: past --max-queue waiting requests the answer is 429 with
Retry-After; past --max-connections open connections new ones wait in the
listen backlog; a connection silent for --idle-timeout seconds is closed;
a body over --max-body-bytes is refused (413) without being read.

Binds to 127.0.0.1 unless told otherwise; with --api-key-env, requests need
``Authorization: Bearer <key>``.

examples:
  bpo serve --model runs/tiny-llava --port 8000
  MY_KEY=secret bpo serve --model ckpt --host 0.0.0.0 --api-key-env MY_KEY
"""

from __future__ import annotations

import argparse
import sys

from bpo.commands.options import add_model_safety


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory (or hub name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16")
    )
    parser.add_argument("--max-batch", type=int, default=8, help="most requests per batch")
    parser.add_argument(
        "--max-queue", type=int, default=64, help="most waiting requests; more get 429"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=20 * 1024 * 1024,
        help="largest request body; larger get 413 (default: 20 MiB)",
    )
    parser.add_argument(
        "--max-tokens-limit", type=int, default=4096, help="largest max_tokens a client may ask"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="most connections served at once (a thread each); more wait to be accepted",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="close a connection silent this long, between requests or within one",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="environment variable holding the API key clients must send",
    )
    parser.add_argument(
        "--served-model-name", metavar="NAME", help="the model name clients send (default: --model)"
    )
    add_model_safety(parser)


def run(args: argparse.Namespace) -> int:
    import os
    import signal

    from bpo.backends.hf import HFBackend
    from bpo.backends.server import ChatCompletionServer
    from bpo.errors import ConfigError

    for name in ("max_batch", "max_queue", "max_body_bytes", "max_tokens_limit", "max_connections"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.idle_timeout <= 86_400:  # also refuses nan and inf (socket timeouts)
        raise ConfigError(f"--idle-timeout must be in (0, 86400] seconds, got {args.idle_timeout}")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that variable is unset or empty")
    elif args.host not in ("127.0.0.1", "localhost"):
        print(
            f"bpo serve: warning: listening on {args.host} without an API key (--api-key-env)",
            file=sys.stderr,
        )
    backend = HFBackend(
        args.model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.max_batch,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    model_name = args.served_model_name or args.model
    try:
        server = ChatCompletionServer(
            backend,
            model_name=model_name,
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            max_body_bytes=args.max_body_bytes,
            max_tokens_limit=args.max_tokens_limit,
            api_key=api_key,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
        )
    except OSError as error:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {error}") from None

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (docker stop, kill, a scheduler) stops as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, stop)
    print(f"serving {model_name} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("bpo serve: stopping", file=sys.stderr, flush=True)
    finally:
        server.close()
        backend.close()
    return 0
