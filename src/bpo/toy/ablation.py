"""`bpo demo --ablate`: how much of the demo's gain is BPO's, over several seeds.

For each base seed (a base model trained from scratch on the same world) and each
preference seed (the bootstrap's sampling, the pairs' mixing and the training's
batch order), these variants on the same test scenes:

    base          the base model, untouched
    sft-all       SFT on every preference scene's gold caption, as many steps as BPO
    sft-matched   SFT on exactly the gold answers of bpo-both's pairs (the same
                  selection, the same steps: what selection alone buys)
    bpo-noise     DPO on image-weakened negatives only
    bpo-inject    DPO on co-occurrence injection only
    bpo-both      DPO on both (the demo's recipe: the paper's loss)
    bpo-hardest   bpo-both's pairs, only the hardest per sample (train.select hardest, k 1)
    bpo-mdpo      bpo-both's pairs, with mDPO's image-conditional term and anchor
                  (weights 1 and 1, delta 0: mDPO's, fixed before any run)
    bpo-mdpo-hardest  both of the last two
    bpo-rounds2/3 bpo-both's recipe in 2 or 3 rounds (`bpo.pipeline.rounds`), each round
                  bootstrapped from the last one's model; every round trains as many
                  steps as the other variants, so the budget is 2 or 3 times theirs
    bpo-combined  the levers together: bpo-mdpo-hardest's recipe in 2 rounds

Each trained variant is an ordinary `bpo run` folder under
``OUT/base<B>/seed<P>/<variant>``; SFT is the same `bpo train` with TRL's ``sft``
loss (the NLL term BPO's RPO loss already holds, without the preference term).
The variants of a cell share what they can: bpo-noise and bpo-inject resume from
bpo-both's negatives (the same seeds give the same negatives); sft-matched and the
variants of the training loss train on bpo-both's pairs file (its negatives and
stage markers copied too, so the folder is a whole run of their recipe). A run of
rounds starts from a copy of the one-round run its first round is (bpo-both's, or
bpo-mdpo-hardest's for bpo-combined: ``run_rounds(first_round=...)``), and bpo-rounds2 and
bpo-rounds3 are rounds 2 and 3 of one run (``bpo-rounds``): a round's outputs do
not depend on how many follow it. ``variants`` runs a subset (bpo-both always, as
the others share its outputs, and what a chosen variant starts from).

Choices are made on the validation split: every model also captions the
validation scenes (``eval/<label>-validation``), and the best BPO variant is the
one with the highest mean grounding score there (`bpo.toy.metrics.grounding_score`).
The table reports the test split.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bpo.fsio import copy_missing
from bpo.pipeline import Run, run_pipeline

BPO_STRATEGIES = {
    "bpo-noise": ["image-weakening"],
    "bpo-inject": ["cooccurrence"],
    "bpo-both": ["image-weakening", "cooccurrence"],
}
# Variants of the training loss or selection on bpo-both's pairs: their recipe overrides.
HARDEST = ["train.select=hardest", "train.select_k=1"]
MDPO = ["train.image_conditional_weight=1.0", "train.anchor_weight=1.0", "train.anchor_delta=0"]
# Every variant starts from the paper's loss, whatever the toy recipe (the demo's) adds.
PAPER = ["train.image_conditional_weight=0", "train.anchor_weight=0", "train.anchor_delta=0"]
ON_BOTH_PAIRS = {"bpo-hardest": HARDEST, "bpo-mdpo": MDPO, "bpo-mdpo-hardest": MDPO + HARDEST}
# Iterative BPO (`bpo.pipeline.rounds`), each round's negatives bootstrapped from the
# previous round's model, the reference the previous one. A run of rounds: its folder,
# the one-round variant its round 1 is (copied from there) and that variant's overrides.
ROUND_RUNS = {"bpo-rounds": ("bpo-both", []), "bpo-combined": ("bpo-mdpo-hardest", MDPO + HARDEST)}
# Each variant of rounds: (its run of rounds, the round whose model it is).
ROUNDS = {
    "bpo-rounds2": ("bpo-rounds", 2),
    "bpo-rounds3": ("bpo-rounds", 3),
    "bpo-combined": ("bpo-combined", 2),
}
BPO_VARIANTS = (*BPO_STRATEGIES, *ON_BOTH_PAIRS, *ROUNDS)
VARIANTS = ("base", "sft-all", "sft-matched", *BPO_VARIANTS)
SFT_LOSS = "train.loss_type=[sft]"
TRAINED_STAGES = ("bootstrap", "pairs", "train", "export", "eval")
SFT_STAGES = ("train", "export", "eval")

# The table's measures: (results key, column name, lower is better).
MEASURES = (
    ("cf_absent_partner_rate", "CF absent-partner", True),
    ("chair_i", "CHAIR_i", True),
    ("chair_s", "CHAIR_s", True),
    ("cf_recall", "CF recall", False),
    ("normal_dependent_recall", "normal dep. recall", False),
    ("pope_accuracy", "POPE (CF) acc.", False),
)


def _say(message: str) -> None:
    from bpo.console import say

    say(f"[bpo demo --ablate] {message}")


def _share_base_eval(source: Path, target: Path) -> None:
    """Give run `target` the base model's evaluation done in run `source`.

    The folders first (each staged, so a crash never leaves half of one), the
    stage marker last: a run that has the marker has the results.
    """
    benches = [f"base-{bench}" for bench in ("chair", "pope", "toy", "validation")]
    copy_missing(source / "eval", target / "eval", benches)
    copy_missing(source / "stages", target / "stages", ["eval-base.json"])


def _share(run: Run, variant: str, both: Path, samples: Path) -> None:
    """Give a variant's run what it shares with `bpo-both`'s (`both`), or its gold pairs."""
    if variant in ("bpo-noise", "bpo-inject"):
        files = [
            f"{strategy}.jsonl{suffix}"
            for strategy in BPO_STRATEGIES[variant]
            for suffix in ("", ".log.jsonl", ".settings.json")
        ]
        copy_missing(both / "negatives", run.path("negatives"), files)
    elif variant == "sft-matched" or variant in ON_BOTH_PAIRS:
        copy_missing(
            both, run.dir, ["pairs.jsonl", "pairs.stats.json", "pairs.jsonl.settings.json"]
        )
        if variant in ON_BOTH_PAIRS:  # a whole run of its recipe: a run of rounds starts here
            copy_missing(both, run.dir, ["negatives"])
            markers = [f"bootstrap-{name}.json" for name in BPO_STRATEGIES["bpo-both"]]
            copy_missing(both / "stages", run.path("stages"), [*markers, "pairs.json"])
    elif variant == "sft-all":
        _gold_pairs(samples, run.path("pairs.jsonl"))
    if variant != "bpo-both":  # the base model's answers are the same in every run
        _share_base_eval(both, run.dir)


def _gold_pairs(samples_path: Path, out: Path) -> None:
    """Every sample's gold answer as the chosen response (the sft loss reads no rejected)."""
    from bpo.data.formats import read_samples
    from bpo.data.records import Pair
    from bpo.fsio import atomic_write

    if out.exists():
        return
    with atomic_write(out) as handle:
        for sample in read_samples(samples_path, format="jsonl"):
            pair = Pair(
                id=f"{sample.id}/gold",
                image=sample.image,
                prompt=sample.prompt,
                chosen=sample.response,
                rejected=sample.response,
                strategy="gold",
            )
            handle.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")


def _validation_measures(run: Run, label: str, model: str, world: Any) -> None:
    """Caption the validation scenes with `model` and score them (the choices are made here)."""
    from bpo.eval.runner import EvalOptions, evaluate
    from bpo.fsio import write_text
    from bpo.toy.demo import score_captions

    out = run.path("eval", f"{label}-validation")
    if (out / "toy.json").exists():
        return
    config = run.recipe.eval
    evaluate(
        EvalOptions(
            bench="chair",
            out=out,
            data=str(world.samples_path("validation")),
            image_root=str(world.root),
            model=model,
            batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens,
            progress=False,
        )
    )
    metrics = score_captions(world, "validation", out / "predictions.jsonl")
    write_text(out / "toy.json", json.dumps(metrics, indent=2) + "\n")


def _measures(run_dir: Path, label: str) -> dict[str, float]:
    """One model's test measures (and its validation grounding score) from a run folder."""
    from bpo.toy.metrics import grounding_score

    def results(name: str) -> dict[str, Any]:
        path = run_dir / "eval" / f"{label}-{name}" / "results.json"
        return dict(json.loads(path.read_text(encoding="utf-8"))["metrics"])

    toy, chair, pope = results("toy"), results("chair"), results("pope")
    validation = json.loads(
        (run_dir / "eval" / f"{label}-validation" / "toy.json").read_text(encoding="utf-8")
    )
    return {
        "cf_absent_partner_rate": toy["cf_absent_partner_rate"],
        "chair_i": chair["chair_i"],
        "chair_s": chair["chair_s"],
        "cf_recall": toy["cf_recall"],
        "normal_dependent_recall": toy["normal_dependent_recall"],
        "pope_accuracy": pope["overall"]["accuracy"],
        "validation_grounding": grounding_score(validation),
    }


def _row(
    base_seed: int, preference_seed: int, variant: str, run_dir: Path, label: str
) -> dict[str, Any]:
    """One line of ``ablation.json``: a model's seeds, its run folder and its measures."""
    return {
        "base_seed": base_seed,
        "preference_seed": preference_seed,
        "variant": variant,
        "run": str(run_dir),
        **_measures(run_dir, label),
    }


def run_ablation(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    base_seeds: Sequence[int] = (0, 2),
    preference_seeds: Sequence[int] = (0, 1, 2),
    fast: bool = False,
    overrides: Sequence[str] = (),
    progress: bool = True,
    variants: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every variant for every base and preference seed; writes and prints the table.

    Args:
        out: the ablation folder (resumed if it exists).
        seed: the world seed.
        base_seeds: seeds of the base models (the shipped one is base seed 0 on world 0).
        preference_seeds: seeds of bootstrap, pairs and training.
        fast: tiny sizes: a smoke test of every variant, not a result.
        overrides: dotted recipe overrides for every trained variant.
        progress: show progress bars.
        variants: the trained variants to run (default: all of them).

    Returns:
        What ``OUT/ablation.json`` holds: per-run measures and the summary.
    """
    from bpo.config import load_recipe
    from bpo.fsio import write_text
    from bpo.toy.demo import (
        FAST_RECIPE,
        FAST_WORLD,
        base_model,
        caption_samples,
        toy_measures,
        toy_recipe_path,
    )
    from bpo.toy.world import ToyWorld, write_world

    chosen = _chosen_variants(variants)
    root = Path(out)
    world_dir = write_world(
        root / "world", seed=seed, progress=progress, **(FAST_WORLD if fast else {})
    )
    world = ToyWorld.load(world_dir)
    samples = caption_samples(world, root)
    runs: list[dict[str, Any]] = []
    for base_seed in base_seeds:
        base = base_model(
            world,
            root / f"base-{base_seed}",
            seed=base_seed,
            fast=fast,
            from_scratch=False,
            progress=progress,
        )
        for preference_seed in preference_seeds:
            cell = root / f"base{base_seed}" / f"seed{preference_seed}"
            common = [
                f"model.name={base}",
                f"samples.path={samples}",
                f"samples.image_root={world_dir}",
                f"eval.chair={world.samples_path('test')}",
                f"eval.pope={world.pope_path('test', 'counterfactual')}",
                f"eval.image_root={world_dir}",
                *(f"{key}.seed={preference_seed}" for key in ("bootstrap", "pairs", "train")),
                *PAPER,
                *(FAST_RECIPE if fast else ()),
                *overrides,
            ]
            plans: list[tuple[str, list[str], tuple[str, ...]]] = [
                (name, [f"bootstrap.strategies={strategies}"], TRAINED_STAGES)
                for name, strategies in sorted(
                    BPO_STRATEGIES.items(), key=lambda item: item[0] != "bpo-both"
                )
            ]
            plans += [(name, settings, TRAINED_STAGES) for name, settings in ON_BOTH_PAIRS.items()]
            plans += [(name, [SFT_LOSS], SFT_STAGES) for name in ("sft-matched", "sft-all")]
            plans = [plan for plan in plans if plan[0] in chosen]
            both = cell / "bpo-both"
            for name, settings, stages in plans:
                run_dir = cell / name
                _say(f"base seed {base_seed}, preference seed {preference_seed}: {name}")
                recipe = load_recipe(toy_recipe_path(), [*common, *settings])
                run = run_pipeline(
                    recipe,
                    run_dir,
                    stages=stages,
                    progress=progress,
                    after_eval=toy_measures,
                    prepare=functools.partial(_share, variant=name, both=both, samples=samples),
                )
                # Every model's row; the base model's comes from bpo-both's folder.
                _validation_measures(run, "base", str(base), world)
                _validation_measures(run, "bpo", str(run.path("model")), world)
                if name == "bpo-both":
                    runs.append(_row(base_seed, preference_seed, "base", run_dir, "base"))
                runs.append(_row(base_seed, preference_seed, name, run_dir, "bpo"))
            for folder, (_, settings) in ROUND_RUNS.items():
                runs += _rounds(
                    chosen, folder, cell, [*common, *settings], world,
                    (base_seed, preference_seed), progress=progress,
                )  # fmt: skip
    summary = summarize(runs)
    result = {"runs": runs, "summary": summary, "best_bpo": best_bpo(summary)}
    write_text(root / "ablation.json", json.dumps(result, indent=2) + "\n")
    table = ablation_table(result)
    write_text(root / "ablation.md", table + "\n")
    print(table)
    return result


def _rounds(
    chosen: set[str],
    folder: str,
    cell: Path,
    overrides: list[str],
    world: Any,
    seeds: tuple[int, int],
    *,
    progress: bool,
) -> list[dict[str, Any]]:
    """The run of rounds `folder` of a cell, as far as its chosen variants need; their rows."""
    from bpo.config import load_recipe
    from bpo.pipeline.rounds import run_rounds
    from bpo.toy.demo import toy_measures, toy_recipe_path

    wanted = {name: k for name, (run, k) in ROUNDS.items() if run == folder and name in chosen}
    if not wanted:
        return []
    count = max(wanted.values())
    _say(f"base seed {seeds[0]}, preference seed {seeds[1]}: {folder}, {count} rounds")
    run_dir, first = cell / folder, cell / ROUND_RUNS[folder][0]
    recipe = load_recipe(toy_recipe_path(), [*overrides, f"rounds.count={count}"])
    run_rounds(
        recipe, run_dir, stages=TRAINED_STAGES, progress=progress, after_eval=toy_measures,
        first_round=first if (first / "stages" / "eval-bpo.json").exists() else None,
    )  # fmt: skip
    rows = []
    for name, number in wanted.items():
        round_run = Run(recipe, run_dir / f"round-{number}")
        _validation_measures(round_run, "bpo", str(round_run.path("model")), world)
        rows.append(_row(*seeds, name, round_run.dir, "bpo"))
    return rows


def _chosen_variants(variants: Sequence[str] | None) -> set[str]:
    """The trained variants to run: `variants` (checked) and bpo-both, or all of them."""
    from bpo.errors import ConfigError

    trained = [name for name in VARIANTS if name != "base"]
    if variants is None:
        return set(trained)
    unknown = sorted(set(variants) - set(trained))
    if unknown:
        raise ConfigError(
            f"unknown ablation variant(s) {', '.join(unknown)}; valid: {', '.join(trained)}"
        )
    chosen = {*variants, "bpo-both"}
    for name in variants:  # what a run of rounds starts from
        if name in ROUNDS:
            chosen.add(ROUND_RUNS[ROUNDS[name][0]][0])
    return chosen


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: mean and sample standard deviation of each measure over all its runs.

    The spread is over every (base seed, preference seed) run of a variant; the
    per-base-seed means are kept too, so a reader can tell seed noise from base noise.
    """
    keys = [key for key, _, _ in MEASURES] + ["validation_grounding"]
    summary: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        chosen = [run for run in runs if run["variant"] == variant]
        if not chosen:
            continue
        entry: dict[str, Any] = {"runs": len(chosen)}
        for key in keys:
            mean, std = _mean_std([run[key] for run in chosen])
            entry[key] = {"mean": mean, "std": std}
            entry[key]["per_base_seed"] = {
                str(seed): _mean_std([run[key] for run in chosen if run["base_seed"] == seed])[0]
                for seed in sorted({run["base_seed"] for run in chosen})
            }
        summary[variant] = entry
    return summary


def best_bpo(summary: dict[str, dict[str, Any]]) -> str | None:
    """The BPO variant with the highest mean grounding score on the validation split."""
    candidates = [name for name in BPO_VARIANTS if name in summary]
    if not candidates:
        return None
    return max(candidates, key=lambda name: summary[name]["validation_grounding"]["mean"])


def ablation_table(result: dict[str, Any]) -> str:
    """The summary as a Markdown table: mean ± standard deviation over the runs."""
    summary = result["summary"]
    header = ["variant", "runs", *(name for _, name, _ in MEASURES), "val. grounding"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for variant, entry in summary.items():
        cells = [variant + (" (best BPO)" if variant == result.get("best_bpo") else "")]
        cells.append(str(entry["runs"]))
        for key in [key for key, _, _ in MEASURES] + ["validation_grounding"]:
            cells.append(f"{entry[key]['mean']:.3f} ± {entry[key]['std']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
