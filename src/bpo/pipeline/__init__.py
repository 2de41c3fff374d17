"""`bpo run`: every stage of a recipe, in order, into one run folder.

    RUN/settings.json                   what shapes the run's results (`bpo.provenance`)
    RUN/config.yaml                     the resolved recipe
    RUN/negatives/<strategy>.jsonl      bpo bootstrap, one file per strategy
    RUN/pairs.jsonl (+ .stats.json)     bpo pairs
    RUN/train/                          bpo train (checkpoints, adapter, metrics.jsonl)
    RUN/model/                          bpo export --merge: a standard checkpoint
    RUN/eval/<base|bpo>-<bench>/        bpo eval, before and after training
    RUN/report.html                     bpo report
    RUN/stages/<stage>.json             written when a stage finishes

With ``rounds.count: N`` above 1 (iterative BPO, `bpo.pipeline.rounds`), each
round is such a folder, ``RUN/round-K/``, and ``RUN/rounds.json`` holds every
metric per round.

The stages call the same functions as the commands. Before any of them runs,
the recipe is compared with the run's settings record: a folder holding a run
made with other settings is refused, naming them (``--overwrite`` replaces it),
and so is one holding anything but a run. A finished stage (its marker
present) is skipped on a re-run; an unfinished one resumes where it stopped,
as each stage does on its own. A marker is written (whole, renamed into place)
only after its stage's outputs are complete, so a run killed at any point
(``kill -9`` included) and started again ends with the outputs of an
uninterrupted run (``tests/crash``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from bpo.config import Recipe, check_report_to, save_recipe
from bpo.console import say
from bpo.errors import ConfigError, ErrorPolicy
from bpo.pipeline.folder import Run

STAGES = ("bootstrap", "pairs", "train", "export", "eval", "report")


def _say(message: str) -> None:
    say(f"[bpo run] {message}")


def run_pipeline(
    recipe: Recipe,
    run_dir: str | os.PathLike[str],
    *,
    stages: tuple[str, ...] = STAGES,
    progress: bool = True,
    after_eval: Callable[[Run, str], None] | None = None,
    overwrite: bool = False,
    keep: Sequence[str] = (),
    prepare: Callable[[Run], None] | None = None,
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
        overwrite: replace a run made with other settings instead of refusing.
        keep: names of entries the caller put in `run_dir` itself (see `Run.check`).
        prepare: called as ``prepare(run)`` once the folder is the run's, before the
            stages (the ablation gives a run what it shares with another there).

    Returns:
        The run (with ``rounds.count`` above 1, the last round's: see `run_rounds`).

    Raises:
        ConfigError: before any stage, for a recipe that cannot run or a folder
            that holds something else (`Run.check`).
    """
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; valid: {', '.join(STAGES)}")
    if not recipe.samples.path:
        raise ConfigError("samples.path is not set: the supervised samples to bootstrap from")
    if not recipe.model.name:
        raise ConfigError("model.name is not set: the model to bootstrap from and train")
    if recipe.rounds.count > 1:
        from bpo.pipeline.rounds import run_rounds

        if prepare is not None:
            raise ConfigError("rounds.count above 1 is for `bpo run`; give rounds.count=1")
        return run_rounds(
            recipe, run_dir, stages=stages, progress=progress, after_eval=after_eval,
            overwrite=overwrite, keep=keep,
        )  # fmt: skip
    run = prepared_run(recipe, run_dir, after_eval=after_eval)
    provenance = run.check(keep=keep, overwrite=overwrite)
    check_stages(recipe, stages)
    provenance.commit()
    return run_stages(run, stages, progress=progress, prepare=prepare)


def check_stages(recipe: Recipe, stages: tuple[str, ...]) -> None:
    """What can stop `stages` before they start, checked before anything is written."""
    if "train" in stages:  # a tracker that is not installed stops the run now, not at train
        check_report_to(recipe.train.report_to, installed=True)
    if "eval" in stages:
        from bpo.eval.recipe import check_eval

        check_eval(recipe.eval)
    if "bootstrap" in stages and "image-weakening" in recipe.bootstrap.strategies:
        _check_images(recipe)


def run_stages(
    run: Run,
    stages: tuple[str, ...],
    *,
    progress: bool = True,
    prepare: Callable[[Run], None] | None = None,
) -> Run:
    """The stages of a checked run whose settings record is saved (see `run_pipeline`)."""
    save_recipe(run.recipe, run.path("config.yaml"))
    if prepare is not None:
        prepare(run)
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


def prepared_run(
    recipe: Recipe,
    run_dir: str | os.PathLike[str],
    *,
    after_eval: Callable[[Run, str], None] | None = None,
) -> Run:
    """The `Run` of `recipe` in `run_dir`, with the paths the run sets in the recipe."""
    run = Run(recipe, run_dir, after_eval=after_eval)
    recipe.data.pairs = str(run.path("pairs.jsonl"))
    recipe.data.image_root = recipe.samples.image_root
    recipe.train.output_dir = str(run.path("train"))
    return run


def _check_images(recipe: Recipe) -> None:
    """Stop before a model loads when the samples' images are not under samples.image_root."""
    from bpo.data.formats import read_samples
    from bpo.data.images import check_image_root

    quiet = ErrorPolicy(on_error="skip")
    samples = read_samples(recipe.samples.path, format=recipe.samples.format, policy=quiet)
    check_image_root(
        ((sample.id, sample.image) for sample in samples),
        recipe.samples.image_root,
        flag="samples.image_root",
    )


def _bootstrap(run: Run, progress: bool) -> None:
    from bpo.backends import backend_options
    from bpo.bootstrap.runner import negatives_provenance, run_bootstrap
    from bpo.bootstrap.strategies import strategy_settings
    from bpo.engine.work import BackendSpec, StrategySpec

    recipe = run.recipe
    config = recipe.bootstrap
    for name in config.strategies:
        stage = f"bootstrap-{name}"
        if run.done(stage):
            _say(f"{stage}: done already")
            continue
        backend = None
        engine = config.engine_options()
        model = recipe.model.name
        if name == "llm-injection":
            model = config.injection_model or model
        strategy_options: dict[str, Any] = {
            "distortion": config.distortion,
            "distortion_params": config.distortion_params,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_new_tokens": config.max_new_tokens,
            "style": config.style,
            "lexicon": config.lexicon,
        }
        settings = strategy_settings(
            name,
            num_negatives=config.num_negatives,
            seed=config.seed,
            model=model,
            backend=config.backend,
            dtype=recipe.model.dtype,
            **strategy_options,
        )
        out = run.path("negatives", f"{name}.jsonl")
        negatives_provenance(out, settings).check()
        if name != "cooccurrence":
            options = backend_options(
                config.backend,
                base_url=config.base_url,
                device=config.device,
                batch_size=config.batch_size * config.num_negatives,
                # The recipe's model settings: what the user allowed for its checkpoints.
                dtype=recipe.model.dtype,
                trust_remote_code=recipe.model.trust_remote_code,
                allow_pickle=recipe.model.allow_pickle,
                # The image sizes the model is trained at, for its negatives too.
                processor_kwargs=recipe.model.processor_kwargs,
            )
            backend = BackendSpec(config.backend, model, options)
        strategy = StrategySpec(name, strategy_options, backend)
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
            settings=settings,
            engine=engine,
        )
        run.finish(stage, summary.to_dict())


def _pairs(run: Run, progress: bool) -> None:
    from fractions import Fraction

    from bpo.lexicon import ObjectLexicon
    from bpo.pairs import build_pairs

    recipe = run.recipe
    config = recipe.pairs
    if run.done("pairs"):
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
        lexicon_path=recipe.bootstrap.lexicon,
        mix={name: Fraction(ratio).limit_denominator() for name, ratio in config.mix.items()}
        or None,
        seed=config.seed,
        policy=ErrorPolicy(on_error=recipe.samples.on_error),  # type: ignore[arg-type]
        image_root=recipe.samples.image_root,
    )
    kept = sum(stats.kept.values())
    if kept == 0:
        raise ConfigError(f"no pairs were kept (see {recipe.data.pairs}.stats.json)")
    run.finish("pairs", {"kept": dict(stats.kept)})


def _train(run: Run, progress: bool) -> None:
    from bpo.train.runner import train

    recipe = run.recipe
    if run.done("train"):
        _say("train: done already")
        return
    _say(f"train: -> {recipe.train.output_dir}")
    result = train(recipe, resume=True)
    run.finish("train", {"global_step": result.global_step, "output": str(result.output)})


def _export(run: Run, progress: bool) -> None:
    from bpo.train.export import export_run

    if run.done("export"):
        _say("export: done already")
        return
    out = run.path("model")
    # export_run replaces `out` only once the new model is whole: a crash leaves the old one.
    _say(f"export: merged model -> {out}")
    export_run(run.recipe.train.output_dir, out, merge=True)
    run.finish("export", {"model": str(out)})


def _eval(run: Run, progress: bool) -> None:
    from bpo.backends import backend_options
    from bpo.engine.work import AnswerWork, BackendSpec
    from bpo.eval.recipe import EVAL_KEYS, eval_options
    from bpo.eval.runner import evaluate

    recipe = run.recipe
    config = recipe.eval
    benches = config.benches()
    if not benches:
        _say(f"eval: no benchmark in the recipe (eval.{', eval.'.join(EVAL_KEYS)})")
        return
    models = {"base": recipe.model.name, "bpo": str(run.path("model"))}
    if not run.evaluate_base:
        del models["base"]
    for label, model in models.items():
        stage = f"eval-{label}"
        if run.done(stage):
            _say(f"{stage}: done already")
            continue
        options = backend_options(
            "hf",
            device=recipe.bootstrap.device,
            batch_size=config.batch_size,
            dtype=recipe.model.dtype,
            trust_remote_code=recipe.model.trust_remote_code,
            allow_pickle=recipe.model.allow_pickle,
            processor_kwargs=recipe.model.processor_kwargs,
        )
        # One model for every benchmark: built here, or by each benchmark's Ray replicas.
        engine = recipe.bootstrap.engine_options()
        work = AnswerWork(BackendSpec("hf", model, options))
        if engine.engine == "local":
            work.prepare()
        try:
            for bench, data in benches.items():
                options_ = eval_options(
                    recipe, bench, data, out=run.path("eval", f"{label}-{bench}"),
                    model=model, judge_cache=run.path("eval", f"judge_cache-{bench}.jsonl"),
                    progress=progress,
                )  # fmt: skip
                _say(f"{stage}: {bench} -> {options_.out}")
                options_.engine, options_.backend_options = engine, options
                evaluate(options_, backend=work.backend)
        finally:
            work.close()
        if run.after_eval is not None:
            run.after_eval(run, label)
        run.finish(stage, {"benches": list(benches)})


def _report(run: Run, progress: bool) -> None:
    from bpo.report import write_report

    path = write_report(run.dir)
    _say(f"report: {path}")


__all__ = ["STAGES", "Run", "check_stages", "prepared_run", "run_pipeline", "run_stages"]
