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
    console = argparse.ArgumentParser(add_help=False)
    loudness = console.add_argument_group("console").add_mutually_exclusive_group()
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="only errors and the final result"
    )
    loudness.add_argument(
        "-v", "--verbose", action="store_true", help="also the libraries' own logs and bars"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=module.__doc__ or help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[console],
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`, taking ``KEY=VALUE`` overrides before or after the options.

    argparse gives a positional list only the words before the first option; the
    overrides found after one come back unrecognised and are added in order.
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        overrides = all("=" in word and not word.startswith("-") for word in extra)
        if not overrides or not hasattr(args, "overrides"):
            parser.parse_args(argv)  # the usual "unrecognized arguments" error, exit 2
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parse(parser, argv)
    if args.command is None:
        parser.print_help()
        return 0
    from bpo import console
    from bpo.errors import BpoError

    console.configure(
        console.QUIET if args.quiet else console.VERBOSE if args.verbose else console.NORMAL
    )
    if args.quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    try:
        return int(args._run(args) or 0)
    except BpoError as error:
        console.close_bars()  # the error starts a line of its own
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
