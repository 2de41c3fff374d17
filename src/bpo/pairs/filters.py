"""The pair filters (empty, too-long, identical, near-identical, no-absent-object, duplicate)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import TYPE_CHECKING

from bpo.data.jsonl import IdIndex
from bpo.data.records import Pair
from bpo.errors import ConfigError

if TYPE_CHECKING:
    from bpo.lexicon import ObjectLexicon

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
