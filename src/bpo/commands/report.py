"""Write a self-contained HTML report of a run."""

from __future__ import annotations

import argparse

from bpo.commands.options import not_built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    return not_built("report", "bpo report")
