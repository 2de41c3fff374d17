"""Preference pairs: join samples with their negatives, filter, mix, count.

A pair's chosen response is the sample's gold response and its rejected
response is one bootstrapped negative (DESIGN.md, "The method"); its id is the
negative's id, so it is stable across runs.

Filters run in this fixed order, and a dropped pair is counted under the first
reason that applies:

1. ``empty``: the rejected response is blank.
2. ``too-long``: the chosen or the rejected response has more than `max_words`
   words (whitespace-separated). The BPO release trained only on responses of at
   most 350 words (``filter_size=350`` in ``llava/train/bpo_llava.py``).
3. ``identical``: the rejected response equals the chosen one once normalised
   (lower case, punctuation removed, whitespace collapsed): always dropped.
4. ``near-identical``: their normalised word-level similarity is above
   `max_similarity` (see `similarity`).
5. ``no-absent-object`` (only with `require_absent_object`): the rejected
   response names no lexicon object that the chosen response lacks, so it does
   not carry the co-occurrence bias BPO trains away.
6. ``duplicate``: a pair of the same sample with the same normalised rejected
   response was already kept (the first one, in negatives order, wins).
7. ``mix``: left out by the per-strategy mixing ratios (see `mix_quotas`).

Cheap checks run first; ``duplicate`` comes after the text filters so that it
counts only copies of pairs that were kept.

Memory: SAMPLES can hold hundreds of thousands of records, most of them
possibly without negatives (a shard, a subset). `assemble_pairs` therefore reads
the negatives twice and the samples once: it first collects the sample ids the
negatives reference (8 bytes each, in an `IdIndex`), then keeps only those
samples (without their ``meta``), then streams the negatives again and joins.
Mixing needs the counts of every strategy before it can choose, so `select_mix`
spills the candidate pairs to a temporary JSONL file instead of holding them.

Determinism: every filter and the mixing draw depend only on the inputs and the
options (the mixing draw ranks pairs by a hash of seed and pair id), never on
timing or batch order. A re-run therefore selects exactly the same pairs, and
`build_pairs` can resume into an existing output with `JsonlWriter`: ids already
written are skipped, and pairs written by a run with other inputs are detected.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bpo.data.jsonl import IdIndex, JsonlWriter, iter_jsonl
from bpo.data.records import Negative, Pair, Sample
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.fsio import write_text
from bpo.provenance import Provenance, file_record

if TYPE_CHECKING:
    from bpo.lexicon import ObjectLexicon

RecordT = TypeVar("RecordT", Negative, Pair)

# The BPO release's length cap, in words (`filter_size` in llava/train/bpo_llava.py).
DEFAULT_MAX_WORDS = 350
# Near-identical filtering is opt-in (e.g. 0.9): injected errors are by design one
# or two word edits, and in a 35-word description one edit already scores ~0.95,
# in a 100-word one ~0.99. At 1.0 only the `identical` filter applies.
DEFAULT_MAX_SIMILARITY = 1.0

REASONS = (
    "empty",
    "too-long",
    "identical",
    "near-identical",
    "no-absent-object",
    "duplicate",
    "mix",
)

_PUNCTUATION = re.compile(r"[^\w\s]+")


def normalize_text(text: str) -> str:
    """Lower case, punctuation replaced by spaces, whitespace collapsed."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def word_count(text: str) -> int:
    """Whitespace-separated words, as the BPO release counts them (``len(text.split())``)."""
    return len(text.split())


def similarity(first: str, second: str) -> float:
    """Similarity in [0, 1] of two texts, on their normalised words.

    `difflib.SequenceMatcher` ratio (2 * matches / total length) over word
    sequences, not characters: a changed count or colour in a short answer
    ("there are 2 dogs" / "there are 3 dogs": 0.75) stays a distinct answer,
    where a character ratio (0.94) would call it near-identical; and words keep
    the matcher fast on 350-word responses. `autojunk` is off because it would
    ignore frequent words in responses over 200 words. (rapidfuzz would be
    faster but is not a dependency; `_more_similar_than` skips most full ratios.)
    """
    words_first, words_second = normalize_text(first).split(), normalize_text(second).split()
    return SequenceMatcher(None, words_first, words_second, autojunk=False).ratio()


def _more_similar_than(first: list[str], second: list[str], threshold: float) -> bool:
    """Whether ``similarity`` of two normalised word lists is above `threshold`.

    The cheap upper bounds (length, then word multiset) rule out most pairs
    before the quadratic ratio, as the difflib documentation suggests.
    """
    matcher = SequenceMatcher(None, first, second, autojunk=False)
    return (
        matcher.real_quick_ratio() > threshold
        and matcher.quick_ratio() > threshold
        and matcher.ratio() > threshold
    )


def stable_hash(*parts: str) -> int:
    """A stable 64-bit hash of strings (the same on every run and platform)."""
    data = "\x00".join(parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


@dataclass
class PairFilter:
    """Decides, pair by pair, whether a pair is kept (the filters 1-6 above).

    Stateful: it remembers the kept (sample, normalised rejected) keys to drop
    duplicates, so use one instance per run, fed in negatives order.

    Args:
        max_words: longest chosen or rejected response kept, in words; None keeps all.
        max_similarity: pairs more similar than this are dropped as near-identical.
        lexicon: with it, keep only pairs whose rejected response names an object
            the chosen response lacks (``--require-absent-object``).
    """

    max_words: int | None = DEFAULT_MAX_WORDS
    max_similarity: float = DEFAULT_MAX_SIMILARITY
    lexicon: ObjectLexicon | None = None
    _seen: IdIndex = field(default_factory=IdIndex, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_words is not None and self.max_words < 1:
            raise ConfigError(f"max_words must be at least 1, got {self.max_words}")
        if not 0.0 <= self.max_similarity <= 1.0:
            raise ConfigError(f"max_similarity must be in [0, 1], got {self.max_similarity}")

    def reason(self, pair: Pair, sample_id: str) -> str | None:
        """The reason `pair` is dropped, or None if it is kept (and then remembered)."""
        if not pair.rejected.strip():
            return "empty"
        if self.max_words is not None and (
            word_count(pair.chosen) > self.max_words or word_count(pair.rejected) > self.max_words
        ):
            return "too-long"
        chosen, rejected = normalize_text(pair.chosen), normalize_text(pair.rejected)
        if chosen == rejected:
            return "identical"
        if _more_similar_than(chosen.split(), rejected.split(), self.max_similarity):
            return "near-identical"
        if self.lexicon is not None and not (
            self.lexicon.objects(pair.rejected) - self.lexicon.objects(pair.chosen)
        ):
            return "no-absent-object"
        key = f"{sample_id}\x00{rejected}"
        if key in self._seen:
            return "duplicate"
        self._seen.add(key)
        return None


def _length_summary(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "max": 0}
    return {
        "mean": round(statistics.fmean(values), 2),
        "median": float(statistics.median(values)),
        "max": max(values),
    }


@dataclass
class PairStats:
    """What a `bpo pairs` run kept and dropped, per strategy; saved as ``<out>.stats.json``.

    Attributes:
        negatives: negatives joined with their sample, per strategy.
        kept: pairs selected (written now or already in the output), per strategy.
        dropped: per strategy, pairs dropped by each reason of `REASONS`.
        chosen_words, rejected_words: word counts of the kept pairs, per strategy.
        skipped: bad records by kind (`ErrorPolicy` counts: unknown-sample, bad-json ...).
        written, already_present: kept pairs appended now / found in the output.
    """

    negatives: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)
    dropped: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    chosen_words: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    rejected_words: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    skipped: Counter[str] = field(default_factory=Counter)
    written: int = 0
    already_present: int = 0

    def drop(self, strategy: str, reason: str) -> None:
        self.dropped[strategy][reason] += 1

    def keep(self, pair: Pair) -> None:
        self.kept[pair.strategy] += 1
        self.chosen_words[pair.strategy].append(word_count(pair.chosen))
        self.rejected_words[pair.strategy].append(word_count(pair.rejected))

    def strategies(self) -> list[str]:
        return sorted(set(self.negatives) | set(self.kept))

    def dropped_total(self) -> Counter[str]:
        total: Counter[str] = Counter({reason: 0 for reason in REASONS})
        for counts in self.dropped.values():
            total.update(counts)
        return total

    def to_dict(self) -> dict[str, Any]:
        per_strategy = {
            name: {
                "negatives": self.negatives[name],
                "kept": self.kept[name],
                "dropped": {reason: self.dropped[name][reason] for reason in REASONS},
                "chosen_words": _length_summary(self.chosen_words[name]),
                "rejected_words": _length_summary(self.rejected_words[name]),
            }
            for name in self.strategies()
        }
        return {
            "negatives": sum(self.negatives.values()),
            "kept": sum(self.kept.values()),
            "dropped": dict(self.dropped_total()),
            "skipped": dict(self.skipped),
            "written": self.written,
            "already_present": self.already_present,
            "strategies": per_strategy,
        }

    def table(self) -> str:
        """A small plain-text table: counts, drops by reason and word lengths per strategy."""
        reasons = [r for r in REASONS if self.dropped_total()[r]]
        header = ["strategy", "negatives", "kept", *reasons, "chosen words", "rejected words"]
        rows = [header]

        def lengths(values: Sequence[int]) -> str:
            summary = _length_summary(values)
            return f"{summary['mean']:.0f}/{summary['median']:.0f}/{summary['max']}"

        for name in self.strategies():
            rows.append(
                [
                    name,
                    str(self.negatives[name]),
                    str(self.kept[name]),
                    *(str(self.dropped[name][r]) for r in reasons),
                    lengths(self.chosen_words[name]),
                    lengths(self.rejected_words[name]),
                ]
            )
        all_chosen = [n for values in self.chosen_words.values() for n in values]
        all_rejected = [n for values in self.rejected_words.values() for n in values]
        total = self.dropped_total()
        rows.append(
            [
                "total",
                str(sum(self.negatives.values())),
                str(sum(self.kept.values())),
                *(str(total[r]) for r in reasons),
                lengths(all_chosen),
                lengths(all_rejected),
            ]
        )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in rows
        ]
        lines.append("(words: mean/median/max)")
        return "\n".join(line.rstrip() for line in lines)


def parse_mix(items: Sequence[str]) -> dict[str, Fraction]:
    """Parse ``STRATEGY=RATIO`` items into exact weights (they need not sum to 1).

    Raises:
        ConfigError: on a malformed item, a negative weight, a repeated strategy,
            or weights that are all zero.
    """
    ratios: dict[str, Fraction] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            ratio = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            ratio = Fraction(-1)
        if not sep or not name or ratio < 0:
            raise ConfigError(f"--mix takes STRATEGY=RATIO with RATIO >= 0, got {item!r}")
        if name in ratios:
            raise ConfigError(f"--mix names strategy {name!r} twice")
        ratios[name] = ratio
    if ratios and not any(ratios.values()):
        raise ConfigError("--mix: at least one ratio must be above 0")
    return ratios


def mix_quotas(counts: Mapping[str, int], ratios: Mapping[str, Fraction]) -> dict[str, int]:
    """How many pairs of each strategy to keep so that they follow `ratios`.

    The rule: the largest total T for which every strategy can supply its share,
    T = min over strategies with a positive ratio of count / share, and then
    floor(T * share) pairs of each (shares are the ratios normalised to sum 1;
    exact fractions, so the binding strategy keeps all its pairs). Strategies
    absent from `ratios` or with ratio 0 keep none.

    Raises:
        ConfigError: if a strategy with a positive ratio has no pairs, since the
            only total that respects the ratios would then be 0.
    """
    weight = sum(ratios.values(), Fraction(0))
    shares = {name: ratio / weight for name, ratio in ratios.items() if ratio > 0}
    missing = sorted(name for name in shares if not counts.get(name, 0))
    if missing:
        raise ConfigError(
            f"--mix asks for strategies with no pairs left after filtering: {', '.join(missing)} "
            f"(strategies present: {', '.join(sorted(n for n in counts if counts[n])) or 'none'})"
        )
    total = min(Fraction(counts[name]) / share for name, share in shares.items())
    return {name: int(total * shares[name]) if name in shares else 0 for name in counts}


def mix_key(seed: int, pair_id: str) -> int:
    """The rank of a pair in the mixing draw: a stable hash of the seed and its id."""
    return stable_hash(str(seed), pair_id)


def select_mix(
    pairs: Iterable[Pair],
    ratios: Mapping[str, Fraction],
    *,
    seed: int,
    stats: PairStats,
    spill: str | os.PathLike[str],
) -> Iterator[Pair]:
    """Subsample `pairs` so that the strategies follow `ratios` (see `mix_quotas`).

    Within a strategy the pairs with the smallest `mix_key` are kept: a seeded
    draw that does not depend on the order or the batching of the input. The
    input is spilled to the JSONL file `spill` (counts must be known before
    choosing), which is overwritten (a copy left by a killed run included) and
    removed at the end; the output keeps the input order.
    """
    import numpy as np

    keys: dict[str, list[int]] = defaultdict(list)
    spill = Path(spill)
    try:
        with open(spill, "w", encoding="utf-8") as handle:
            for pair in pairs:
                keys[pair.strategy].append(mix_key(seed, pair.id))
                handle.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")
        quotas = mix_quotas({name: len(values) for name, values in keys.items()}, ratios)
        # The quota-th smallest key of each strategy; keys are 64-bit hashes, so
        # ties (which could keep one pair too many) have probability ~2^-64.
        thresholds: dict[str, int | None] = {}
        for name, values in keys.items():
            quota = quotas[name]
            array = np.asarray(values, dtype=np.uint64)
            thresholds[name] = int(np.partition(array, quota - 1)[quota - 1]) if quota else None
        for _, data in iter_jsonl(spill):
            pair = Pair.from_dict(data)
            threshold = thresholds[pair.strategy]
            if threshold is not None and mix_key(seed, pair.id) <= threshold:
                yield pair
            else:
                stats.drop(pair.strategy, "mix")
    finally:
        spill.unlink(missing_ok=True)


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
        )
        stats.negatives[pair.strategy] += 1
        reason = pair_filter.reason(pair, sample.id)
        if reason is None:
            yield pair
        else:
            stats.drop(pair.strategy, reason)


def stats_path(out: str | os.PathLike[str]) -> Path:
    """Where the stats of a pairs file are saved: ``pairs.jsonl`` -> ``pairs.stats.json``."""
    return Path(out).with_suffix(".stats.json")


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


def print_stats(stats: PairStats, *, file: Any = None) -> None:
    """Print the stats table (to stdout by default)."""
    print(stats.table(), file=file or sys.stdout)


# `bpo.pairs(...)` runs the stage, as `bpo pairs` does (`bpo.api`).
from bpo.api import callable_stage  # noqa: E402

callable_stage(__name__, "pairs")
