"""Run every stage of a recipe into one folder: bootstrap, pairs, train, export, eval, report.

A re-run of the same command resumes: finished stages are skipped, an
interrupted one continues where it stopped. The recipe's samples, bootstrap,
pairs and eval sections drive the first stages, its model, data, lora and train
sections the training (see `bpo train --help-config`). ``rounds.count=N`` runs N rounds
of iterative BPO, each bootstrapping from and training the previous round's model, into
RUN/round-K/ (rounds.json: every metric per round).

Example:
  bpo run recipes/llava-1.5-7b.yaml samples.path=llava_instruct.json \\
      samples.image_root=coco/train2017 --out runs/llava-bpo
"""

from __future__ import annotations

import argparse
from typing import Any

from bpo.pipeline import STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a YAML recipe")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides")
    parser.add_argument("--out", required=True, help="the run folder (resumed if it exists)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run made with other settings in --out instead of refusing",
    )
    parser.add_argument(
        "--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def execute(args: argparse.Namespace) -> Any:
    """The command's work (`bpo.run(...)` calls it too); returns the `bpo.pipeline.Run`."""
    from bpo.config import load_recipe
    from bpo.pipeline import run_pipeline

    recipe = load_recipe(args.recipe, args.overrides)
    return run_pipeline(
        recipe,
        args.out,
        stages=tuple(args.stages),
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )


def run(args: argparse.Namespace) -> int:
    from bpo.console import say

    finished = execute(args)
    summary = finished.summary()
    if summary:
        say(f"bpo run: done\n{summary}")
    return 0
