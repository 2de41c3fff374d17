"""Runs a benchmark: load its items, answer them through a backend, score, save.

Outputs, in ``out/``:

- ``predictions.jsonl``: one ``{"id", "answer", ...}`` per item, appended as
  batches finish. Re-running the same command resumes: items already answered
  are skipped, so a crash costs at most the batch in flight.
- ``settings.json``: the settings the answers were made with (`bpo.provenance`);
  a re-run with other settings (model, prompt, ...) into the same folder is
  refused, naming them, rather than mixing answers (``--overwrite`` replaces them).
- ``results.json``: settings, counts, metrics and per-item details.
- ``skipped.json``: the records skipped under ``--on-error skip``.
- ``judge_cache.jsonl`` (MMHal-Bench): the judge's answers, reused on re-runs.

Answers are generated greedily by default (temperature 0), as papers evaluate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.errors import ConfigError, ErrorPolicy
from bpo.eval import chair, mmhal, pope
from bpo.eval.generation import generate_answers
from bpo.eval.items import EvalItem, RowKeys, match_predictions, prediction_keys
from bpo.fsio import atomic_write, write_text
from bpo.provenance import Provenance, file_digest, folder_record

if TYPE_CHECKING:
    from bpo.backends import Backend

BENCHES = ("pope", "chair", "mmhal")

DEFAULT_PROMPTS = {
    "pope": pope.DEFAULT_PROMPT,
    "chair": chair.DEFAULT_PROMPT,
    "mmhal": mmhal.DEFAULT_PROMPT,
}
# Enough for the answers each benchmark expects: LLaVA's model_vqa_loader gives POPE
# 128 tokens; OPERA describes CHAIR images in up to 512; LLaVA-RLHF's MMHal-Bench
# answers get 1024.
DEFAULT_MAX_NEW_TOKENS = {"pope": 128, "chair": 512, "mmhal": 1024}


@dataclass
class EvalOptions:
    """Everything `evaluate` needs; the CLI fills it from its flags.

    Attributes:
        bench: "pope", "chair" or "mmhal".
        out: the output folder.
        data: the benchmark file (POPE: a question file or a folder of them).
        pope_splits: more POPE question files, as ``NAME=FILE``.
        image_root: the folder image paths are relative to.
        predictions: score the answers in this file instead of generating.
        model, backend, backend_options: what answers (`bpo.backends.get_backend`).
        batch_size: items per call to the backend.
        max_new_tokens: None: the benchmark's default (`DEFAULT_MAX_NEW_TOKENS`).
        temperature, seed: sampling; 0 is greedy.
        limit: answer only the first N items (of each POPE split).
        prompt: the prompt template (``{question}`` is replaced); None: the benchmark's.
        parser: POPE's answer parser, "reference" or "robust".
        coco_instances, coco_captions: CHAIR ground truth files; lexicon: a lexicon
            file extending COCO's.
        judge_backend, judge_model, judge_options: the MMHal-Bench judge.
        judge_cache: its cache file (default: ``out/judge_cache.jsonl``).
        judge_unparsed: "zero" (as the reference) or "exclude".
        judge_max_new_tokens: the judge's answer length.
        on_error: "raise" or "skip" bad records.
        progress: show progress bars.
        overwrite: replace answers made with other settings instead of refusing.
    """

    bench: str
    out: str | os.PathLike[str]
    data: str | os.PathLike[str] | None = None
    pope_splits: list[str] = field(default_factory=list)
    image_root: str | os.PathLike[str] | None = None
    predictions: str | os.PathLike[str] | None = None
    model: str | None = None
    backend: str = "hf"
    backend_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    max_new_tokens: int | None = None
    temperature: float = 0.0
    seed: int = 0
    limit: int | None = None
    prompt: str | None = None
    parser: str = "reference"
    coco_instances: str | os.PathLike[str] | None = None
    coco_captions: str | os.PathLike[str] | None = None
    lexicon: str | os.PathLike[str] | None = None
    judge_backend: str = "openai"
    judge_model: str | None = None
    judge_options: dict[str, Any] = field(default_factory=dict)
    judge_cache: str | os.PathLike[str] | None = None
    judge_unparsed: str = "zero"
    judge_max_new_tokens: int = 1024
    on_error: str = "raise"
    progress: bool = True
    overwrite: bool = False

    def check(self) -> None:
        """Refuse options that cannot work together, before anything runs."""
        if self.bench not in BENCHES:
            raise ConfigError(
                f"unknown benchmark {self.bench!r}; choose one of: {', '.join(BENCHES)}"
            )
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be at least 1")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError("--max-new-tokens must be at least 1")
        if self.temperature < 0:
            raise ConfigError("--temperature must be >= 0")
        pope.get_parser(self.parser)
        if self.judge_unparsed not in mmhal.UNPARSED_POLICIES:
            raise ConfigError(f"--judge-unparsed must be one of {mmhal.UNPARSED_POLICIES}")
        has_data = (
            self.data is not None
            or (self.bench == "pope" and bool(self.pope_splits))
            # An MMHal-Bench response file holds the questions too.
            or (self.bench == "mmhal" and self.predictions is not None)
        )
        if not has_data:
            raise ConfigError(f"--bench {self.bench} needs --data")


def load_items(options: EvalOptions, policy: ErrorPolicy) -> list[EvalItem]:
    """The benchmark's items, as `options` select them."""
    prompt = options.prompt or DEFAULT_PROMPTS[options.bench]
    common: dict[str, Any] = {"prompt": prompt, "limit": options.limit, "policy": policy}
    if options.bench == "pope":
        return pope.load_items(pope.question_files(options.data, options.pope_splits), **common)
    if options.bench == "chair":
        assert options.data is not None
        return chair.load_items(options.data, **common)
    # MMHal-Bench response files hold the questions too: --predictions alone will do.
    source = options.data if options.data is not None else options.predictions
    assert source is not None
    return mmhal.load_items(source, **common)


def _row_keys(bench: str) -> RowKeys:
    return mmhal.prediction_keys if bench == "mmhal" else prediction_keys


def answers_provenance(out: Path, settings: dict[str, Any], *, overwrite: bool) -> Provenance:
    """The settings record of an evaluation folder's answers (and what is scored from them)."""
    return Provenance(
        stage="eval",
        record=folder_record(out),
        settings=settings,
        outputs=[out / "predictions.jsonl", out / "results.json", out / "skipped.json"],
        overwrite=overwrite,
        subject=f"the answers in {out}",
    )


def _write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _copy_predictions(items: Sequence[EvalItem], answers: dict[str, str], path: Path) -> None:
    """Our predictions.jsonl for answers read from elsewhere (ids and fields made uniform).

    Written whole and renamed into place (not appended): it replaces any earlier copy.
    """
    with atomic_write(path) as handle:
        for item in items:
            if item.id in answers:
                record = {"id": item.id, "answer": answers[item.id], **item.fields}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def evaluate(
    options: EvalOptions, *, backend: Backend | None = None, judge: Backend | None = None
) -> dict[str, Any]:
    """Run a benchmark end to end (see the module docstring) and return its results.

    Args:
        options: what to run.
        backend: answer with this backend instead of building one from `options`.
        judge: judge MMHal-Bench with this backend instead of building one.

    Returns:
        The results, as saved in ``out/results.json``.
    """
    from bpo import __version__
    from bpo.backends import get_backend

    options.check()
    policy = ErrorPolicy(on_error=options.on_error)  # type: ignore[arg-type]
    out = Path(options.out)
    predictions_path = out / "predictions.jsonl"
    items = load_items(options, policy)
    if not items:
        raise ConfigError("no items to evaluate")
    max_new_tokens = options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[options.bench]
    settings: dict[str, Any] = {"bench": options.bench}
    counts: dict[str, Any] = {"items": len(items)}

    if options.predictions is not None:
        settings["predictions"] = str(options.predictions)
        own = Path(options.predictions).resolve() == predictions_path.resolve()
        if not own:
            # Answers made elsewhere: they replace this folder's only if it holds none,
            # or holds this very file's (its content is the setting), or with --overwrite.
            provenance = answers_provenance(
                out,
                {"bench": options.bench, "predictions": file_digest(options.predictions)},
                overwrite=options.overwrite,
            )
            provenance.check()
        answers, matched = match_predictions(
            options.predictions, items, policy=policy, row_keys=_row_keys(options.bench)
        )
        if not own:
            provenance.commit()  # the record first: no crash leaves the copy without it
            _copy_predictions(items, answers, predictions_path)
    else:
        if backend is None and not options.model:
            raise ConfigError("give --model to generate answers, or --predictions to score a file")
        generation = {
            "bench": options.bench,
            "model": options.model or backend.model_name,  # type: ignore[union-attr]
            "backend": options.backend if backend is None else backend.name,
            "prompt": options.prompt or DEFAULT_PROMPTS[options.bench],
            "max_new_tokens": max_new_tokens,
            "temperature": options.temperature,
            "seed": options.seed,
            "predictions": None,  # generated here, not read from a file
        }
        provenance = answers_provenance(out, generation, overwrite=options.overwrite)
        provenance.check()
        settings.update(generation)
        from bpo.data.images import check_image_root

        check_image_root(((item.id, item.image) for item in items), options.image_root)
        own = backend is None
        if backend is None:
            backend = get_backend(options.backend, model=options.model, **options.backend_options)
        try:
            stats = generate_answers(
                items,
                backend,
                predictions_path,
                image_root=options.image_root,
                batch_size=options.batch_size,
                max_new_tokens=max_new_tokens,
                temperature=options.temperature,
                seed=options.seed,
                policy=policy,
                progress=options.progress,
                before_first_write=provenance.commit,
                resume=not options.overwrite,
            )
        finally:
            if own:
                backend.close()
        counts.update(asdict(stats))
        answers, matched = match_predictions(predictions_path, items, policy=policy)

    counts["answered"] = len(answers)
    counts["unanswered"] = len(items) - len(answers)
    counts["unmatched_predictions"] = matched["unmatched"]
    counts["duplicate_predictions"] = matched["duplicates"]
    if not answers:
        raise ConfigError("no answers to score: none of the predictions matched an item")
    metrics, details = _score(options, items, answers, settings, policy, judge, out)
    counts["skipped"] = dict(policy.counts)
    results = {
        "bench": options.bench,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bpo_version": __version__,
        "settings": settings,
        "counts": counts,
        "metrics": metrics,
        "details": details,
    }
    _write_json(out / "results.json", results)
    policy.report(out / "skipped.json")
    return results


def _score(
    options: EvalOptions,
    items: list[EvalItem],
    answers: dict[str, str],
    settings: dict[str, Any],
    policy: ErrorPolicy,
    judge: Backend | None,
    out: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    if options.bench == "pope":
        settings["parser"] = options.parser
        return pope.score_items(items, answers, parser=options.parser)
    if options.bench == "chair":
        from bpo.lexicon import ObjectLexicon

        lexicon = ObjectLexicon.default()
        if options.lexicon is not None:
            lexicon = lexicon.extend(ObjectLexicon.load(options.lexicon))
        settings["lexicon"] = str(options.lexicon) if options.lexicon else "coco"
        settings["ground_truth"] = [
            str(path) for path in (options.coco_instances, options.coco_captions) if path
        ] or "objects"
        truth = chair.ground_truth(
            items,
            instances=options.coco_instances,
            captions=options.coco_captions,
            lexicon=lexicon,
            policy=policy,
        )
        return chair.score_items(items, answers, truth, lexicon)
    return _score_mmhal(options, items, answers, settings, judge, out)


def _score_mmhal(
    options: EvalOptions,
    items: list[EvalItem],
    answers: dict[str, str],
    settings: dict[str, Any],
    judge: Backend | None,
    out: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    from bpo.backends import get_backend

    own = judge is None
    if judge is None:
        if not options.judge_model:
            raise ConfigError("MMHal-Bench needs a judge: --judge-model (and --judge-base-url)")
        judge = get_backend(
            options.judge_backend, model=options.judge_model, **options.judge_options
        )
    settings["judge"] = {"backend": judge.name, "model": judge.model_name}
    settings["judge_unparsed"] = options.judge_unparsed
    cache = mmhal.JudgeCache(options.judge_cache or out / "judge_cache.jsonl")
    try:
        return mmhal.score_items(
            items,
            answers,
            judge,
            cache,
            unparsed=options.judge_unparsed,
            batch_size=options.batch_size,
            max_new_tokens=options.judge_max_new_tokens,
            progress=options.progress,
        )
    finally:
        cache.close()
        if own:
            judge.close()
