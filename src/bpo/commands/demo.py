"""Run the toy world through every stage on a CPU, and show what BPO changed.

A synthetic world of shapes where some objects nearly always come in pairs
(like forks and knives); a tiny VLM trained from scratch on it, whose language
model learned the pairs and names an absent partner on counterfactual scenes.
Then the real stages, as `bpo run` on the toy recipe: bootstrap (image-weakening
with the model itself, co-occurrence injection), pairs, DPO on TRL, eval
(CHAIR, POPE on counterfactual questions, the absent-partner rate), report.

Re-running with the same --out resumes. Recipe overrides as for `bpo run`.

Example:
  bpo demo --out runs/demo
  bpo demo --out runs/demo-lr train.learning_rate=1e-4
  bpo demo --ablate --out runs/ablate   # 11 variants x 2 base seeds x 3 preference seeds

`--ablate` compares the base, SFT on all gold answers, SFT on the selected pairs'
gold answers, BPO with each strategy and both, and BPO with hardest negatives, with mDPO's
image-conditional term and anchor, with both, and in 2 and 3 rounds (`bpo.toy.ablation`);
it trains 13 models per base and preference seed, so it takes hours on a CPU (`--variants`
runs a subset).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    parser.add_argument("--out", default="runs/demo", help="the demo folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="world, model and run seed")
    parser.add_argument(
        "--fast", action="store_true", help="tiny sizes: a smoke test of every stage, not a result"
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="train the base model with the project's code instead of using the shipped one",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ablate = parser.add_argument_group("ablations")
    ablate.add_argument(
        "--ablate", action="store_true", help="run every variant over several seeds (slow)"
    )
    ablate.add_argument(
        "--base-seeds",
        type=int,
        nargs="+",
        default=[0, 2],
        help="seeds of the base models (default: %(default)s; base seed 1 never learns to "
        "ground in its 600 SFT steps and captions every scene alike, see the README)",
    )
    ablate.add_argument(
        "--preference-seeds", type=int, nargs="+", default=[0, 1, 2], help="default: %(default)s"
    )
    ablate.add_argument(
        "--variants",
        nargs="+",
        metavar="VARIANT",
        help="run only these trained variants (and bpo-both, which the others share): "
        "sft-all sft-matched bpo-noise bpo-inject bpo-both bpo-hardest bpo-mdpo "
        "bpo-mdpo-hardest bpo-rounds2 bpo-rounds3 bpo-combined (default: all)",
    )


def run(args: argparse.Namespace) -> int:
    common = {
        "seed": args.seed,
        "fast": args.fast,
        "overrides": args.overrides,
        "progress": not args.no_progress,
    }
    if args.ablate:
        from bpo.toy.ablation import run_ablation

        run_ablation(
            args.out,
            base_seeds=args.base_seeds,
            preference_seeds=args.preference_seeds,
            variants=args.variants,
            **common,
        )
    else:
        from bpo.toy.demo import run_demo

        run_demo(args.out, from_scratch=args.from_scratch, **common)
    return 0
