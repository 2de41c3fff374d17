"""Assemble, filter and export preference pairs.

Joins each negative with its sample (chosen = the sample's gold response,
rejected = the negative's text; pair id = negative id), drops pairs by reason in
a fixed order (empty, too-long, identical, near-identical, no-absent-object,
duplicate, mix), writes OUT as JSONL (a re-run appends only what is missing),
prints a table of counts and word lengths per strategy and saves it as
<OUT stem>.stats.json. --export writes the pairs for TRL, the BPO release
format or LLaMA-Factory.

examples:
  bpo pairs samples.json negatives.jsonl --out pairs.jsonl
  bpo pairs samples.json iw.jsonl cooc.jsonl --out pairs.jsonl \\
      --mix image-weakening=0.5 cooccurrence=0.5 --export trl --image-root images/
"""

from __future__ import annotations

import argparse
from typing import Any

from bpo.commands.options import add_image_root, add_on_error

# The same values as bpo.data.formats.FORMATS, bpo.exports.EXPORT_FORMATS and the
# bpo.pairs defaults, which are not imported here because they load numpy (a test
# keeps them in step).
_FORMATS = ("auto", "llava", "sharegpt4v", "bpo", "jsonl")
_EXPORTS = ("trl", "bpo", "llamafactory")
_MAX_WORDS = 350
_MAX_SIMILARITY = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("samples", help="the samples (LLaVA, ShareGPT4V, BPO release or JSONL)")
    parser.add_argument("negatives", nargs="+", help="one or more negatives JSONL files")
    parser.add_argument("--out", required=True, help="the pairs JSONL file to write")
    parser.add_argument(
        "--format", default="auto", choices=_FORMATS, help="the samples' format (default: auto)"
    )
    add_image_root(parser)
    add_on_error(parser)
    parser.add_argument(
        "--max-words",
        type=int,
        default=_MAX_WORDS,
        help="drop pairs whose chosen or rejected response is longer, in words; 0: no limit "
        "(default: %(default)s, the BPO release's cap)",
    )
    parser.add_argument(
        "--max-similarity",
        type=float,
        default=_MAX_SIMILARITY,
        help="drop pairs whose normalised word similarity is above this, e.g. 0.9 "
        "(default: %(default)s: only identical texts are dropped)",
    )
    parser.add_argument(
        "--require-absent-object",
        action="store_true",
        help="keep only rejected responses naming an object absent from the chosen one",
    )
    parser.add_argument(
        "--lexicon",
        help="object lexicon for --require-absent-object (default: the 80 COCO categories)",
    )
    parser.add_argument(
        "--mix",
        nargs="+",
        default=[],
        metavar="STRATEGY=RATIO",
        help="keep the strategies in these proportions (the largest total that respects "
        "them); unlisted strategies are dropped",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --mix draw (default: 0)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start OUT afresh instead of appending the pairs it lacks; with --export "
        "llamafactory, also replace an entry of the same name in dataset_info.json that was "
        "not exported from OUT",
    )
    parser.add_argument(
        "--export",
        nargs="+",
        default=[],
        choices=_EXPORTS,
        help="also write the pairs as: trl (HF datasets + parquet), bpo (release JSON), "
        "llamafactory (sharegpt + dataset_info.json)",
    )
    parser.add_argument(
        "--export-dir", help="where exports are written (default: the folder of --out)"
    )
    parser.add_argument(
        "--dataset-name",
        metavar="NAME",
        help="the exported dataset's name: the prefix of every export's files and the "
        "llamafactory entry in dataset_info.json (default: the stem of --out)",
    )


def execute(args: argparse.Namespace) -> Any:
    """The command's work (`bpo.pairs(...)` calls it too); returns the `PairStats`."""
    from pathlib import Path

    from bpo.console import say
    from bpo.errors import ConfigError, ErrorPolicy
    from bpo.exports import check_llamafactory_export, export_pairs
    from bpo.pairs import build_pairs, parse_mix

    if args.lexicon and not args.require_absent_object:
        raise ConfigError("--lexicon is used by --require-absent-object; pass both")
    if args.require_absent_object:
        from bpo.lexicon import ObjectLexicon

        lexicon = ObjectLexicon.load(args.lexicon) if args.lexicon else ObjectLexicon.default()
    else:
        lexicon = None
    export_dir = Path(args.export_dir) if args.export_dir else Path(args.out).parent
    if "llamafactory" in args.export:
        # Refused before anything is written: the pairs file, or another export.
        check_llamafactory_export(
            args.out, export_dir, name=args.dataset_name, overwrite=args.overwrite
        )
    policy = ErrorPolicy(args.on_error)
    stats = build_pairs(
        args.samples,
        args.negatives,
        args.out,
        format=args.format,
        max_words=args.max_words or None,
        max_similarity=args.max_similarity,
        lexicon=lexicon,
        lexicon_path=args.lexicon,
        mix=parse_mix(args.mix) or None,
        seed=args.seed,
        policy=policy,
        resume=not args.overwrite,
        image_root=args.image_root,
    )
    present = f" ({stats.already_present} already there)" if stats.already_present else ""
    say(f"wrote {stats.written} pairs to {args.out}{present}")
    for export_format in dict.fromkeys(args.export):
        result = export_pairs(
            export_format,
            args.out,
            export_dir,
            name=args.dataset_name,
            image_root=args.image_root,
            policy=ErrorPolicy(args.on_error),
            overwrite=args.overwrite,
        )
        say(result.summary())
    return stats


def run(args: argparse.Namespace) -> int:
    from bpo.pairs import print_stats

    print_stats(execute(args))
    return 0
