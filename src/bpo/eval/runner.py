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
- ``judge_cache.jsonl`` (MMHal-Bench, Object HalBench with a judge): the judge's
  answers, reused on re-runs.

Benchmarks are chosen by name from `bpo.eval.benches.BENCHES`.

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

from bpo.engine import EngineOptions
from bpo.engine.work import BackendSpec
from bpo.errors import ConfigError, ErrorPolicy
from bpo.eval import mmhal, objhal, pope
from bpo.eval.benches import BENCHES, ScoreContext, get_bench
from bpo.eval.generation import generate_answers
from bpo.eval.items import EvalItem, match_predictions
from bpo.fsio import atomic_write, write_text
from bpo.provenance import Provenance, file_digest, folder_record

if TYPE_CHECKING:
    from bpo.backends import Backend

DEFAULT_PROMPTS = {name: bench.prompt for name, bench in BENCHES.items()}
DEFAULT_MAX_NEW_TOKENS = {name: bench.max_new_tokens for name, bench in BENCHES.items()}


@dataclass
class EvalOptions:
    """Everything `evaluate` needs; the CLI fills it from its flags.

    Attributes:
        bench: a name of `bpo.eval.benches.BENCHES` (pope, chair, mmhal, amber, objhal,
            hallusion).
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
        parser: "reference" (the benchmark's own rule) or "robust": how POPE, AMBER and
            HallusionBench read yes/no answers and MMHal-Bench reads the judge's rating.
        coco_instances, coco_captions: COCO ground truth files (CHAIR, Object
            HalBench), one path or several; lexicon: a lexicon file extending COCO's.
        amber_dir: AMBER's data/ folder (annotations.json, relation.json, safe_words.txt).
        objects_from: Object HalBench's object extraction, "lexicon" or "judge".
        judge_backend, judge_model, judge_options: the judge (MMHal-Bench, Object HalBench).
        judge_cache: its cache file (default: ``out/judge_cache.jsonl``).
        judge_unparsed: "zero" (as the reference) or "exclude".
        judge_max_new_tokens: the judge's answer length.
        on_error: "raise" or "skip" bad records.
        progress: show progress bars.
        overwrite: replace answers made with other settings instead of refusing.
        engine: where the answering batches run (`bpo.engine`); the answers are the same.
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
    coco_instances: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None
    coco_captions: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None
    lexicon: str | os.PathLike[str] | None = None
    amber_dir: str | os.PathLike[str] | None = None
    objects_from: str = "lexicon"
    judge_backend: str = "openai"
    judge_model: str | None = None
    judge_options: dict[str, Any] = field(default_factory=dict)
    judge_cache: str | os.PathLike[str] | None = None
    judge_unparsed: str = "zero"
    judge_max_new_tokens: int = 1024
    on_error: str = "raise"
    progress: bool = True
    overwrite: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)

    def check(self) -> None:
        """Refuse options that cannot work together, before anything runs."""
        bench = get_bench(self.bench)
        self.engine.check()
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be at least 1")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError("--max-new-tokens must be at least 1")
        if self.temperature < 0:
            raise ConfigError("--temperature must be >= 0")
        pope.get_parser(self.parser)
        if self.objects_from not in objhal.EXTRACTORS:
            raise ConfigError(f"--objects-from must be one of {', '.join(objhal.EXTRACTORS)}")
        if self.judge_unparsed not in mmhal.UNPARSED_POLICIES:
            raise ConfigError(f"--judge-unparsed must be one of {mmhal.UNPARSED_POLICIES}")
        has_data = (
            self.data is not None
            or (self.bench == "pope" and bool(self.pope_splits))
            # AMBER's data/ folder holds its query files.
            or (self.bench == "amber" and self.amber_dir is not None)
            # MMHal-Bench response files and HallusionBench result files hold the questions.
            or (bench.self_contained and self.predictions is not None)
        )
        if not has_data:
            raise ConfigError(f"--bench {self.bench} needs --data")
        if self.bench == "amber" and self.amber_dir is None:
            raise ConfigError(
                "--bench amber needs --amber-dir: AMBER's data/ folder "
                "(annotations.json, relation.json, safe_words.txt)"
            )


def load_items(options: EvalOptions, policy: ErrorPolicy) -> list[EvalItem]:
    """The benchmark's items, as `options` select them."""
    prompt = options.prompt or DEFAULT_PROMPTS[options.bench]
    common: dict[str, Any] = {"prompt": prompt, "limit": options.limit, "policy": policy}
    return get_bench(options.bench).load(options, common)


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
        judge: the judge (MMHal-Bench, Object HalBench) instead of one built from `options`.

    Returns:
        The results, as saved in ``out/results.json``.
    """
    from bpo import __version__

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
            options.predictions, items, policy=policy, row_keys=get_bench(options.bench).row_keys
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

        check_image_root(
            ((item.id, item.image) for item in items if item.image_data is None),
            options.image_root,
        )
        if backend is not None and options.engine.engine == "ray":
            raise ConfigError("--engine ray builds the model in each replica: pass no backend")
        # Without a backend, the engine builds one: here, or in each Ray replica.
        answering: Backend | BackendSpec = (
            backend
            if backend is not None
            else BackendSpec(options.backend, str(options.model), options.backend_options)
        )
        stats = generate_answers(
            items,
            answering,
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
            engine=options.engine,
        )
        counts.update(asdict(stats))
        answers, matched = match_predictions(predictions_path, items, policy=policy)

    counts["answered"] = len(answers)
    counts["unanswered"] = len(items) - len(answers)
    counts["unmatched_predictions"] = matched["unmatched"]
    counts["duplicate_predictions"] = matched["duplicates"]
    if not answers:
        raise ConfigError("no answers to score: none of the predictions matched an item")
    metrics, details = get_bench(options.bench).score(
        ScoreContext(options, items, answers, settings, policy, judge, out)
    )
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
