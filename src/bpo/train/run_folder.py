"""A training run folder: what it holds, its settings record, and the checkpoints it resumes.

``--resume`` continues the newest checkpoint that was saved to the end, provided
the recipe's settings are the run's; ``--overwrite`` replaces the run, once the
new one is about to write (`bpo.provenance`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bpo.config import Recipe, result_settings
from bpo.errors import ConfigError
from bpo.provenance import Provenance, folder_record

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
RESULT_NAME = "train_result.json"
CHECKPOINTS = "checkpoints"
MARGINS_NAME = "reference_margins.json"


def _checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The ``checkpoint-<step>`` folders of a run, oldest first, with their steps."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(run_dir) / CHECKPOINTS
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            prefix, _, step = path.name.partition("-")
            if prefix == PREFIX_CHECKPOINT_DIR and step.isdigit() and path.is_dir():
                found.append((int(step), path))
    return sorted(found)


def is_complete_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether a checkpoint folder was saved to the end.

    `transformers.Trainer._save_checkpoint` writes into ``checkpoint-<step>/`` in
    place (weights, optimizer, scheduler, RNG states) and ``trainer_state.json``
    last; a process killed while saving leaves the folder without it, or with it
    torn. So a checkpoint is complete when that file parses and names its step.
    """
    from transformers.trainer import TRAINER_STATE_NAME

    path = Path(path)
    try:
        state = json.loads((path / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    step = path.name.rpartition("-")[2]
    return isinstance(state, dict) and str(state.get("global_step")) == step


def last_checkpoint(run_dir: str | os.PathLike[str]) -> str | None:
    """The newest complete ``checkpoint-<step>`` folder of a run, or None.

    Unlike `transformers.trainer_utils.get_last_checkpoint`, which takes the
    highest step, a checkpoint half-written by a killed process is passed over
    (see `is_complete_checkpoint`) and the one before it resumed instead.
    """
    for _, path in reversed(_checkpoints(run_dir)):
        if is_complete_checkpoint(path):
            return str(path)
    return None


def discard_incomplete_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the checkpoints newer than the newest complete one; return them.

    Resuming trains again through their steps and saves them anew; deleting them
    first keeps a half-written folder from mixing its stale files into the new
    one, or from counting in the trainer's ``save_total_limit`` rotation.
    """
    resumed = last_checkpoint(run_dir)
    newest = -1 if resumed is None else int(Path(resumed).name.rpartition("-")[2])
    discarded = [path for step, path in _checkpoints(run_dir) if step > newest]
    for path in discarded:
        shutil.rmtree(path)
    return discarded


def train_provenance(recipe: Recipe, *, overwrite: bool = False) -> Provenance:
    """The settings record of a training run: the recipe's model, data, lora and train
    sections, less what cannot change the weights (`bpo.config.result_settings`)."""
    run_dir = Path(recipe.train.output_dir)
    return Provenance(
        stage="train",
        record=folder_record(run_dir),
        settings=result_settings(recipe, ("model", "data", "lora", "train")),
        outputs=[
            run_dir / CHECKPOINTS,
            run_dir / "adapter",
            run_dir / "model",
            run_dir / METRICS_NAME,
            run_dir / RESULT_NAME,
            run_dir / MARGINS_NAME,  # train.select: hardest
            run_dir / "skipped.json",
            run_dir / "tensorboard",  # train.report_to: [tensorboard]
        ],
        where="--output-dir",
        overwrite=overwrite,
        subject=f"the training run in {run_dir}",
    )


def check_run_dir(recipe: Recipe, *, resume: bool, overwrite: bool) -> Provenance:
    """Refuse a run folder that cannot be used, before anything is read or written.

    A folder holding a run needs ``--resume`` (then the recipe's settings must be
    the run's) or ``--overwrite`` (which replaces it only once the new run is
    about to write, `Provenance.commit`).
    """
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: choose one")
    provenance = train_provenance(recipe, overwrite=overwrite)
    held = provenance.existing()
    if held and not resume and not overwrite:
        raise ConfigError(
            f"{recipe.train.output_dir} already holds a run ({held[0].name}); pass --resume "
            "to continue it or --overwrite to start over"
        )
    provenance.check()
    return provenance
