"""AMBER's nouns without NLTK: the words of a description its reference scorer would count.

AMBER's ``inference.py`` (``extract_nouns``) tokenizes with NLTK's
``word_tokenize``, keeps the words ``pos_tag`` tags ``NN*`` and lemmatizes them
with ``WordNetLemmatizer``; then it keeps the AMBER words (`bpo.eval.amber`).
NLTK's tagger and WordNet are downloads of their own (``nltk.download``), not
PyPI packages, so bpo reads the same words with rules that only need AMBER's
vocabulary; see `bpo.eval.amber`'s docstring for each rule and its limits.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[^\W_]+(?:-[^\W_]+)*")
# Words after which the tagger reads a word as a verb (VB/VBP), not a noun.
_VERB_CONTEXT = frozenset(
    [
        "to",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "i",
        "you",
        "we",
        "they",
        "he",
        "she",
        "it",
        "who",
    ]
)
_DETERMINERS = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "each",
        "every",
        "another",
        "one",
        "his",
        "her",
        "its",
        "their",
        "my",
        "your",
        "our",
        "some",
        "any",
        "no",
    ]
)
# WordNet's noun substitutions (nltk WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS).
_NOUN_RULES = (
    ("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"),
    ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"),
)  # fmt: skip
# What WordNet's lemmatizer gives where the rules above do not (its noun.exc
# exceptions), and the AMBER words it shortens to a WordNet noun that is no AMBER
# word ("sunglasses" -> "sunglass"), so that the reference never matches them.
_LEMMA_EXCEPTIONS = {
    "children": "child", "mice": "mouse", "geese": "goose", "feet": "foot",
    "teeth": "tooth", "knives": "knife", "leaves": "leaf", "oxen": "ox",
    "tomatoes": "tomato", "potatoes": "potato", "mangoes": "mango",
    "glasses": "glass", "sunglasses": "sunglass", "slippers": "slipper",
    "chopsticks": "chopstick", "earrings": "earring",
}  # fmt: skip


def lemmatize(token: str, vocabulary: frozenset[str]) -> str:
    """A token's noun lemma, as far as AMBER's words go (see the module docstring)."""
    if token in _LEMMA_EXCEPTIONS:
        return _LEMMA_EXCEPTIONS[token]
    forms = [token] if token in vocabulary else []
    forms += [token[: -len(old)] + new for old, new in _NOUN_RULES if token.endswith(old)]
    known = [form for form in forms if form in vocabulary]
    return min(known, key=len) if known else token


def extract_nouns(text: str, vocabulary: frozenset[str]) -> list[str]:
    """The AMBER words used as nouns in `text`, lemmatized, in order, repeats kept."""
    nouns = []
    previous = ""
    for match in _TOKEN.finditer(text):
        token = match.group()
        after = previous
        previous = token.lower()
        if after in _VERB_CONTEXT:
            continue  # "to watch", "can sign": a verb
        if token == "can" and after not in _DETERMINERS:
            continue  # the modal
        lemma = lemmatize(token, vocabulary)
        if lemma in vocabulary:
            nouns.append(lemma)
    return nouns
