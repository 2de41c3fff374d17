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

from bpo.pairs.build import (
    assemble_pairs,
    build_pairs,
    index_samples,
    pairs_provenance,
    records_with_lines,
)
from bpo.pairs.filters import (
    DEFAULT_MAX_SIMILARITY,
    DEFAULT_MAX_WORDS,
    REASONS,
    PairFilter,
    normalize_text,
    similarity,
    stable_hash,
    word_count,
)
from bpo.pairs.mix import mix_key, mix_quotas, parse_mix, select_mix
from bpo.pairs.stats import PairStats, print_stats, stats_path

__all__ = [
    "DEFAULT_MAX_SIMILARITY",
    "DEFAULT_MAX_WORDS",
    "REASONS",
    "PairFilter",
    "PairStats",
    "assemble_pairs",
    "build_pairs",
    "index_samples",
    "mix_key",
    "mix_quotas",
    "normalize_text",
    "pairs_provenance",
    "parse_mix",
    "print_stats",
    "records_with_lines",
    "select_mix",
    "similarity",
    "stable_hash",
    "stats_path",
    "word_count",
]


# `bpo.pairs(...)` runs the stage, as `bpo pairs` does (`bpo.api`).
from bpo.api import callable_stage

callable_stage(__name__, "pairs")
