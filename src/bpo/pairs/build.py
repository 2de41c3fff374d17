"""Joining negatives with their samples and writing the pairs file (`build_pairs`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bpo.data.jsonl import IdIndex, JsonlWriter, iter_jsonl
from bpo.data.records import Negative, Pair, Sample
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.fsio import write_text
from bpo.pairs.filters import DEFAULT_MAX_SIMILARITY, DEFAULT_MAX_WORDS, PairFilter
from bpo.pairs.mix import select_mix
from bpo.pairs.stats import PairStats, stats_path
from bpo.provenance import Provenance, file_record

if TYPE_CHECKING:
    from bpo.lexicon import ObjectLexicon

RecordT = TypeVar("RecordT", Negative, Pair)


def records_with_lines(
    path: str | os.PathLike[str],
    record_type: type[RecordT],
    *,
    policy: ErrorPolicy,
    seen: IdIndex | None = None,
) -> Iterator[tuple[int, RecordT]]:
    """``(line, record)`` for each `Negative` or `Pair` of a JSONL file.

    Like `bpo.data.formats.read_records`, which yields records without their
    line: bad lines and repeated ids (also across files sharing `seen`) are
    `RecordError`s naming the file and line, handled by `policy`.

    Raises:
        ConfigError: if the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"input file not found: {path}")
    seen = IdIndex() if seen is None else seen
    for line, value in iter_jsonl(path, policy=policy):
        try:
            record = record_type.from_dict(value)
            if record.id in seen:
                raise RecordError(
                    "duplicate id (an earlier record has it)",
                    record_id=record.id,
                    kind="duplicate-id",
                )
        except RecordError as error:
            located = RecordError(
                error.reason, record_id=error.record_id, path=path, line=line, kind=error.kind
            )
            policy.handle(located)
            continue
        seen.add(record.id)
        yield line, record


def _negatives(
    paths: Sequence[str | os.PathLike[str]], policy: ErrorPolicy
) -> Iterator[tuple[Path, int, Negative]]:
    """Every negative of every file, with its file and line (for error messages)."""
    seen = IdIndex()
    for path in map(Path, paths):
        for line, negative in records_with_lines(path, Negative, policy=policy, seen=seen):
            yield path, line, negative


def index_samples(
    samples_path: str | os.PathLike[str],
    wanted: IdIndex,
    *,
    format: str = "auto",
    policy: ErrorPolicy | None = None,
) -> dict[str, Sample]:
    """The samples whose id is in `wanted`, read in one streaming pass, without ``meta``."""
    from bpo.data.formats import read_samples

    samples: dict[str, Sample] = {}
    for sample in read_samples(samples_path, format=format, policy=policy):
        if sample.id in wanted:
            samples[sample.id] = replace(sample, meta={})
    return samples


def weakening_of(negative: Negative) -> dict[str, Any] | None:
    """The distortion of the image a negative was generated on (image-weakening's
    ``params["distortion"]``), which the pair carries for the image-conditional term."""
    distortion = negative.params.get("distortion")
    return distortion if isinstance(distortion, dict) and "kind" in distortion else None


def assemble_pairs(
    samples_path: str | os.PathLike[str],
    negatives_paths: Sequence[str | os.PathLike[str]],
    *,
    pair_filter: PairFilter,
    stats: PairStats,
    format: str = "auto",
    policy: ErrorPolicy | None = None,
    image_root: str | os.PathLike[str] | None = None,
) -> Iterator[Pair]:
    """Join negatives with their samples and yield the pairs the filter keeps.

    A negative whose ``sample_id`` is not in the samples file is a `RecordError`
    of kind ``"unknown-sample"`` (naming the negative, its file and line), handled
    by `policy`; so is one whose sample's image path is unsafe (it leaves
    `image_root`, or the folder it is relative to; see
    `bpo.data.images.resolve_image_path`): such a path never reaches a pairs file.
    Dropped pairs are counted in `stats`; the caller counts the pairs it finally
    keeps with `PairStats.keep` (mixing may still drop some).

    Raises:
        ConfigError: when there is no negative at all, or none matches a sample
            (the wrong samples file).
    """
    from bpo.data.images import resolve_image_path

    policy = policy or ErrorPolicy()
    # Reading problems in the negatives are reported once, in the joining pass.
    quiet = ErrorPolicy("skip", max_kept=0)
    wanted = IdIndex(negative.sample_id for _, _, negative in _negatives(negatives_paths, quiet))
    if not len(wanted) and not quiet.total:
        names = ", ".join(str(path) for path in negatives_paths)
        raise ConfigError(f"no negatives in {names}: nothing to pair")
    samples = index_samples(samples_path, wanted, format=format, policy=policy)
    if len(wanted) and not samples:
        raise ConfigError(
            f"none of the {len(wanted)} sample ids the negatives refer to is in {samples_path}: "
            "are these the samples the negatives were bootstrapped from?"
        )
    for path, line, negative in _negatives(negatives_paths, policy):
        sample = samples.get(negative.sample_id)
        if sample is None:
            policy.handle(
                RecordError(
                    f"its sample {negative.sample_id!r} is not in {samples_path}",
                    record_id=negative.id,
                    path=path,
                    line=line,
                    kind="unknown-sample",
                )
            )
            continue
        if sample.image is not None:
            try:
                resolve_image_path(sample.image, image_root, record_id=sample.id)
            except RecordError as error:
                policy.handle(
                    RecordError(
                        f"its sample {sample.id!r} has image {sample.image!r}: {error.reason}",
                        record_id=negative.id,
                        path=path,
                        line=line,
                        kind=error.kind,
                    )
                )
                continue
        pair = Pair(
            id=negative.id,
            image=sample.image,
            prompt=sample.prompt,
            chosen=sample.response.strip(),
            rejected=negative.text.strip(),
            strategy=negative.strategy,
            weakening=weakening_of(negative),
        )
        stats.negatives[pair.strategy] += 1
        reason = pair_filter.reason(pair, sample.id)
        if reason is None:
            yield pair
        else:
            stats.drop(pair.strategy, reason)


def pairs_provenance(
    out: str | os.PathLike[str], settings: Mapping[str, Any], *, overwrite: bool = False
) -> Provenance:
    """The settings record of a pairs file; its outputs are the pairs, stats and skipped."""
    out = Path(out)
    return Provenance(
        stage="pairs",
        record=file_record(out),
        settings=dict(settings),
        outputs=[out, stats_path(out), Path(f"{out}.skipped.json")],
        overwrite=overwrite,
    )


def build_pairs(
    samples_path: str | os.PathLike[str],
    negatives_paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    format: str = "auto",
    max_words: int | None = DEFAULT_MAX_WORDS,
    max_similarity: float = DEFAULT_MAX_SIMILARITY,
    lexicon: ObjectLexicon | None = None,
    lexicon_path: str | os.PathLike[str] | None = None,
    mix: Mapping[str, Fraction] | None = None,
    seed: int = 0,
    policy: ErrorPolicy | None = None,
    resume: bool = True,
    image_root: str | os.PathLike[str] | None = None,
) -> PairStats:
    """The `bpo pairs` stage: assemble, filter, mix and write pairs, then save the stats.

    The selection is made whole before anything is written: new pairs go to a
    hidden staging file, and only once the existing output is known to hold no
    pair that this run does not select are they appended (so a refused run
    changes no byte). The settings that shape the selection are saved beside
    `out` (`pairs_provenance`) and a rerun with other settings is refused.

    Args:
        samples_path: the samples (any format `bpo.data.formats.read_samples` reads).
        negatives_paths: one or more negatives JSONL files.
        out: the pairs JSONL file. Stats go to ``<out>.stats.json`` (suffix replaced)
            and skipped records to ``<out>.skipped.json``.
        format: the samples' format, or ``"auto"``.
        max_words: see `PairFilter`; None keeps all lengths.
        max_similarity: see `PairFilter`.
        lexicon: with it, only pairs whose rejected response names an object absent
            from the chosen one are kept.
        lexicon_path: the file `lexicon` extends COCO's with, if any (its content
            is one of the settings).
        mix: per-strategy weights (see `mix_quotas`); None keeps every strategy whole.
        seed: the seed of the mixing draw.
        policy: what to do with bad records (default: raise).
        resume: keep an existing `out` and append only the pairs it lacks (the
            selection is recomputed and is the same for the same inputs and options);
            False replaces it.
        image_root: the folder the samples' image paths are relative to; unsafe
            paths are record errors (see `assemble_pairs`).

    Returns:
        The counts, also saved as JSON.

    Raises:
        ConfigError: if `out` was written with other settings, or holds pairs this
            run does not select (the inputs changed since): rerun with
            ``resume=False`` (``--overwrite``) or write elsewhere.
    """
    from bpo.provenance import file_digest

    policy = policy or ErrorPolicy()
    out = Path(out)
    options = {
        "max_words": max_words,
        "max_similarity": max_similarity,
        "require_absent_object": lexicon is not None,
        "lexicon": file_digest(lexicon_path) if lexicon is not None and lexicon_path else None,
        "mix": {name: str(ratio) for name, ratio in mix.items()} if mix else None,
        "seed": seed if mix else None,  # only the mixing draw uses it
    }
    provenance = pairs_provenance(out, options, overwrite=not resume)
    provenance.check()
    stats = PairStats()
    pair_filter = PairFilter(max_words=max_words, max_similarity=max_similarity, lexicon=lexicon)
    pairs: Iterable[Pair] = assemble_pairs(
        samples_path,
        negatives_paths,
        pair_filter=pair_filter,
        stats=stats,
        format=format,
        policy=policy,
        image_root=image_root,
    )
    if mix:
        # A hidden name of its own, so a spill left by a killed run is the next run's to replace.
        spill = out.with_name(f".{out.name}.mix-candidates.jsonl")
        pairs = select_mix(pairs, mix, seed=seed, stats=stats, spill=spill)
    # A fixed hidden name: what a killed run left there is the next run's to replace.
    staging = out.with_name(f".{out.name}.new.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with JsonlWriter(out, resume=resume, before_first_write=provenance.commit) as writer:
            with open(staging, "w", encoding="utf-8") as pending:
                for pair in pairs:
                    stats.keep(pair)
                    if pair.id in writer:
                        stats.already_present += 1
                    else:
                        pending.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")
            stale = writer.resumed - stats.already_present
            if stale:
                raise ConfigError(
                    f"{out} holds {stale} pairs that this run does not select: the samples or "
                    "negatives changed since it was written; start over (--overwrite) or "
                    "write elsewhere"
                )
            for _, data in iter_jsonl(staging):
                stats.written += writer.write(data)
            writer.open()  # a finished run leaves its (maybe empty) pairs file
    finally:
        staging.unlink(missing_ok=True)
    stats.skipped.update(policy.counts)
    payload = {"options": options, **stats.to_dict()}
    write_text(stats_path(out), json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    policy.report(f"{out}.skipped.json")
    return stats
