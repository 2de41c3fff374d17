"""Build a tiny random VLM for smoke tests, offline.

Writes a standard checkpoint (weights, config, processor, tokenizer, chat
template) of the chosen family that `from_pretrained` loads like the real model
(LLaVA-1.5, Qwen2-VL, Gemma 3 ...), then loads it back and answers one question
about a synthetic image.

Example:
    bpo tiny-model --arch qwen2-vl --out models/tiny-qwen2-vl --seed 0
"""

from __future__ import annotations

import argparse

# The registry's names; importing the package loads no torch or transformers.
from bpo.tiny_models import ARCHES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        required=True,
        choices=ARCHES,
        metavar="NAME",
        help=f"model family to imitate: {', '.join(ARCHES)}",
    )
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")


def run(args: argparse.Namespace) -> int:
    from bpo.tiny_models import build_tiny_model, smoke_test

    path = build_tiny_model(args.arch, args.out, seed=args.seed)
    result = smoke_test(path)
    print(path)
    print(f"parameters: {result.parameters:,}")
    print(
        f"smoke: {result.new_tokens} new tokens in {result.generate_seconds:.2f}s "
        f"(load {result.load_seconds:.2f}s): {result.text!r}"
    )
    return 0
