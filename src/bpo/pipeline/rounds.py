"""Iterative BPO: `bpo run` with ``rounds.count: N`` above 1.

    RUN/settings.json        the recipe's settings that shape a result (not rounds.count)
    RUN/config.yaml          the resolved recipe
    RUN/round-K/             round K: an ordinary one-round run folder (`bpo.pipeline`)
    RUN/rounds.json          every metric per round: base | round-1 | round-2 ...
    RUN/report.html          the report of every round, with the Rounds table

Round 1 is the recipe's run. Round K > 1 is the same recipe with ``model.name``
set to round K−1's merged model (``round-(K-1)/model``): its negatives are
bootstrapped from that model (their ``params.model`` names it), and it trains a
new LoRA adapter on it. Its DPO reference is then that model with the adapter
disabled (``rounds.reference: previous``), or the recipe's model
(``rounds.reference: base``, through ``train.reference_model``). The base model
is evaluated once, in round 1; each round evaluates its trained model.

Each round folder keeps its own settings record and stage markers, so a run
resumes at any stage of any round. Every round's settings are checked before
anything is written, and a change is refused by name. ``rounds.count`` is not
a setting of the result (each round's outputs are the same whatever the count):
raising it on a finished run goes on with the new rounds; lowering it (to 2 or
more) leaves the later rounds' folders as they are and sums up the first N. A
one-round run and a run of rounds do not share a folder (``--overwrite``
replaces one with the other).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from bpo.config import Recipe, save_recipe
from bpo.console import say
from bpo.errors import ConfigError
from bpo.fsio import write_text
from bpo.pipeline.folder import RUN_ENTRIES, Run, refuse_foreign, round_folders, run_settings
from bpo.provenance import RECORD_NAME, Provenance, folder_record

# What a run of several rounds writes in its folder besides round-K/ and its record.
ROUNDS_ENTRIES = ("config.yaml", "rounds.json", "report.html")


def _say(message: str) -> None:
    say(f"[bpo run] {message}")


def round_recipe(recipe: Recipe, run_dir: str | os.PathLike[str], number: int) -> Recipe:
    """Round `number`'s recipe: a one-round run that starts from the previous round's model."""
    recipe = copy.deepcopy(recipe)
    base = recipe.model.name
    recipe.rounds.count = 1
    if number > 1:
        # Resolved: the round's settings record names the model whatever the working folder.
        previous = Path(run_dir).resolve() / f"round-{number - 1}" / "model"
        recipe.model.name, recipe.model.revision = str(previous), None
        if recipe.rounds.reference == "base":
            recipe.train.reference_model = base
    return recipe


def _round(
    recipe: Recipe, root: Path, number: int, after_eval: Callable[[Run, str], None] | None
) -> Run:
    from bpo.pipeline import prepared_run

    run = prepared_run(
        round_recipe(recipe, root, number), root / f"round-{number}", after_eval=after_eval
    )
    if number > 1:
        run.evaluate_base = False
        run.recorded_model = f"../round-{number - 1}/model"
    return run


def run_rounds(
    recipe: Recipe,
    run_dir: str | os.PathLike[str],
    *,
    stages: tuple[str, ...],
    progress: bool = True,
    after_eval: Callable[[Run, str], None] | None = None,
    overwrite: bool = False,
    keep: Sequence[str] = (),
    first_round: str | os.PathLike[str] | None = None,
) -> Run:
    """Run ``recipe.rounds.count`` rounds into ``run_dir/round-K/`` (see the module docstring).

    Args:
        recipe: the resolved recipe, ``rounds.count`` above 1.
        run_dir: the run folder.
        stages: the stages each round runs; a round whose previous round has no
            exported model yet is not started.
        progress: show progress bars.
        after_eval: as `bpo.pipeline.run_pipeline`'s, called in each round.
        overwrite: replace a run made with other settings instead of refusing.
        keep: names of entries the caller put in `run_dir` itself.
        first_round: a one-round run folder of the same settings as round 1 (checked):
            a round 1 not yet started starts as a copy of it (the ablation shares
            bpo-both's run so).

    Returns:
        The last round run.

    Raises:
        ConfigError: before anything is written, for a recipe that cannot run, a
            folder that holds something else, or a round made with other settings.
    """
    from bpo.pipeline import check_stages, run_stages

    if recipe.train.reference_model:
        raise ConfigError(
            "train.reference_model is set by the rounds: use rounds.reference "
            "(previous or base) with rounds.count above 1"
        )
    root = Path(run_dir)
    count = recipe.rounds.count
    provenance = _provenance(recipe, root, overwrite=overwrite, keep=keep)
    rounds = [_round(recipe, root, number, after_eval) for number in range(1, count + 1)]
    if not overwrite:  # every round's settings, before any byte is written
        for run in rounds:
            if run.dir.is_dir():
                run.check()
    first = None
    if first_round is not None and not rounds[0].path("stages").is_dir():
        first = Path(first_round)
        Run(rounds[0].recipe, first).check()  # the same settings as round 1
    check_stages(recipe, stages)
    provenance.commit()
    save_recipe(recipe, root / "config.yaml")
    if first is not None:
        _copy_run(first, rounds[0].dir)
    last = rounds[0]
    for number, run in enumerate(rounds, start=1):
        if number > 1 and not rounds[number - 2].done("export"):
            _say(f"round {number}: not started, round {number - 1} has no exported model yet")
            break
        _say(f"round {number} of {count}: {run.dir}")
        run.check().commit()
        last = run_stages(run, stages, progress=progress)
    _write_summary(recipe, root, rounds)
    if "report" in stages:
        from bpo.report import write_report

        _say(f"report: {write_report(root)}")
    return last


def _copy_run(origin: Path, target: Path) -> None:
    """Copy run folder `origin` into `target`, the settings record first and the stage
    markers last, so a crash leaves a round that resumes (or copies on)."""
    from bpo.fsio import copy_missing

    order = {RECORD_NAME: 0, "stages": 2}
    names = [entry.name for entry in origin.iterdir() if not entry.name.startswith(".")]
    copy_missing(origin, target, sorted(names, key=lambda name: (order.get(name, 1), name)))


def _provenance(recipe: Recipe, root: Path, *, overwrite: bool, keep: Sequence[str]) -> Provenance:
    """The run's settings record, after refusing a folder that holds something else."""
    settings = run_settings(recipe)
    planned = [root / f"round-{number}" for number in range(1, recipe.rounds.count + 1)]
    provenance = Provenance(
        stage="run",
        record=folder_record(root),
        settings=settings,
        # With --overwrite, a one-round run in the folder goes too.
        outputs=[
            *(root / name for name in ROUNDS_ENTRIES),
            *dict.fromkeys([*planned, *round_folders(root)]),
            *(root / name for name in RUN_ENTRIES if name not in ROUNDS_ENTRIES),
        ],
        subject=f"the run in {root}",
        overwrite=overwrite,
    )
    if root.is_dir() and not overwrite:
        if (root / "stages").is_dir():
            raise ConfigError(
                f"{root} holds a run of one round (rounds.count: 1): give rounds.count=1, "
                "another --out, or --overwrite to replace it"
            )
        if provenance.recorded() is None:
            names = [p.name for p in (*planned, *round_folders(root))]
            refuse_foreign(root, (*ROUNDS_ENTRIES, *names, *keep))
    provenance.check()
    return provenance


def _write_summary(recipe: Recipe, root: Path, rounds: Sequence[Run]) -> None:
    from bpo.report.rounds import SUMMARY_NAME, rounds_summary

    models = {"base": recipe.model.name}
    for run in rounds:
        models[run.dir.name] = str(run.path("model"))
    summary = {
        "rounds": recipe.rounds.count,
        "reference": recipe.rounds.reference,
        **rounds_summary(root, models),
    }
    write_text(root / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
