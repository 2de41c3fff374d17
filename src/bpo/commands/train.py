"""DPO training on TRL + PEFT + accelerate, from a YAML recipe with dotted overrides.

Reads a pairs JSONL file (or its TRL export), tokenizes it once (responses cut to
data.max_length, never an image token), computes the reference log-probs once,
then trains a LoRA adapter (or the whole language model) with TRL's DPOTrainer,
each pair's prompt and image run once for both responses.
The run folder gets config.yaml, checkpoints/, adapter/ (or model/),
metrics.jsonl and train_result.json. Several GPUs: launch with accelerate.

examples:
  bpo train --config recipes/llava-1.5-7b.yaml data.pairs=pairs.jsonl data.image_root=coco/
  bpo train --config recipes/tiny.yaml train.learning_rate=1e-5 lora.r=8 --output-dir runs/t
  bpo train --config recipes/tiny.yaml --output-dir runs/t --resume
  accelerate launch --config_file recipes/accelerate/ddp.yaml -m bpo.cli train \\
      --config recipes/llava-1.5-7b.yaml data.pairs=pairs.jsonl
  bpo train --help-config                 # every recipe key, its default and help
"""

from __future__ import annotations

import argparse
from typing import Any

from bpo.commands.options import add_model_safety, add_on_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="the YAML recipe (default: built-in defaults)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="recipe keys to override, e.g. train.learning_rate=1e-5 lora.r=8",
    )
    parser.add_argument("--output-dir", help="the run folder (same as train.output_dir=...)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run folder's last checkpoint"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete a previous run's checkpoints, adapter and metrics first (the cache stays)",
    )
    add_on_error(parser)
    add_model_safety(parser)  # the same as model.trust_remote_code=true / model.allow_pickle=true
    parser.set_defaults(on_error=None)  # unset: the recipe's data.on_error applies
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved recipe and exit"
    )
    parser.add_argument(
        "--help-config", action="store_true", help="list every recipe key with its help and exit"
    )


def recipe_of(args: argparse.Namespace) -> Any:
    """The recipe the flags describe: the file, its overrides, then the flags' own keys."""
    from bpo.config import load_recipe

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    if args.on_error:
        overrides.append(f"data.on_error={args.on_error}")
    if args.trust_remote_code:
        overrides.append("model.trust_remote_code=true")
    if args.allow_pickle:
        overrides.append("model.allow_pickle=true")
    return load_recipe(args.config, overrides)


def execute(args: argparse.Namespace) -> Any:
    """The command's work (`bpo.train(...)` calls it too); returns the `TrainResult`."""
    from accelerate import PartialState

    from bpo.train.runner import train

    recipe = recipe_of(args)
    state = PartialState()
    try:
        return train(recipe, resume=args.resume, overwrite=args.overwrite)
    finally:
        # Under `accelerate launch`, a process group left to the interpreter's exit can
        # abort a rank ("terminate called without an active exception", seen with gloo).
        state.destroy_process_group()


def run(args: argparse.Namespace) -> int:
    from bpo.config import describe_text, recipe_to_yaml

    if args.help_config:
        print(describe_text())
        return 0
    if args.print_config:
        print(recipe_to_yaml(recipe_of(args)), end="")
        return 0
    from accelerate import PartialState

    from bpo.console import say

    result = execute(args)
    if PartialState().is_main_process:
        say("bpo train: done\n" + result.summary())
        print(result.output)
    return 0
