"""Object words in free text: which object categories a response mentions, and where.

`ObjectLexicon.default()` covers the 80 MS-COCO categories with the synonym list
of the CHAIR reference implementation (Rohrbach et al. 2018, "Object
Hallucination in Image Captioning", ``data/synonyms.txt``) and its special cases:

- multi-word names are matched before their words ("hot dog" is not a dog,
  "teddy bear" not a bear), and the longest match wins;
- phrases that name another object than their words, or none: "baby bird" is a
  bird (not a person), "passenger jet" an airplane, "home plate" nothing;
- words dropped when another object is mentioned: "seat" beside "toilet" is
  the toilet's seat, not a chair.

Each category also carries COCO's supercategory (animal, food, kitchen ...),
which error injection uses to replace an object by a plausible other one.

CHAIR lemmatises with WordNet; here plural forms are generated instead
(irregular ones included: people, men, children, mice, knives ...), which
needs no NLTK data and never turns a verb into an object ("skiing" is not
"skis" here, as it is after CHAIR's lemmatiser). Matching is case-insensitive
and on word boundaries: no "cat" in "catch", "category" or "scatter".

A lexicon file is JSON or YAML, either ``{category: [synonyms...]}`` or the
structured form of ``resources/coco_objects.json``::

    {"categories": {category: [synonyms...]},
     "phrases": {phrase: category or null},
     "exclusions": {word: [categories...]},
     "supercategories": {category: supercategory}}

A category's own name always matches it; plural forms are generated for every
word, user-added ones included.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from bpo.errors import ConfigError
from bpo.fsio import write_text

# Words are runs of letters and digits; an apostrophe or punctuation ends one,
# so "cat's" mentions a cat. The words of a multi-word name may be separated by
# white space or a hyphen ("hot dog", "hot-dog"), never by other punctuation.
_WORD = re.compile(r"[^\W_]+")
_JOINER = re.compile(r"\s+|\s*-\s*")

# Plurals. A hand-written table rather than the `inflect` library: inflect
# takes about 2 s to import (typeguard instrumentation) and still needs a list
# of words that are already plural.
IRREGULAR_PLURALS = {
    "man": "men",
    "woman": "women",
    "child": "children",
    "person": "people",
    "mouse": "mice",
    "louse": "lice",
    "goose": "geese",
    "foot": "feet",
    "tooth": "teeth",
    "ox": "oxen",
    "knife": "knives",
    "knive": "knives",
    "wife": "wives",
    "life": "lives",
    "leaf": "leaves",
    "loaf": "loaves",
    "calf": "calves",
    "half": "halves",
    "shelf": "shelves",
    "wolf": "wolves",
    "thief": "thieves",
    "scarf": "scarves",
    "buffalo": "buffaloes",
    "potato": "potatoes",
    "tomato": "tomatoes",
    "mango": "mangoes",
    "hero": "heroes",
    "volcano": "volcanoes",
}
# Words whose plural is the word itself: zero plurals and words already plural.
UNCHANGED_PLURALS = frozenset(
    {
        "sheep",
        "deer",
        "fish",
        "bison",
        "moose",
        "swine",
        "aircraft",
        "watercraft",
        "spacecraft",
        "hovercraft",
        "cattle",
        "scissors",
        "skis",
        "glasses",
        "pants",
        "jeans",
        "shorts",
        "series",
        "species",
        "police",
        "luggage",
        "offspring",
        *IRREGULAR_PLURALS.values(),
    }
)
# Words that only name several things: a mention of them is plural.
_PLURAL_ONLY = frozenset(
    {"cattle", "scissors", "skis", "glasses", "pants", "jeans", "shorts", "police"}
    | set(IRREGULAR_PLURALS.values())
)
# Words ending in "man" that are not compounds of "man" (doberman -> dobermans).
_NOT_MAN_COMPOUNDS = frozenset(
    {"human", "german", "roman", "shaman", "talisman", "caiman", "ottoman", "doberman", "walkman"}
)


def _pluralize_word(word: str) -> str:
    if word in UNCHANGED_PLURALS:
        return word
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word.endswith("man") and len(word) > 3 and word not in _NOT_MAN_COMPOUNDS:
        return word[:-3] + "men"  # policeman, gentleman, snowman
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def pluralize(noun: str) -> str:
    """The plural of an English noun or noun phrase, lower-case.

    The last word is inflected ("hot dog" -> "hot dogs"), or the head before
    "of" ("pair of skis" -> "pairs of skis").
    """
    noun = noun.strip().lower()
    head, of, tail = noun.partition(" of ")
    if of:
        return pluralize(head) + of + tail
    *first, last = noun.split(" ")
    return " ".join([*first, _pluralize_word(last)])


def normalize_words(text: str) -> str:
    """A word or phrase as the lexicon keys it: lower-case words joined by one space."""
    return " ".join(match.group().lower() for match in _WORD.finditer(text))


@dataclass(frozen=True)
class Mention:
    """One mention of an object in a text.

    Attributes:
        start, end: the character span in the text (``text[start:end] == surface``).
        surface: the words as written.
        category: the canonical category they name.
        plural: whether the words are a plural form ("dogs", "people").
    """

    start: int
    end: int
    surface: str
    category: str
    plural: bool = False


_SECTIONS = ("categories", "phrases", "exclusions", "supercategories")


class _Form(NamedTuple):
    category: str | None  # None: a phrase that names no object ("home plate")
    plural: bool
    base: str  # the singular lexicon entry, the key of `exclusions`


def _read_file(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read lexicon file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        # YAML anchors cannot blow up here: every value a lexicon keeps is a string
        # or a flat list of strings, and a nested list is refused at its first item.
        try:
            return yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            # ValueError: an integer past Python's 4300 digits; RecursionError: deep nesting.
            reason = "nested too deeply" if isinstance(error, RecursionError) else error
            raise ConfigError(f"{path}: not valid YAML: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        raise ConfigError(f"{path}: not valid JSON: {reason}") from None


def _word_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, (tuple, set, frozenset)):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{what} must be a list of strings")
    words = []
    for item in value:
        word = normalize_words(item)
        if not word:
            raise ConfigError(f"{what} holds an empty word {item!r}")
        if word not in words:
            words.append(word)
    return words


class ObjectLexicon:
    """Object categories, their synonyms, and a matcher that finds them in text.

    A lexicon does not change once built; `extend` returns a new one.

    Args:
        categories: ``{category: [synonyms...]}``; the category name matches too.
        phrases: multi-word phrases that name another category than their words
            would, or none (``None``): ``{"baby bird": "bird", "home plate": None}``.
        exclusions: ``{word: [categories...]}``: `word` is not counted as a
            mention when the text also mentions one of the categories.
        supercategories: ``{category: supercategory}`` (COCO's: animal, food ...),
            for the categories that have one.

    Raises:
        ConfigError: an empty name, or a phrase or exclusion naming an unknown category.
    """

    def __init__(
        self,
        categories: Mapping[str, Iterable[str]],
        *,
        phrases: Mapping[str, str | None] | None = None,
        exclusions: Mapping[str, Iterable[str]] | None = None,
        supercategories: Mapping[str, str] | None = None,
    ) -> None:
        self._categories: dict[str, list[str]] = {}
        for name, synonyms in categories.items():
            category = normalize_words(str(name))
            if not category:
                raise ConfigError(f"empty category name {name!r}")
            words = _word_list(synonyms, f"synonyms of {category!r}")
            self._categories[category] = [w for w in words if w != category]
        self._phrases: dict[str, str | None] = {}
        for phrase, target in (phrases or {}).items():
            key = normalize_words(phrase) if isinstance(phrase, str) else ""
            if not key:
                raise ConfigError(f"phrase {phrase!r} must be a string of words")
            if target is not None and not isinstance(target, str):
                raise ConfigError(f"phrase {phrase!r} must name a category or null")
            named = normalize_words(target) if target is not None else None
            if named is not None and named not in self._categories:
                raise ConfigError(f"phrase {phrase!r} names unknown category {target!r}")
            self._phrases[key] = named
        self._exclusions: dict[str, list[str]] = {}
        for word, others in (exclusions or {}).items():
            key = normalize_words(word) if isinstance(word, str) else ""
            if not key:
                raise ConfigError(f"exclusion {word!r} must be a string of words")
            targets = _word_list(others, f"exclusions of {word!r}")
            unknown = [t for t in targets if t not in self._categories]
            if unknown:
                raise ConfigError(f"exclusion {word!r} names unknown categories {unknown}")
            self._exclusions[key] = targets
        self._supercategories: dict[str, str] = {}
        for name, group in (supercategories or {}).items():
            category = normalize_words(str(name))
            if category not in self._categories or not isinstance(group, str) or not group:
                raise ConfigError(f"supercategory of {name!r}: unknown category or empty name")
            self._supercategories[category] = group
        self._forms = self._build_forms()
        self._max_words = max((key.count(" ") + 1 for key in self._forms), default=1)
        # First words of multi-word forms: only there is a longer match worth trying.
        self._phrase_starts = {key.split(" ")[0] for key in self._forms if " " in key}

    def _build_forms(self) -> dict[str, _Form]:
        forms: dict[str, _Form] = {}
        entries = [(w, c) for c, ws in self._categories.items() for w in [c, *ws]]
        # Generated plurals first, so that a word listed as a synonym wins over a
        # plural that happens to spell it; context phrases win over both.
        for word, category in entries:
            forms.setdefault(pluralize(word), _Form(category, True, word))
        for word, category in entries:
            forms[word] = _Form(category, word.split(" ")[-1] in _PLURAL_ONLY, word)
        for phrase, target in self._phrases.items():
            forms[pluralize(phrase)] = _Form(target, True, phrase)
            forms[phrase] = _Form(target, phrase.split(" ")[-1] in _PLURAL_ONLY, phrase)
        return forms

    # -- construction -------------------------------------------------------

    @classmethod
    def default(cls) -> ObjectLexicon:
        """The 80 MS-COCO categories with CHAIR's synonyms and special cases."""
        return _default_lexicon()

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "lexicon") -> ObjectLexicon:
        """A lexicon from ``{category: [synonyms]}`` or the structured form (see module doc)."""
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"{source}: a lexicon must be a non-empty mapping")
        if isinstance(data.get("categories"), dict):
            unknown = set(data) - {"about", *_SECTIONS}
            if unknown:
                raise ConfigError(
                    f"{source}: unknown keys {sorted(map(str, unknown))}; "
                    f"expected {', '.join(_SECTIONS)} (and 'about')"
                )
            categories = data["categories"]
            phrases, exclusions, supercategories = (data.get(key) or {} for key in _SECTIONS[1:])
            if not all(isinstance(x, dict) for x in (phrases, exclusions, supercategories)):
                raise ConfigError(f"{source}: {', '.join(_SECTIONS[1:])} must be mappings")
        else:
            categories, phrases, exclusions, supercategories = data, {}, {}, {}
        try:
            parsed = {
                str(name): _word_list(words or [], f"synonyms of {name!r}")
                for name, words in categories.items()
            }
            return cls(
                parsed, phrases=phrases, exclusions=exclusions, supercategories=supercategories
            )
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ObjectLexicon:
        """Read a lexicon from a JSON or YAML file (``.yaml``/``.yml`` read as YAML).

        Raises:
            ConfigError: the file is missing, unreadable or not a valid lexicon.
        """
        return cls.from_dict(_read_file(path), source=str(path))

    def extend(self, other: ObjectLexicon | Mapping[str, Iterable[str]]) -> ObjectLexicon:
        """A new lexicon with `other`'s categories, synonyms, phrases and exclusions added.

        Synonyms of a category already here are added to it; a word that `other`
        gives to another category than this lexicon moves to `other`'s category.
        `other`'s phrases, exclusions and supercategories win over this lexicon's.
        """
        if not isinstance(other, ObjectLexicon):
            other = ObjectLexicon.from_dict(dict(other))
        moved = {w for c, ws in other._categories.items() for w in [c, *ws]}
        categories = {c: [w for w in ws if w not in moved] for c, ws in self._categories.items()}
        for category, words in other._categories.items():
            current = categories.setdefault(category, [])
            current.extend(w for w in words if w not in current)
        return ObjectLexicon(
            categories,
            phrases={**self._phrases, **other._phrases},
            exclusions={**self._exclusions, **other._exclusions},
            supercategories={**self._supercategories, **other._supercategories},
        )

    def to_dict(self) -> dict[str, Any]:
        """The structured form, which `from_dict` and `load` read back."""
        return {
            "categories": {c: list(ws) for c, ws in self._categories.items()},
            "phrases": dict(self._phrases),
            "exclusions": {w: list(cs) for w, cs in self._exclusions.items()},
            "supercategories": dict(self._supercategories),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the lexicon as JSON (e.g. next to a run's outputs, for reproducibility)."""
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    # -- queries ------------------------------------------------------------

    @property
    def categories(self) -> tuple[str, ...]:
        """The category names, in the lexicon's order."""
        return tuple(self._categories)

    def synonyms(self, category: str) -> list[str]:
        """The singular words that name `category`, its own name first.

        Raises:
            KeyError: `category` is not in the lexicon.
        """
        return [category, *self._categories[category]]

    def supercategory(self, category: str) -> str | None:
        """The category's supercategory (COCO's for the default lexicon), or None."""
        return self._supercategories.get(category)

    def __contains__(self, category: object) -> bool:
        return category in self._categories

    def __len__(self) -> int:
        return len(self._categories)

    def mentions(self, text: str) -> list[Mention]:
        """Every object mention in `text`, in order, the longest name first at each word."""
        words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
        joined = [
            _JOINER.fullmatch(text, words[j][1], words[j + 1][0]) is not None
            for j in range(len(words) - 1)
        ]
        found: list[tuple[Mention, str]] = []
        i = 0
        while i < len(words):
            longest = self._max_words if words[i][2] in self._phrase_starts else 1
            for n in range(min(longest, len(words) - i), 0, -1):
                if not all(joined[i : i + n - 1]):
                    continue
                form = self._forms.get(" ".join(w[2] for w in words[i : i + n]))
                if form is None:
                    continue
                if form.category is not None:
                    start, end = words[i][0], words[i + n - 1][1]
                    mention = Mention(start, end, text[start:end], form.category, form.plural)
                    found.append((mention, form.base))
                i += n
                break
            else:
                i += 1
        if self._exclusions:
            present = {mention.category for mention, _ in found}
            found = [
                (mention, base)
                for mention, base in found
                if not present.intersection(self._exclusions.get(base, ()))
            ]
        return [mention for mention, _ in found]

    def find(self, text: str) -> list[str]:
        """The category of every mention in `text`, in order; repeats kept (CHAIR counts them)."""
        return [mention.category for mention in self.mentions(text)]

    def objects(self, text: str) -> set[str]:
        """The set of categories `text` mentions."""
        return {mention.category for mention in self.mentions(text)}


@functools.cache
def _default_lexicon() -> ObjectLexicon:
    resource = resources.files("bpo") / "resources" / "coco_objects.json"
    data = json.loads(resource.read_text(encoding="utf-8"))
    return ObjectLexicon.from_dict(data, source="bpo/resources/coco_objects.json")
