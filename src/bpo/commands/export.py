"""Export a trained run: the LoRA adapter merged into a standard checkpoint, or as is.

The merged checkpoint (model + processor) loads with
AutoModelForImageTextToText.from_pretrained, so lmms-eval, VLMEvalKit or vLLM can
use it like any hub model. The folder appears only once complete: a crash or kill
mid-export leaves no half checkpoint under --out, and running it again writes the same
files. Pickle-based weights and code shipped with the base model load only when the run's
recipe (model.allow_pickle, model.trust_remote_code) or the flags below allow them.

examples:
  bpo export runs/llava-bpo --merge --out models/llava-1.5-7b-bpo
  bpo export runs/llava-bpo --merge --checkpoint 1000 --out models/step-1000
  bpo export runs/llava-bpo --out adapters/llava-bpo      # the adapter alone (PEFT)
"""

from __future__ import annotations

import argparse

from bpo.commands.options import add_model_safety


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
    add_model_safety(parser)


def run(args: argparse.Namespace) -> int:
    from bpo.train.export import export_run

    out = export_run(
        args.run_dir,
        args.out,
        merge=args.merge,
        checkpoint=args.checkpoint,
        dtype=args.dtype,
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
    )
    print(out)
    return 0
