"""`bpo demo`: the toy world through every stage of `bpo run`, then a before/after table.

    OUT/world/     the toy world (`bpo.toy.world`)
    OUT/base/      its biased base model (`bpo.toy.base_model`)
    OUT/data/      the preference scenes' caption samples
    OUT/...        what `bpo run` writes (negatives, pairs, train, model, eval, report)

The toy recipe (``bpo/resources/toy.yaml``) is an ordinary recipe; the demo only
fills in the paths. After each model's benchmarks it adds the toy world's own
measures (``eval/<label>-toy/results.json``), which need to know which object is
a scene's absent partner.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from bpo.console import say
from bpo.data.jsonl import iter_jsonl
from bpo.pipeline import Run, run_pipeline

# Sizes that make the whole demo a smoke test (`--fast`): every stage runs, on
# too little data to show anything.
FAST_WORLD: dict[str, Any] = {
    "vision": 64,
    "corpus": 500,
    "sft": 32,
    "preference": 48,
    "validation": 4,
    "test": 8,
}
FAST_BASE: dict[str, Any] = {
    **{f"{stage}_steps": 10 for stage in ("vision", "text", "sft")},
    **{f"{stage}_batch_size": 8 for stage in ("vision", "text", "sft")},
}
FAST_RECIPE = ("train.max_steps=2", "train.logging_steps=1", "bootstrap.num_negatives=1")


# What the demo puts in its folder beside the run's own outputs.
DEMO_ENTRIES = ("world", "base", "data")


def toy_recipe_path() -> Path:
    return Path(str(resources.files("bpo") / "resources" / "toy.yaml"))


def caption_samples(world: Any, out: Path) -> Path:
    """The preference scenes' caption samples (yes/no answers name no object to inject)."""
    from bpo.fsio import atomic_write

    path = out / "data" / "preference.jsonl"
    if not path.exists():
        with atomic_write(path) as handle:
            for sample in world.samples("preference", task="caption"):
                handle.write(json.dumps(sample.to_dict(), ensure_ascii=False) + "\n")
    return path


def base_model(
    world: Any, target: Path, *, seed: int, fast: bool, from_scratch: bool, progress: bool
) -> Path:
    """The shipped base model when it was trained on this very world, else a new build."""
    import shutil

    from bpo.fsio import atomic_dir
    from bpo.toy.base_model import (
        BUILD_FILE,
        BaseModelSettings,
        build_base_model,
        built_from,
        shipped_checkpoint,
    )

    if (target / BUILD_FILE).exists():  # written last: a complete earlier build
        return target
    if not (from_scratch or fast):
        shipped = shipped_checkpoint()
        if built_from(shipped) == (seed, world.fingerprint, asdict(BaseModelSettings())):
            say(f"[bpo demo] base model: the shipped checkpoint ({shipped})")
            with atomic_dir(target) as staging:
                shutil.copytree(shipped, staging, dirs_exist_ok=True)
            return target
    say(f"[bpo demo] training the biased base model (seed {seed}) from scratch")
    return build_base_model(
        world.root, target, seed=seed, progress=progress, **(FAST_BASE if fast else {})
    )


def score_captions(world: Any, split: str, predictions: Path) -> dict[str, Any]:
    """The toy world's measures (`bpo.toy.metrics`) of the captions in a predictions file."""
    from bpo.toy.metrics import caption_metrics

    answers = {row["id"]: row["answer"] for _, row in iter_jsonl(predictions)}
    return caption_metrics(world.samples(split, task="caption"), answers, spec=world.spec)


def toy_measures(run: Run, label: str) -> None:
    """Score the captions `label` wrote on the test scenes with the toy world's measures."""
    from bpo.fsio import write_text
    from bpo.toy.world import ToyWorld

    chair = run.path("eval", f"{label}-chair")
    world = ToyWorld.load(run.recipe.eval.image_root or "")  # the demo sets it to the world
    metrics = score_captions(world, "test", chair / "predictions.jsonl")
    counts = metrics.pop("counts")
    results = {
        "bench": "toy",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {"bench": "toy", "predictions": str(chair / "predictions.jsonl")},
        "counts": counts,
        "metrics": metrics,
        "details": {},
    }
    write_text(
        run.path("eval", f"{label}-toy", "results.json"), json.dumps(results, indent=2) + "\n"
    )


def run_demo(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    fast: bool = False,
    from_scratch: bool = False,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> Run:
    """World, base model, then `bpo run` on the toy recipe; prints the before/after table.

    Args:
        out: the demo folder (resumed if it exists).
        seed: seeds the world, the base model, the bootstrap and the training.
        fast: tiny sizes: a smoke test of every stage, not a result.
        from_scratch: train the base model even where the shipped one fits the world.
        overrides: dotted recipe overrides, as for `bpo run`.
        progress: show progress bars.
    """
    from bpo.config import load_recipe
    from bpo.toy.world import ToyWorld, write_world

    root = Path(out)
    world_dir = write_world(
        root / "world", seed=seed, progress=progress, **(FAST_WORLD if fast else {})
    )
    world = ToyWorld.load(world_dir)
    base = base_model(
        world, root / "base", seed=seed, fast=fast, from_scratch=from_scratch, progress=progress
    )
    paths = [
        f"model.name={base}",
        f"samples.path={caption_samples(world, root)}",
        f"samples.image_root={world_dir}",
        f"eval.chair={world.samples_path('test')}",
        f"eval.pope={world.pope_path('test', 'counterfactual')}",
        f"eval.image_root={world_dir}",
        f"bootstrap.seed={seed}",
        f"train.seed={seed}",
    ]
    recipe = load_recipe(toy_recipe_path(), [*paths, *(FAST_RECIPE if fast else ()), *overrides])
    run = run_pipeline(recipe, root, progress=progress, after_eval=toy_measures, keep=DEMO_ENTRIES)
    summary = run.summary()
    if summary:
        say(f"[bpo demo] trained\n{summary}")
    print(before_after(root))
    return run


# The demo's headline numbers: (bench, dotted metric, name).
HEADLINE = (
    ("toy", "cf_absent_partner_rate", "CF absent-partner rate"),
    ("chair", "chair_i", "CHAIR_i"),
    ("chair", "chair_s", "CHAIR_s"),
    ("chair", "recall", "recall"),
    ("toy", "cf_recall", "CF recall"),
    ("toy", "normal_dependent_recall", "normal dependent recall"),
    ("pope", "overall.accuracy", "POPE (CF) accuracy"),
    ("pope", "overall.f1", "POPE (CF) F1"),
    ("pope", "overall.yes_ratio", "POPE (CF) yes-ratio"),
)


def _metric(results: dict[str, Any], dotted: str) -> float | None:
    value: Any = results.get("metrics", {})
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) else None


def before_after(run_dir: str | os.PathLike[str]) -> str:
    """The headline metrics of the base and the BPO model as a plain-text table."""
    root = Path(run_dir)
    lines = [f"{'metric':<26}{'base':>8}{'bpo':>8}{'change':>9}"]
    for bench, dotted, name in HEADLINE:
        values = []
        for label in ("base", "bpo"):
            path = root / "eval" / f"{label}-{bench}" / "results.json"
            results = json.loads(path.read_text()) if path.exists() else {}
            values.append(_metric(results, dotted))
        before, after = values
        cells = [f"{v:8.3f}" if v is not None else f"{'-':>8}" for v in values]
        change = f"{after - before:+9.3f}" if before is not None and after is not None else ""
        lines.append(f"{name:<26}{''.join(cells)}{change}")
    return "\n".join(lines)
