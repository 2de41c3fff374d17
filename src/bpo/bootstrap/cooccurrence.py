"""Error injection without a model: the dataset's own object co-occurrence statistics.

Pi et al. (2024) inject "erroneous but common" details into the gold answer with
a text LLM (see `bpo.bootstrap.llm_injection`). This strategy makes the same
kind of error at no GPU cost, driven by what the data itself says goes with
what: `fit` counts, over the gold responses, how often each object is mentioned
and how often two objects are mentioned together; `generate` then edits the
gold response with one to `max_edits` of

- insert: add an object that often co-occurs with one the response mentions,
  as an item of an enumeration ("a fork, a knife and a plate") or as a sentence
  ("There is also a knife next to the fork.");
- substitute: replace every mention of a present object by a frequent
  co-occurring one, keeping number and article right ("an apple" -> "a banana",
  "two dogs" -> "two cats");
- count: change a count of two or more ("two" -> "three", "4" -> "5"); counts
  of one are left alone, since changing them would need the noun and the verb
  re-inflected;
- colour: change a colour word ("red" -> "blue").

An injected object is drawn with probability proportional to P(b | a), the
share of responses mentioning the present object `a` that also mention `b`,
among the `top_k` most likely `b`. Conditional probability rather than PMI:
PMI rewards rare pairs, while the bias BPO trains away is toward what is
*common* given the scene (a fork calls up a knife because knives are frequent
beside forks, not because they are rare elsewhere). Pairs seen fewer than
`min_count` times are noise and ignored; with none left, objects are drawn by
their overall frequency. An object mentioned in the gold response is never
injected, and every edit is checked with the lexicon: an edit that would make
the text mention any other object than the one it injects is discarded.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.bootstrap import sample_seed
from bpo.data.records import Negative, Sample, negative_id
from bpo.errors import ConfigError
from bpo.fsio import write_text
from bpo.lexicon import Mention, ObjectLexicon, pluralize

if TYPE_CHECKING:
    from PIL import Image

OPERATIONS = ("insert", "substitute", "count", "colour")
STATS_FORMAT = "bpo-cooccurrence"

_NUMBER_WORDS = (
    *("zero", "one", "two", "three", "four", "five", "six"),
    *("seven", "eight", "nine", "ten", "eleven", "twelve"),
)
_COUNT = re.compile(
    r"\b(?:" + "|".join(_NUMBER_WORDS[2:]) + r")\b|(?<![\d.,:/])\d{1,2}(?![\d]|[.,:/]\d)",
    re.IGNORECASE,
)
COLOURS = (
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "brown",
    "gray",
    "grey",
    "pink",
    "purple",
    "orange",
    "silver",
    "gold",
    "beige",
)
_COLOUR = re.compile(r"\b(?:" + "|".join(COLOURS) + r")\b", re.IGNORECASE)
_SAME_COLOUR = {"gray": "grey", "grey": "gray"}

# An enumeration goes on after the anchor when it is followed by ", " or " and "
# and a determiner or a count ("a fork and a plate" -> "a fork, a knife and a plate").
_ENUMERATION_NEXT = re.compile(
    r"(?:,|\s+and)\s+(?:a|an|the|some|several|" + "|".join(_NUMBER_WORDS[1:]) + r"|\d+)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<!\d)[.!?](?=\s|$)")
_ARTICLE_BEFORE = re.compile(r"\b(an?)(\s+)$", re.IGNORECASE)

# Sentences that add an object. None of their own words is an object of the
# COCO lexicon (a test checks it), so the only object they add is the injected one.
SENTENCE_TEMPLATES = (
    "There {be} also {obj} next to the {anchor}.",
    "{Obj} can also be seen near the {anchor}.",
    "Beside the {anchor}, there {be} {obj}.",
    "{Obj} {be} placed close to the {anchor}.",
    "There {be} also {obj} in the scene.",
    "In the background, there {be} {obj} as well.",
)
_PLURAL_COUNTS = ("two", "three", "some", "several")
# How an injected object is named where its category name reads badly.
_DISPLAY = {
    "skis": ("pair of skis", "pairs of skis"),
    "scissors": ("pair of scissors", "pairs of scissors"),
    "sports ball": ("ball", "balls"),
}
_MAX_TRIES = 8  # edits tried per rewrite (some are refused by the lexicon check)
_MAX_REWRITES = 3  # rewrites tried per negative before it counts as a duplicate


def indefinite_article(noun: str) -> str:
    """ "a" or "an" before `noun`, by its spelling (a heuristic for the sound)."""
    word = noun.lower()
    if word.startswith(("hour", "honest", "honor", "heir")):
        return "an"
    if word.startswith(("uni", "use", "usu", "uti", "ure", "uri", "eu", "ewe", "one", "once")):
        return "a"
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def _count_value(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBER_WORDS.index(word.lower())


def _match_case(new: str, old: str) -> str:
    if len(old) > 1 and old.isupper():
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


class CooccurrenceInjector:
    """Negatives made by editing the gold response with common but wrong details.

    Args:
        lexicon: the object lexicon (default: COCO's, `ObjectLexicon.default()`).
        operations: the edits allowed, a subset of `OPERATIONS` ("color" is accepted).
        max_edits: each negative gets between 1 and `max_edits` edits.
        min_count: co-occurrences (and, for the fallback, occurrences) seen fewer
            times than this are ignored.
        top_k: an injected object is drawn among the `top_k` most likely ones.
        name: the strategy name written into each negative.

    Raises:
        ConfigError: an unknown operation or a setting below 1.
    """

    needs_image = False

    def __init__(
        self,
        lexicon: ObjectLexicon | None = None,
        *,
        operations: Sequence[str] = OPERATIONS,
        max_edits: int = 2,
        min_count: int = 2,
        top_k: int = 10,
        name: str = "cooccurrence",
    ) -> None:
        self.lexicon = lexicon if lexicon is not None else ObjectLexicon.default()
        ops = ["colour" if op == "color" else op for op in operations]
        unknown = [op for op in ops if op not in OPERATIONS]
        if unknown or not ops:
            raise ConfigError(
                f"unknown cooccurrence operations {unknown}; choose from {', '.join(OPERATIONS)}"
            )
        for setting, value in (
            ("max_edits", max_edits),
            ("min_count", min_count),
            ("top_k", top_k),
        ):
            if value < 1:
                raise ConfigError(f"{setting} must be at least 1, got {value}")
        self.operations = tuple(dict.fromkeys(ops))
        self.max_edits = max_edits
        self.min_count = min_count
        self.top_k = top_k
        self.name = name
        self.dropped: Counter[str] = Counter()
        self.documents = 0
        self.object_counts: Counter[str] = Counter()
        self._neighbours: defaultdict[str, Counter[str]] = defaultdict(Counter)

    # -- statistics ---------------------------------------------------------

    def fit(self, samples: Iterable[Sample]) -> None:
        """Count object occurrences and co-occurrences in the gold responses (one pass).

        Replaces any statistics fitted or loaded before.
        """
        self.documents = 0
        self.object_counts = Counter()
        self._neighbours = defaultdict(Counter)
        for sample in samples:
            present = sorted(self.lexicon.objects(sample.response))
            self.documents += 1
            self.object_counts.update(present)
            for a, b in itertools.combinations(present, 2):
                self._neighbours[a][b] += 1
                self._neighbours[b][a] += 1

    def cooccurrences(self, a: str, b: str) -> int:
        """How many responses mention both `a` and `b`."""
        return self._neighbours[a][b] if a in self._neighbours else 0

    def conditional_probability(self, b: str, *, given: str) -> float:
        """P(b | a): the share of the responses mentioning `given` that also mention `b`."""
        count = self.object_counts.get(given, 0)
        return self.cooccurrences(given, b) / count if count else 0.0

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted statistics as JSON (atomically)."""
        pairs = [
            [a, b, n]
            for a in sorted(self._neighbours)
            for b, n in sorted(self._neighbours[a].items())
            if a < b
        ]
        payload = {
            "format": STATS_FORMAT,
            "version": 1,
            "documents": self.documents,
            "objects": dict(sorted(self.object_counts.items())),
            "pairs": pairs,
        }
        write_text(path, json.dumps(payload) + "\n")

    def load(self, path: str | os.PathLike[str]) -> None:
        """Read statistics written by `save`, replacing the current ones.

        Raises:
            ConfigError: the file is missing or is not a statistics file.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
        try:
            if data.get("format") != STATS_FORMAT:
                raise ValueError(f"format is not {STATS_FORMAT!r}")
            objects = Counter({str(k): int(v) for k, v in data["objects"].items()})
            neighbours: defaultdict[str, Counter[str]] = defaultdict(Counter)
            for a, b, n in data["pairs"]:
                neighbours[str(a)][str(b)] = neighbours[str(b)][str(a)] = int(n)
            documents = int(data["documents"])
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{path}: not a co-occurrence statistics file ({error})") from None
        self.documents, self.object_counts, self._neighbours = documents, objects, neighbours

    def _ranked(
        self, counts: Counter[str], total: float, allowed: set[str]
    ) -> list[tuple[str, float]]:
        ranked = sorted(
            ((b, n / total) for b, n in counts.items() if n >= self.min_count and b in allowed),
            key=lambda item: (-item[1], item[0]),
        )
        return ranked[: self.top_k]

    def _pick_object(
        self, anchors: list[Mention], exclude: set[str], rng: random.Random, *, same_group: bool
    ) -> tuple[Mention, str] | None:
        """An anchor mention and an object to inject for it, or None.

        The object is drawn by P(object | anchor) among the anchor's associates;
        when no anchor has one, by overall frequency. With `same_group`, only
        objects of the anchor's supercategory qualify (a dog becomes a cat, not a
        frisbee), where the lexicon gives the anchor one.
        """
        options: list[tuple[Mention, list[tuple[str, float]]]] = []
        for fallback in (False, True):
            for anchor in anchors:
                group = self.lexicon.supercategory(anchor.category) if same_group else None
                allowed = {
                    b
                    for b in self.lexicon.categories
                    if b not in exclude
                    and (group is None or self.lexicon.supercategory(b) == group)
                }
                if fallback:
                    candidates = self._ranked(self.object_counts, 1.0, allowed)
                else:
                    count = self.object_counts.get(anchor.category, 0)
                    neighbours = self._neighbours.get(anchor.category, Counter())
                    candidates = self._ranked(neighbours, count, allowed) if count else []
                if candidates:
                    options.append((anchor, candidates))
            if options:
                break
        if not options:
            return None
        anchor, candidates = rng.choice(options)
        names, weights = zip(*candidates, strict=True)
        return anchor, rng.choices(names, weights=weights)[0]

    # -- edits --------------------------------------------------------------

    def _noun(self, category: str, *, plural: bool) -> str:
        singular, plural_form = _DISPLAY.get(category, (category, pluralize(category)))
        return plural_form if plural else singular

    def _insert(
        self, text: str, gold: set[str], injected: set[str], rng: random.Random
    ) -> tuple[str, dict[str, Any]] | None:
        anchors = [m for m in self.lexicon.mentions(text) if m.category in gold]
        picked = self._pick_object(anchors, gold | injected, rng, same_group=False)
        if picked is None:
            return None
        anchor, obj = picked
        plural = rng.random() < 0.25
        if plural:
            phrase = f"{rng.choice(_PLURAL_COUNTS)} {self._noun(obj, plural=True)}"
        else:
            noun = self._noun(obj, plural=False)
            phrase = f"{indefinite_article(noun)} {noun}"
        edit = {"op": "insert", "object": obj, "anchor": anchor.category}
        if _ENUMERATION_NEXT.match(text, anchor.end) and rng.random() < 0.5:
            edit["form"] = "enumeration"
            return text[: anchor.end] + ", " + phrase + text[anchor.end :], edit
        anchor_words = anchor.surface.lower() if anchor.surface.istitle() else anchor.surface
        sentence = rng.choice(SENTENCE_TEMPLATES).format(
            be="are" if plural else "is",
            obj=phrase,
            Obj=phrase[:1].upper() + phrase[1:],
            anchor=anchor_words,
        )
        edit["form"] = "sentence"
        end = _SENTENCE_END.search(text, anchor.end)
        if end is not None:
            return text[: end.end()] + " " + sentence + text[end.end() :], edit
        body = text.rstrip()
        if body[-1:].isalnum():
            body += "."
        return body + " " + sentence + text[len(text.rstrip()) :], edit

    def _substitute(
        self, text: str, gold: set[str], injected: set[str], rng: random.Random
    ) -> tuple[str, dict[str, Any]] | None:
        mentions = self.lexicon.mentions(text)
        # One anchor per category, so every present object is equally likely to go.
        firsts = {m.category: m for m in reversed(mentions) if m.category in gold}
        anchors = [firsts[c] for c in sorted(firsts)]
        picked = self._pick_object(anchors, gold | injected, rng, same_group=True)
        if picked is None:
            return None
        old = picked[0].category
        new = picked[1]
        # Every mention of the object is replaced, from the end so spans stay valid:
        # the text then describes the other object consistently.
        for mention in reversed([m for m in mentions if m.category == old]):
            noun = _match_case(self._noun(new, plural=mention.plural), mention.surface)
            before = text[: mention.start]
            article = _ARTICLE_BEFORE.search(before)
            if article is not None:
                word = _match_case(indefinite_article(noun), article.group(1))
                before = before[: article.start()] + word + article.group(2)
            text = before + noun + text[mention.end :]
        return text, {"op": "substitute", "from": old, "to": new}

    def _count(self, text: str, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
        matches = [m for m in _COUNT.finditer(text) if _count_value(m.group()) >= 2]
        if not matches:
            return None
        match = rng.choice(matches)
        word = match.group()
        value = _count_value(word)
        is_digit = word.isdigit()
        highest = 99 if is_digit else len(_NUMBER_WORDS) - 1
        # A near miss is the common counting error: one more or one fewer.
        options = [v for v in (value - 1, value + 1, value + 2) if 2 <= v <= highest]
        new_value = rng.choice(options)
        new = str(new_value) if is_digit else _match_case(_NUMBER_WORDS[new_value], word)
        edit = {"op": "count", "from": word, "to": new}
        return text[: match.start()] + new + text[match.end() :], edit

    def _colour(self, text: str, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
        spans = [(m.start, m.end) for m in self.lexicon.mentions(text)]
        # A colour word that is also an object ("an orange") is the object's.
        matches = [
            m
            for m in _COLOUR.finditer(text)
            if not any(s < m.end() and m.start() < e for s, e in spans)
        ]
        if not matches:
            return None
        match = rng.choice(matches)
        old = match.group().lower()
        options = [
            c
            for c in COLOURS
            if c != old and c != _SAME_COLOUR.get(old) and not self.lexicon.find(c)
        ]
        new = _match_case(rng.choice(options), match.group())
        edit = {"op": "colour", "from": match.group(), "to": new}
        return text[: match.start()] + new + text[match.end() :], edit

    def _apply(
        self, op: str, text: str, gold: set[str], injected: set[str], rng: random.Random
    ) -> tuple[str, dict[str, Any]] | None:
        if op == "insert":
            return self._insert(text, gold, injected, rng)
        if op == "substitute":
            return self._substitute(text, gold, injected, rng)
        if op == "count":
            return self._count(text, rng)
        return self._colour(text, rng)

    def rewrite(self, response: str, rng: random.Random) -> tuple[str, list[dict[str, Any]]] | None:
        """The response with 1 to `max_edits` edits and the list of edits, or None.

        None when no allowed operation applies (no object with a known associate,
        no count, no colour).
        """
        gold = self.lexicon.objects(response)
        text = response
        edits: list[dict[str, Any]] = []
        injected: set[str] = set()
        wanted = rng.randint(1, self.max_edits)
        available = list(self.operations)
        for _ in range(_MAX_TRIES):
            if len(edits) == wanted or not available:
                break
            op = rng.choice(available)
            result = self._apply(op, text, gold, injected, rng)
            if result is None:
                available.remove(op)
                continue
            new_text, edit = result
            added = (
                {edit["object"]}
                if op == "insert"
                else {edit["to"]}
                if op == "substitute"
                else set()
            )
            # The lexicon must see exactly what the edit meant to inject and
            # nothing else (e.g. "a hot cat" -> "a hot dog" would make a hot dog).
            if new_text == text or not self.lexicon.objects(new_text) - gold <= injected | added:
                continue
            text, injected = new_text, injected | added
            edits.append(edit)
        return (text, edits) if edits else None

    # -- strategy -----------------------------------------------------------

    def generate(
        self,
        batch: Sequence[tuple[Sample, Image.Image | None]],
        *,
        num_negatives: int,
        seed: int,
    ) -> list[list[Negative]]:
        """Up to `num_negatives` rewrites per sample; the same (seed, sample id, k) always
        gives the same negative."""
        results: list[list[Negative]] = []
        for sample, _image in batch:
            negatives: list[Negative] = []
            seen = {sample.response}
            for k in range(num_negatives):
                k_seed = sample_seed(seed, sample.id, k)
                rng = random.Random(k_seed)
                outcome: tuple[str, list[dict[str, Any]]] | None = None
                for _ in range(_MAX_REWRITES):
                    outcome = self.rewrite(sample.response, rng)
                    if outcome is None or outcome[0] not in seen:
                        break
                if outcome is None:
                    self.dropped["no-edit"] += 1
                    continue
                text, edits = outcome
                if text in seen:
                    self.dropped["duplicate"] += 1
                    continue
                seen.add(text)
                params = {
                    "operations": [edit["op"] for edit in edits],
                    "edits": edits,
                    "inserted": [e["object"] for e in edits if e["op"] == "insert"],
                    "substituted": [
                        {"from": e["from"], "to": e["to"]} for e in edits if e["op"] == "substitute"
                    ],
                    "association": "conditional-probability",
                    "min_count": self.min_count,
                    "seed": seed,
                    "sample_seed": k_seed,
                }
                negatives.append(
                    Negative(
                        id=negative_id(sample.id, self.name, k),
                        sample_id=sample.id,
                        strategy=self.name,
                        text=text,
                        params=params,
                    )
                )
            results.append(negatives)
        return results
