"""Options several commands share, declared once."""

from __future__ import annotations

import argparse


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


def not_built(command: str, issue: str) -> int:
    import sys

    print(f"bpo {command}: not built yet (lands with the issue {issue!r})", file=sys.stderr)
    return 2
