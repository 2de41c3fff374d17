"""`bpo run`: every stage of a recipe, in order, into one run folder.

    RUN/config.yaml                     the resolved recipe
    RUN/negatives/<strategy>.jsonl      bpo bootstrap, one file per strategy
    RUN/pairs.jsonl (+ .stats.json)     bpo pairs
    RUN/train/                          bpo train (checkpoints, adapter, metrics.jsonl)
    RUN/model/                          bpo export --merge: a standard checkpoint
    RUN/eval/<base|bpo>-<bench>/        bpo eval, before and after training
    RUN/report.html                     bpo report
    RUN/stages/<stage>.json             written when a stage finishes

The stages call the same functions as the commands. A finished stage (its
marker present, with the same settings) is skipped on a re-run; an unfinished
one resumes where it stopped, as each stage does on its own. A marker is
written (whole, renamed into place) only after its stage's outputs are
complete, so a run killed at any point (``kill -9`` included) and started again
ends with the outputs of an uninterrupted run (``tests/crash``). Changing a
stage's settings for an existing run folder is refused rather than mixing results.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bpo.config import Recipe, save_recipe
from bpo.errors import ConfigError, ErrorPolicy
from bpo.fsio import write_text

STAGES = ("bootstrap", "pairs", "train", "export", "eval", "report")


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
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def marker(self, stage: str) -> Path:
        return self.path("stages", f"{stage}.json")

    def done(self, stage: str, settings: dict[str, Any]) -> bool:
        """Whether `stage` finished with these settings; refuses other settings."""
        marker = self.marker(stage)
        if not marker.exists():
            return False
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if recorded.get("settings_hash") != _hash(settings):
            raise ConfigError(
                f"{self.dir}: the {stage} stage already ran with other settings "
                f"(see {marker}); use a new run folder"
            )
        return True

    def finish(self, stage: str, settings: dict[str, Any], outputs: dict[str, Any]) -> None:
        payload = {"stage": stage, "settings_hash": _hash(settings), "outputs": outputs}
        write_text(self.marker(stage), json.dumps(payload, indent=2, default=str) + "\n")


def _hash(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _say(message: str) -> None:
    import sys

    print(f"[bpo run] {message}", file=sys.stderr, flush=True)


def run_pipeline(
    recipe: Recipe,
    run_dir: str | os.PathLike[str],
    *,
    stages: tuple[str, ...] = STAGES,
    progress: bool = True,
    after_eval: Callable[[Run, str], None] | None = None,
) -> Run:
    """Run the recipe's stages into `run_dir`, skipping those already finished.

    Args:
        recipe: the resolved recipe; ``data.pairs``, ``data.image_root`` and
            ``train.output_dir`` are set here to the run folder's.
        run_dir: the run folder.
        stages: which stages to run (in pipeline order).
        progress: show progress bars.
        after_eval: called as ``after_eval(run, label)`` after each model's
            benchmarks, label "base" or "bpo" (the toy world adds its measures there).
    """
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; valid: {', '.join(STAGES)}")
    if not recipe.samples.path:
        raise ConfigError("samples.path is not set: the supervised samples to bootstrap from")
    if not recipe.model.name:
        raise ConfigError("model.name is not set: the model to bootstrap from and train")
    run = Run(recipe, run_dir, after_eval=after_eval)
    recipe.data.pairs = str(run.path("pairs.jsonl"))
    recipe.data.image_root = recipe.samples.image_root
    recipe.train.output_dir = str(run.path("train"))
    save_recipe(recipe, run.path("config.yaml"))
    steps: dict[str, Callable[[Run, bool], None]] = {
        "bootstrap": _bootstrap,
        "pairs": _pairs,
        "train": _train,
        "export": _export,
        "eval": _eval,
        "report": _report,
    }
    for stage in STAGES:
        if stage in stages:
            steps[stage](run, progress)
    return run


def _bootstrap(run: Run, progress: bool) -> None:
    from bpo.backends import backend_options, get_backend
    from bpo.bootstrap.runner import run_bootstrap
    from bpo.bootstrap.strategies import make_strategy

    recipe = run.recipe
    config = recipe.bootstrap
    for name in config.strategies:
        settings = {"samples": asdict(recipe.samples), "bootstrap": asdict(config), "name": name}
        stage = f"bootstrap-{name}"
        if run.done(stage, settings):
            _say(f"{stage}: done already")
            continue
        backend = None
        if name != "cooccurrence":
            model = recipe.model.name
            if name == "llm-injection":
                model = config.injection_model or model
            options = backend_options(
                config.backend,
                base_url=config.base_url,
                device=config.device,
                batch_size=config.batch_size * config.num_negatives,
                # The recipe's model settings: what the user allowed for its checkpoints.
                dtype=recipe.model.dtype,
                trust_remote_code=recipe.model.trust_remote_code,
                allow_pickle=recipe.model.allow_pickle,
            )
            backend = get_backend(config.backend, model=model, **options)
        strategy = make_strategy(
            name,
            backend=backend,
            distortion=config.distortion,
            distortion_params=config.distortion_params,
            temperature=config.temperature,
            top_p=config.top_p,
            max_new_tokens=config.max_new_tokens,
            style=config.style,
            lexicon=config.lexicon,
        )
        out = run.path("negatives", f"{name}.jsonl")
        out.parent.mkdir(parents=True, exist_ok=True)
        _say(f"{stage}: {recipe.samples.path} -> {out}")
        summary = run_bootstrap(
            recipe.samples.path,
            strategy,
            out,
            image_root=recipe.samples.image_root,
            format=recipe.samples.format,
            num_negatives=config.num_negatives,
            seed=config.seed,
            batch_size=config.batch_size,
            policy=ErrorPolicy(on_error=recipe.samples.on_error),  # type: ignore[arg-type]
            progress=progress,
        )
        if backend is not None:
            backend.close()
        run.finish(stage, settings, summary.to_dict())


def _pairs(run: Run, progress: bool) -> None:
    from fractions import Fraction

    from bpo.lexicon import ObjectLexicon
    from bpo.pairs import build_pairs

    recipe = run.recipe
    config = recipe.pairs
    settings = {"samples": asdict(recipe.samples), "pairs": asdict(config)}
    if run.done("pairs", settings):
        _say("pairs: done already")
        return
    negatives = [run.path("negatives", f"{name}.jsonl") for name in recipe.bootstrap.strategies]
    lexicon = None
    if config.require_absent_object:
        lexicon = ObjectLexicon.default()
        if recipe.bootstrap.lexicon:
            lexicon = lexicon.extend(ObjectLexicon.load(recipe.bootstrap.lexicon))
    _say(f"pairs: -> {recipe.data.pairs}")
    stats = build_pairs(
        recipe.samples.path,
        negatives,
        recipe.data.pairs,
        format=recipe.samples.format,
        max_words=config.max_words,
        max_similarity=config.max_similarity,
        lexicon=lexicon,
        mix={name: Fraction(ratio).limit_denominator() for name, ratio in config.mix.items()}
        or None,
        seed=config.seed,
        policy=ErrorPolicy(on_error=recipe.samples.on_error),  # type: ignore[arg-type]
    )
    kept = sum(stats.kept.values())
    if kept == 0:
        raise ConfigError(f"no pairs were kept (see {recipe.data.pairs}.stats.json)")
    run.finish("pairs", settings, {"kept": dict(stats.kept)})


def _train(run: Run, progress: bool) -> None:
    from bpo.train.runner import train

    recipe = run.recipe
    settings = {
        "model": asdict(recipe.model),
        "lora": asdict(recipe.lora),
        "train": asdict(recipe.train),
    }
    if run.done("train", settings):
        _say("train: done already")
        return
    _say(f"train: -> {recipe.train.output_dir}")
    result = train(recipe, resume=True)
    run.finish("train", settings, {"global_step": result.global_step, "output": str(result.output)})


def _export(run: Run, progress: bool) -> None:
    from bpo.train.export import export_run

    settings = {"train": run.recipe.train.output_dir}
    if run.done("export", settings):
        _say("export: done already")
        return
    out = run.path("model")
    # export_run replaces `out` only once the new model is whole: a crash leaves the old one.
    _say(f"export: merged model -> {out}")
    export_run(run.recipe.train.output_dir, out, merge=True)
    run.finish("export", settings, {"model": str(out)})


def _eval(run: Run, progress: bool) -> None:
    from bpo.backends import backend_options, get_backend
    from bpo.eval.runner import EvalOptions, evaluate

    recipe = run.recipe
    config = recipe.eval
    benches = {
        name: path for name, path in (("chair", config.chair), ("pope", config.pope)) if path
    }
    if not benches:
        _say("eval: no benchmark in the recipe (eval.chair, eval.pope)")
        return
    models = {"base": recipe.model.name, "bpo": str(run.path("model"))}
    for label, model in models.items():
        settings = {"eval": asdict(config), "model": model}
        stage = f"eval-{label}"
        if run.done(stage, settings):
            _say(f"{stage}: done already")
            continue
        options = backend_options(
            "hf",
            device=recipe.bootstrap.device,
            batch_size=config.batch_size,
            dtype=recipe.model.dtype,
            trust_remote_code=recipe.model.trust_remote_code,
            allow_pickle=recipe.model.allow_pickle,
        )
        backend = get_backend("hf", model=model, **options)
        try:
            for bench, data in benches.items():
                out = run.path("eval", f"{label}-{bench}")
                _say(f"{stage}: {bench} -> {out}")
                evaluate(
                    EvalOptions(
                        bench=bench,
                        out=out,
                        data=data,
                        image_root=config.image_root or recipe.samples.image_root,
                        model=model,
                        batch_size=config.batch_size,
                        max_new_tokens=config.max_new_tokens,
                        on_error=recipe.samples.on_error,
                        progress=progress,
                    ),
                    backend=backend,
                )
        finally:
            backend.close()
        if run.after_eval is not None:
            run.after_eval(run, label)
        run.finish(stage, settings, {"benches": list(benches)})


def _report(run: Run, progress: bool) -> None:
    from bpo.report import write_report

    path = write_report(run.dir)
    _say(f"report: {path}")
