"""Hallucination benchmarks: POPE, CHAIR, MMHal-Bench."""

from __future__ import annotations

import argparse

from bpo.commands.options import not_built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    return not_built("eval", "bpo eval")
