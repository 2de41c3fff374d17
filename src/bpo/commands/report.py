"""Write one self-contained HTML report of a run directory.

Reads whatever stages RUN_DIR holds (samples, negatives, pairs and their stats,
training metrics, evaluation results) and writes a single HTML file, images
embedded, that opens offline in any browser: first the base model against the
BPO model on each benchmark's main metrics (changes green when better), then a
gallery of pairs for every strategy (original and weakened image, provenance,
prompt, chosen beside rejected with a word diff), kept and dropped counts and
response lengths, training curves (loss, rewards, chosen and rejected
log-probs, grad norm, learning rate), and every benchmark's metrics per run.
Inputs are streamed and the gallery is a seeded sample of pairs per strategy,
so the page stays small for any size of run. A folder with no stage's output
is refused, and nothing is written.

Bad records are skipped and counted by default (a report of a run in progress
should not fail on its torn last line); --on-error raise stops at the first.

examples:
  bpo report runs/demo                       # writes runs/demo/report.html
  bpo report runs/llava-bpo --out /tmp/report.html --image-root /data/coco
"""

from __future__ import annotations

import argparse
from typing import Any

from bpo.commands.options import add_image_root, add_on_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    parser.add_argument("--out", help="the HTML file to write (default: RUN_DIR/report.html)")
    add_image_root(parser)
    add_on_error(parser)
    parser.set_defaults(on_error="skip")
    gallery = parser.add_argument_group("pairs gallery")
    gallery.add_argument(
        "--pairs-per-strategy",
        type=int,
        default=48,
        help="pairs sampled per strategy (default: %(default)s)",
    )
    gallery.add_argument(
        "--page-size", type=int, default=12, help="pairs per gallery page (default: %(default)s)"
    )
    gallery.add_argument(
        "--seed", type=int, default=0, help="seed of the pairs sample (default: %(default)s)"
    )


def execute(args: argparse.Namespace) -> Any:
    """The command's work (`bpo.report(...)` calls it too); returns the page's path."""
    from bpo.errors import ErrorPolicy
    from bpo.report import ReportOptions, write_report

    policy = ErrorPolicy(on_error=args.on_error)
    options = ReportOptions(
        pairs_per_strategy=args.pairs_per_strategy,
        page_size=args.page_size,
        seed=args.seed,
        image_root=args.image_root,
    )
    path = write_report(args.run_dir, args.out, options=options, policy=policy)
    if policy.total:
        from bpo.console import say

        say(policy.summary())
    return path


def run(args: argparse.Namespace) -> int:
    path = execute(args)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
