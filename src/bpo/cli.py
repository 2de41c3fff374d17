"""The `bpo` command.

Each subcommand lives in `bpo.commands.<name>` with `add_arguments(parser)` and
`run(args) -> int`. Those modules import only the standard library at top level
(heavy imports happen inside `run`), so `bpo --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bpo import __version__

# name -> (module, one-line help), in pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "bootstrap": ("bpo.commands.bootstrap", "bootstrap rejected responses from samples"),
    "merge": ("bpo.commands.merge", "join the outputs of sharded bootstrap runs"),
    "pairs": ("bpo.commands.pairs", "assemble, filter and export preference pairs"),
    "train": ("bpo.commands.train", "DPO training on TRL + PEFT"),
    "export": ("bpo.commands.export", "merge a trained adapter into a standard checkpoint"),
    "eval": ("bpo.commands.eval", "hallucination benchmarks: POPE, CHAIR, MMHal-Bench"),
    "report": ("bpo.commands.report", "an HTML report of a run"),
    "run": ("bpo.commands.run", "run every stage of a recipe, resuming finished ones"),
    "demo": ("bpo.commands.demo", "the toy world through every stage, on a CPU"),
    "serve": ("bpo.commands.serve", "serve a model as an OpenAI-compatible endpoint"),
    "distort": ("bpo.commands.distort", "weaken images: diffusion noise, blur, ..."),
    "tiny-model": ("bpo.commands.tiny_model", "build a tiny random VLM for smoke tests"),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpo",
        description=(
            "Bootstrapped Preference Optimization for vision-language models. "
            "Pipeline: bootstrap -> pairs -> train -> eval -> report."
        ),
    )
    parser.add_argument("--version", action="version", version=f"bpo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=module.__doc__ or help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from bpo.errors import BpoError

    try:
        return int(args._run(args) or 0)
    except BpoError as error:
        print(f"bpo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bpo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`bpo ... | head`): stop quietly, as Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
