"""Join the outputs of sharded `bpo bootstrap --shard i/n` runs into one file.

Their `.log.jsonl` files are merged too, so the merged output can be resumed.
Each id is written once; merging again is harmless.

Example:
  bpo merge negatives.0.jsonl negatives.1.jsonl --out negatives.jsonl
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="shard outputs (JSONL)")
    parser.add_argument("--out", required=True, help="merged JSONL")


def run(args: argparse.Namespace) -> int:
    from bpo.bootstrap.merge import merge_outputs
    from bpo.console import say

    written, skipped = merge_outputs(args.inputs, args.out)
    duplicates = f" ({skipped} duplicates skipped)" if skipped else ""
    say(f"merged {written} records into {args.out}{duplicates}")
    return 0
