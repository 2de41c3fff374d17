"""The benchmarks by name: how `bpo.eval.runner.evaluate` loads, matches and scores each.

A `Bench` names what differs between benchmarks (its default prompt and answer
length, how its items load, how answers made elsewhere find their item, how it
scores); everything else (generation, resuming, the settings record, results.json)
is the runner's, the same for all. Adding a benchmark is one entry in `BENCHES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.errors import ConfigError, ErrorPolicy
from bpo.eval import amber, chair, hallusion, mmhal, objhal, pope
from bpo.eval.items import EvalItem, RowKeys, prediction_keys

if TYPE_CHECKING:
    from bpo.backends import Backend
    from bpo.eval.runner import EvalOptions


@dataclass
class ScoreContext:
    """What a benchmark's scorer may use; it records the settings it scored with."""

    options: EvalOptions
    items: list[EvalItem]
    answers: dict[str, str]
    settings: dict[str, Any]
    policy: ErrorPolicy
    judge: Backend | None
    out: Path


Scored = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class Bench:
    """One benchmark.

    Attributes:
        prompt: the default prompt template (``{question}`` is replaced).
        max_new_tokens: the default answer length.
        load: ``load(options, common)`` -> items; `common` holds prompt, limit, policy.
        score: ``score(context)`` -> (metrics, details).
        row_keys: the names a prediction line gives its item (`bpo.eval.items.match_predictions`).
        self_contained: its answer files hold the questions too (--data may be left out).
    """

    prompt: str
    max_new_tokens: int
    load: Callable[[EvalOptions, dict[str, Any]], list[EvalItem]]
    score: Callable[[ScoreContext], Scored]
    row_keys: RowKeys = prediction_keys
    self_contained: bool = False


def _source(options: EvalOptions) -> str | os.PathLike[str]:
    """--data, else (a benchmark whose answer files hold the questions) --predictions."""
    source = options.data if options.data is not None else options.predictions
    if source is None:
        raise ConfigError(f"--bench {options.bench} needs --data")
    return source


def _lexicon(options: EvalOptions, settings: dict[str, Any]) -> Any:
    from bpo.lexicon import ObjectLexicon

    lexicon = ObjectLexicon.default()
    if options.lexicon is not None:
        lexicon = lexicon.extend(ObjectLexicon.load(options.lexicon))
    settings["lexicon"] = str(options.lexicon) if options.lexicon else "coco"
    return lexicon


def paths(value: Any) -> list[str]:
    """A path option that may be given once or several times, as a list of strings."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(path) for path in value]


def _with_judge(context: ScoreContext, run: Callable[[Backend, Any], Scored]) -> Scored:
    """Run `run(judge, cache)` with the given judge or one built from the options."""
    from bpo.backends import get_backend

    options = context.options
    judge = context.judge
    own = judge is None
    if judge is None:
        if not options.judge_model:
            raise ConfigError(
                f"--bench {options.bench} needs a judge here: --judge-model (and --judge-base-url)"
            )
        judge = get_backend(
            options.judge_backend, model=options.judge_model, **options.judge_options
        )
    context.settings["judge"] = {"backend": judge.name, "model": judge.model_name}
    cache = mmhal.JudgeCache(options.judge_cache or context.out / "judge_cache.jsonl")
    try:
        return run(judge, cache)
    finally:
        cache.close()
        if own:
            judge.close()


# ------------------------------------------------------------------------- per benchmark


def _load_pope(options: EvalOptions, common: dict[str, Any]) -> list[EvalItem]:
    return pope.load_items(pope.question_files(options.data, options.pope_splits), **common)


def _score_pope(context: ScoreContext) -> Scored:
    context.settings["parser"] = context.options.parser
    return pope.score_items(context.items, context.answers, parser=context.options.parser)


def _load_chair(options: EvalOptions, common: dict[str, Any]) -> list[EvalItem]:
    return chair.load_items(_source(options), **common)


def _score_chair(context: ScoreContext) -> Scored:
    options = context.options
    lexicon = _lexicon(options, context.settings)
    instances, captions = paths(options.coco_instances), paths(options.coco_captions)
    context.settings["ground_truth"] = [*instances, *captions] or "objects"
    truth = chair.ground_truth(
        context.items,
        instances=instances,
        captions=captions,
        lexicon=lexicon,
        policy=context.policy,
    )
    return chair.score_items(context.items, context.answers, truth, lexicon)


def _load_mmhal(options: EvalOptions, common: dict[str, Any]) -> list[EvalItem]:
    return mmhal.load_items(_source(options), **common)


def _score_mmhal(context: ScoreContext) -> Scored:
    options = context.options
    context.settings["judge_parser"] = options.parser
    context.settings["judge_unparsed"] = options.judge_unparsed
    return _with_judge(
        context,
        lambda judge, cache: mmhal.score_items(
            context.items, context.answers, judge, cache,
            parser=options.parser, unparsed=options.judge_unparsed,
            batch_size=options.batch_size, max_new_tokens=options.judge_max_new_tokens,
            progress=options.progress,
        ),
    )  # fmt: skip


def amber_folder(options: EvalOptions) -> Path:
    if options.amber_dir is None:
        raise ConfigError(
            "--bench amber needs --amber-dir: AMBER's data/ folder "
            "(annotations.json, relation.json, safe_words.txt)"
        )
    return Path(options.amber_dir)


def _load_amber(options: EvalOptions, common: dict[str, Any]) -> list[EvalItem]:
    # Without --data: every query (query/query_all.json in AMBER's data/ folder).
    source = options.data or amber_folder(options) / "query" / "query_all.json"
    return amber.load_items(source, **common)


def _score_amber(context: ScoreContext) -> Scored:
    folder = amber_folder(context.options)
    context.settings["parser"] = context.options.parser
    context.settings["ground_truth"] = str(folder)
    data = amber.AmberData.load(folder)
    return amber.score_items(
        context.items, context.answers, data, parser=context.options.parser, policy=context.policy
    )


def _load_objhal(options: EvalOptions, common: dict[str, Any]) -> list[EvalItem]:
    return objhal.load_items(_source(options), **common)


def _score_objhal(context: ScoreContext) -> Scored:
    options = context.options
    if options.objects_from not in objhal.EXTRACTORS:
        raise ConfigError(f"--objects-from must be one of {', '.join(objhal.EXTRACTORS)}")
    lexicon = _lexicon(options, context.settings)
    instances, captions = paths(options.coco_instances), paths(options.coco_captions)
    context.settings["ground_truth"] = [*instances, *captions]
    context.settings["objects_from"] = options.objects_from
    truth = objhal.ground_truth(
        context.items, instances=instances, captions=captions, lexicon=lexicon
    )
    if options.objects_from == "lexicon":
        return objhal.score_items(context.items, context.answers, truth, lexicon)
    return _with_judge(
        context,
        lambda judge, cache: objhal.score_items(
            context.items, context.answers, truth, lexicon, judge=judge, cache=cache,
            batch_size=options.batch_size, max_new_tokens=options.judge_max_new_tokens,
            progress=options.progress,
        ),
    )  # fmt: skip


def _load_hallusion(options: EvalOptions, common: dict[str, Any]) -> list[EvalItem]:
    return hallusion.load_items(_source(options), **common)


def _score_hallusion(context: ScoreContext) -> Scored:
    context.settings["parser"] = context.options.parser
    return hallusion.score_items(context.items, context.answers, parser=context.options.parser)


# Default answer lengths: LLaVA's model_vqa_loader gives POPE 128 tokens; OPERA
# describes CHAIR images in up to 512; LLaVA-RLHF's MMHal-Bench answers get 1024;
# descriptions (AMBER's generative task, Object HalBench) 512 as CHAIR's;
# HallusionBench's yes/no answers 128 as POPE's.
BENCHES: dict[str, Bench] = {
    "pope": Bench(pope.DEFAULT_PROMPT, 128, _load_pope, _score_pope),
    "chair": Bench(chair.DEFAULT_PROMPT, 512, _load_chair, _score_chair),
    "mmhal": Bench(
        mmhal.DEFAULT_PROMPT, 1024, _load_mmhal, _score_mmhal, mmhal.prediction_keys, True
    ),
    "amber": Bench(amber.DEFAULT_PROMPT, 512, _load_amber, _score_amber, amber.prediction_keys),
    "objhal": Bench(objhal.DEFAULT_PROMPT, 512, _load_objhal, _score_objhal),
    "hallusion": Bench(
        hallusion.DEFAULT_PROMPT,
        128,
        _load_hallusion,
        _score_hallusion,
        hallusion.prediction_keys,
        True,
    ),
}


def get_bench(name: str) -> Bench:
    """The benchmark registered under `name`; a ConfigError lists the valid names."""
    if name not in BENCHES:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHES)}")
    return BENCHES[name]


def names() -> Sequence[str]:
    return tuple(BENCHES)
