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


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and the Ray options (`bpo.engine`): where the batches run."""
    engine = parser.add_argument_group(
        "engine (the output is the same on either; a run may resume on the other)"
    )
    engine.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: batches in this process; ray: on a pool of Ray Data actors, each "
        "running the backend (pip install 'bpo[ray]')",
    )
    engine.add_argument("--replicas", type=int, default=1, help="ray: actors in the pool")
    engine.add_argument(
        "--gpus-per-replica", type=float, default=0.0, help="ray: GPUs per actor (0: CPU)"
    )
    engine.add_argument(
        "--ray-address",
        default="local",
        help="ray: local (a cluster started here, sized to --replicas), auto (the cluster "
        "`ray start --head` runs), or a cluster address",
    )


def engine_options(args: argparse.Namespace) -> Any:
    """The `bpo.engine.EngineOptions` of `add_engine_options`' flags, checked."""
    from bpo.engine import EngineOptions

    options = EngineOptions(
        engine=args.engine,
        replicas=args.replicas,
        gpus_per_replica=args.gpus_per_replica,
        ray_address=args.ray_address,
    )
    options.check()
    return options
