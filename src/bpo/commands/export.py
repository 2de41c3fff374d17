"""Export a trained run: the LoRA adapter merged into a standard checkpoint, or as is.

The merged checkpoint (model + processor) loads with
AutoModelForImageTextToText.from_pretrained, so lmms-eval, VLMEvalKit or vLLM can
use it like any hub model.

examples:
  bpo export runs/llava-bpo --merge --out models/llava-1.5-7b-bpo
  bpo export runs/llava-bpo --merge --checkpoint 1000 --out models/step-1000
  bpo export runs/llava-bpo --out adapters/llava-bpo      # the adapter alone (PEFT)
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run folder bpo train wrote")
    parser.add_argument("--out", required=True, help="the folder to write (new or empty)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="fold the adapter into the base model: a standard checkpoint",
    )
    parser.add_argument(
        "--checkpoint", help="export checkpoint-<N> (a step or a path) instead of the final one"
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="dtype of the merged weights (default: the recipe's model.dtype)",
    )


def run(args: argparse.Namespace) -> int:
    from bpo.train.export import export_run

    out = export_run(
        args.run_dir, args.out, merge=args.merge, checkpoint=args.checkpoint, dtype=args.dtype
    )
    print(out)
    return 0
