"""Options several commands share, declared once."""

from __future__ import annotations

import argparse
from typing import Any

BACKENDS = ("hf", "openai", "vllm")


def add_on_error(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-error",
        choices=("skip", "raise"),
        default="raise",
        help="on a bad record: stop with a clear error (raise) or count it and go on (skip)",
    )


def add_image_root(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "--image-root",
        required=required,
        help="folder the records' image paths are relative to; paths may not leave it",
    )


def add_model_options(parser: argparse.ArgumentParser, *, title: str) -> None:
    """The flags that choose a generation backend and its model."""
    model = parser.add_argument_group(title)
    model.add_argument("--model", help="model directory, hub name, or served model name")
    model.add_argument("--backend", choices=BACKENDS, default="hf")
    model.add_argument("--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1")
    model.add_argument("--api-key-env", default="OPENAI_API_KEY", help="openai: key variable")
    model.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    model.add_argument("--device", default="cpu", help="hf: device")
    model.add_argument("--dtype", default="auto", help="hf/vllm: torch dtype")
    add_model_safety(model)


def add_model_safety(parser: argparse._ActionsContainer) -> None:
    """``--trust-remote-code`` and ``--allow-pickle``: both off unless asked (bpo.checkpoints)."""
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code shipped with the checkpoint (only for models you trust)",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load pickle-based weights (pytorch_model.bin, *.pt) when a checkpoint has no "
        "safetensors; unpickling can run code, so only for checkpoints you trust",
    )


def backend_options(
    kind: str,
    args: argparse.Namespace,
    *,
    base_url: str | None,
    api_key_env: str,
    batch_size: int,
) -> dict[str, Any]:
    """`bpo.backends.backend_options` from the flags of `add_model_options`."""
    from bpo.backends import backend_options as options

    return options(
        kind,
        base_url=base_url,
        api_key_env=api_key_env,
        concurrency=args.concurrency,
        device=args.device,
        dtype=args.dtype,
        batch_size=batch_size,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )


def not_built(command: str, issue: str) -> int:
    import sys

    print(f"bpo {command}: not built yet (lands with the issue {issue!r})", file=sys.stderr)
    return 2
