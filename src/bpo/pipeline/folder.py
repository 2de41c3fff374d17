"""A `bpo run` folder: its entries, its stage markers and its settings record."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bpo.config import Recipe, result_settings
from bpo.errors import ConfigError
from bpo.fsio import write_text
from bpo.provenance import Provenance, folder_record

# What a run writes in its folder (besides its settings record); anything else there
# that the caller did not put there itself (`keep`) means the folder is not a run.
RUN_ENTRIES = (
    "config.yaml",
    "stages",
    "negatives",
    "pairs.jsonl",
    "pairs.stats.json",
    "pairs.jsonl.settings.json",
    "pairs.jsonl.skipped.json",
    "train",
    "model",
    "eval",
    "report.html",
)


_ROUND = re.compile(r"round-(\d+)")


def round_folders(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The ``round-K`` folders of a run of several rounds (`bpo.pipeline.rounds`), in order."""
    root = Path(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _ROUND.fullmatch(p.name))]
    return [path for _, path in sorted(found) if path.is_dir()]


def run_settings(recipe: Recipe) -> dict[str, Any]:
    """A run's settings record: the recipe's result settings, less the paths the run sets."""
    settings = result_settings(recipe)
    for key in ("data.pairs", "data.image_root"):  # the run sets them to its own
        settings.pop(key, None)
    return settings


def refuse_foreign(folder: Path, allowed: Sequence[str]) -> None:
    """Refuse a folder holding entries a run does not write (hidden ones aside)."""
    if not folder.is_dir():
        return
    foreign = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name not in allowed and not entry.name.startswith(".")
    )
    if foreign:
        raise ConfigError(
            f"{folder} holds files that are not a bpo run ({', '.join(foreign[:5])}); "
            "give another --out"
        )


class Run:
    """A run folder and its stage markers."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | os.PathLike[str],
        *,
        after_eval: Callable[[Run, str], None] | None = None,
    ) -> None:
        self.recipe = recipe
        self.after_eval = after_eval
        # Set by `bpo.pipeline.rounds` for a round after the first: its eval leaves out
        # the model it starts from (the previous round evaluated it), and its record
        # names that model relative to the round folder, so the run folder can move.
        self.evaluate_base = True
        self.recorded_model: str | None = None
        self.dir = Path(run_dir)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def marker(self, stage: str) -> Path:
        return self.path("stages", f"{stage}.json")

    def done(self, stage: str) -> bool:
        """Whether `stage` finished (the run's settings are checked once, up front)."""
        return self.marker(stage).exists()

    def finish(self, stage: str, outputs: dict[str, Any]) -> None:
        payload = {"stage": stage, "outputs": outputs}
        write_text(self.marker(stage), json.dumps(payload, indent=2, default=str) + "\n")

    def summary(self) -> str:
        """The end-of-run table: training's (`bpo.train.progress.summary_table`), the model
        and the report; empty when the run has not trained."""
        result = self.path("train", "train_result.json")
        if not result.exists():
            return ""
        from bpo.train.progress import summary_table

        data = json.loads(result.read_text(encoding="utf-8"))
        model, report = self.path("model"), self.path("report.html")
        return summary_table(
            self.path("train"),
            global_step=int(data.get("global_step", 0)),
            seconds=float(data.get("metrics", {}).get("train_runtime", 0.0)),
            output=model if model.exists() else data.get("output", ""),
            resumed_from=data.get("resumed_from"),
            more=[("report", str(report))] if report.exists() else [],
        )

    def provenance(self, *, overwrite: bool = False) -> Provenance:
        """The run's settings record: the whole recipe, less what cannot change a result."""
        settings = run_settings(self.recipe)
        if self.recorded_model is not None:
            settings["model.name"] = self.recorded_model
        return Provenance(
            stage="run",
            record=folder_record(self.dir),
            settings=settings,
            # With --overwrite, a run of several rounds (`bpo.pipeline.rounds`) goes too.
            outputs=[self.path(name) for name in (*RUN_ENTRIES, "rounds.json")]
            + round_folders(self.dir),
            subject=f"the run in {self.dir}",
            overwrite=overwrite,
        )

    def check(self, *, keep: Sequence[str] = (), overwrite: bool = False) -> Provenance:
        """Refuse a folder that cannot hold this run, reading only; return its record.

        Refused: a folder holding something that is not a run of bpo (a `bpo
        train` run, other files), or a run made with other settings (unless
        `overwrite`, which then replaces it, at `Provenance.commit`). `keep`
        names what the caller put in the folder itself (the demo's world and
        base model).
        """
        provenance = self.provenance(overwrite=overwrite)
        if not overwrite and (self.path("rounds.json").exists() or self.path("round-1").is_dir()):
            raise ConfigError(
                f"{self.dir} holds a run of several rounds (rounds.count above 1): give "
                "its rounds.count, or another --out"
            )
        if provenance.recorded() is None:
            refuse_foreign(self.dir, (*RUN_ENTRIES, *keep))
        provenance.check()  # another command's folder, or other settings: refused
        return provenance
