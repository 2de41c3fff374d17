"""AMBER: descriptions checked against annotated objects, and yes/no questions, LLM-free.

AMBER (Wang et al. 2023, "An LLM-free Multi-dimensional Benchmark for MLLMs
Hallucination Evaluation"; github.com/junyangwang0410/AMBER) ships, in its
``data/`` folder: query files (``query/query_all.json``, ``query_generative.json``,
``query_discriminative*.json``: JSON arrays of ``{"id", "image", "query"}``; ids
1-1004 ask for a description, the others a yes/no question), ``annotations.json``
(per id: ``type`` and ``truth``, plus ``hallu`` for descriptions), ``relation.json``
(each object word's related words) and ``safe_words.txt``. Answers are a JSON
array of ``{"id", "response"}``. Scoring follows its ``inference.py``:

Generative task (``type`` ``generative``):

1. The description's nouns (NLTK: ``word_tokenize``, ``pos_tag`` tags ``NN*``,
   ``WordNetLemmatizer``), kept if they are AMBER words (a key or a related word
   of ``relation.json``), repeats included.
2. Each noun in ``safe_words.txt`` is skipped. A noun among the image's truth
   objects or their related words ("safe words") covers the first truth object
   it matches (the related words of every truth object come first, then the
   truth objects themselves, in file order). A noun among the ``hallu``
   objects or their related words marks the first such ``hallu`` object. Then
   (spaCy ``en_core_web_lg``, similarity > 0.8, the ``--similarity_score``
   default) a near-synonym of a hallu word marks it, and one of a safe word
   covers it; any other noun is a hallucination.
3. ``chair``: hallucinated nouns / nouns (safe-word nouns count in the
   denominator); ``cover``: covered truth objects / truth objects; ``hal``:
   descriptions with a hallucination / descriptions; ``cog``: marked hallu
   objects / hallu objects (all pooled over descriptions).

bpo reads the same nouns without NLTK or spaCy: both need data that does not
install from PyPI (NLTK's tagger and WordNet, fetched by ``nltk.download``;
spaCy's ``en_core_web_lg`` vectors, ~600 MB from spaCy's releases). Here:
tokens are runs of letters and digits (hyphens kept inside a token, as
``word_tokenize`` keeps them), matched case-sensitively as the reference does
(WordNet's lemmatizer leaves "Dogs" alone, and "Dogs" is no AMBER word); a
token is a noun unless it follows "to", a modal or a pronoun ("to watch", "can
sign", "they ride"), and "can" is a noun only after a determiner ("a can") and
a modal otherwise; plurals are lemmatized by WordNet's noun rules (``-s``,
``-ses``, ``-xes``, ``-zes``, ``-ches``, ``-shes``, ``-men``, ``-ies``, ``-ves``,
its exception list for the irregular ones), keeping the shortest form that is
an AMBER word, as ``lemmatize`` keeps the shortest WordNet noun. The
near-synonym step is off (`similar`: None; API users may pass their own word
similarity); so a noun spaCy finds close (> 0.8) to a truth word counts as a
hallucination here, where the reference forgives it. Each description's nouns,
hallucinations and coverage are in the details, to audit.

Discriminative task: the answer is *Yes* or *No* only when it is exactly the
string ``"Yes"`` or ``"No"`` (``parser="reference"``: the reference compares
``response == 'Yes'``); anything else is wrong and answers neither. ``robust``
reads answers with `bpo.eval.pope.parse_robust` ("yes, there is" is yes).
*No* is the positive class: ``precision`` = right Nos / Nos answered,
``recall`` = right Nos / questions whose truth is no, ``f1`` their harmonic
mean; ``accuracy`` = right / questions. Per dimension: ``existence``
(``discriminative-hallucination``), ``attribute`` (``state``, ``number`` and
``action`` pooled, each also alone) and ``relation`` (the other types).

``amber_score`` = (1 - chair + discriminative f1) / 2 (the paper's AMBER
Score, Sec. 3.4), with both tasks answered. Rates are fractions; the reference
prints percentages rounded to 0.1, starts each count at 0.001 (``metrics.txt``)
and adds 0.0001 to F1's denominator (0.001 for existence): bpo computes the
exact fractions (0.0 where a count is 0), a difference below 0.01 points.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpo.data.records import check_json_value
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.eval.amber_nouns import extract_nouns
from bpo.eval.items import EvalItem, located, read_json_records, user_prompt
from bpo.eval.pope import parse_robust

# The queries hold the whole question ("Describe this image.", "Is the sky sunny
# in this image?"); AMBER's README asks for nothing else.
DEFAULT_PROMPT = "{question}"
PARSERS = ("reference", "robust")
Similar = Callable[[str, str], bool]

# inference.py's discriminative types, by dimension (anything else is relation).
EXISTENCE = "discriminative-hallucination"
ATTRIBUTES = {
    "state": "discriminative-attribute-state",
    "number": "discriminative-attribute-number",
    "action": "discriminative-attribute-action",
}


@dataclass
class AmberData:
    """AMBER's ground truth: annotations by id, related words, safe words."""

    annotations: dict[int, dict[str, Any]]
    relation: dict[str, list[str]]
    safe_words: list[str]

    @property
    def vocabulary(self) -> frozenset[str]:
        """inference.py's ``hallucination_words``: every key and related word."""
        words = set(self.relation)
        for related in self.relation.values():
            words.update(related)
        return frozenset(words)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> AmberData:
        """Read ``annotations.json``, ``relation.json`` and ``safe_words.txt`` from `folder`.

        Raises:
            ConfigError: a file missing or not in AMBER's format.
        """
        root = Path(folder)
        annotations = _json(root / "annotations.json")
        relation = _json(root / "relation.json")
        if not isinstance(annotations, list) or not all(
            isinstance(a, dict) and isinstance(a.get("id"), int) for a in annotations
        ):
            raise ConfigError(f"{root / 'annotations.json'}: not AMBER's annotations (id, type)")
        if not isinstance(relation, dict) or not all(
            isinstance(v, list) and all(isinstance(w, str) for w in v) for v in relation.values()
        ):
            raise ConfigError(f"{root / 'relation.json'}: not {{word: [related words]}}")
        safe = root / "safe_words.txt"
        if not safe.is_file():
            raise ConfigError(f"no such file: {safe}")
        # inference.py: each line, less its newline, is one safe word.
        words = safe.read_text(encoding="utf-8").split("\n")
        return cls({a["id"]: a for a in annotations}, relation, [w for w in words if w])


def _json(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"no such file: {path} (AMBER's data/ folder: --amber-dir)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None


def _first_matches(objects: Sequence[str], relation: Mapping[str, list[str]]) -> list[int]:
    """For inference.py's word list (each object's related words, then the objects), the
    object each entry stands for."""
    owners = [index for index, word in enumerate(objects) for _ in relation.get(word, [])]
    return owners + list(range(len(objects)))


def score_description(
    response: str, annotation: Mapping[str, Any], data: AmberData, similar: Similar | None = None
) -> dict[str, Any]:
    """One description under inference.py's generative rules (see the module docstring)."""
    truth, hallu = list(annotation["truth"]), list(annotation["hallu"])
    safe_words = [w for word in truth for w in data.relation.get(word, [])] + truth
    ha_words = [w for word in hallu for w in data.relation.get(word, [])] + hallu
    safe_owner, ha_owner = (
        _first_matches(truth, data.relation),
        _first_matches(hallu, data.relation),
    )
    covered, cognised = [False] * len(truth), [False] * len(hallu)
    nouns = extract_nouns(response, data.vocabulary)
    hallucinated = []
    for noun in nouns:
        if noun in data.safe_words:
            continue
        if noun in safe_words:
            covered[safe_owner[safe_words.index(noun)]] = True
            continue
        if noun in ha_words:
            cognised[ha_owner[ha_words.index(noun)]] = True
        if similar is not None:
            near = next((j for j, word in enumerate(ha_words) if similar(noun, word)), None)
            if near is not None:
                cognised[ha_owner[near]] = True
            near = next((j for j, word in enumerate(safe_words) if similar(noun, word)), None)
            if near is not None:
                covered[safe_owner[near]] = True
                continue
        hallucinated.append(noun)
    return {
        "nouns": nouns,
        "hallucinated": hallucinated,
        "covered": [w for w, c in zip(truth, covered, strict=True) if c],
        "cognised": [w for w, c in zip(hallu, cognised, strict=True) if c],
        "truth": len(truth),
        "hallu": len(hallu),
    }


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def generative_metrics(scored: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """CHAIR, Cover, Hal and Cog pooled over descriptions scored by `score_description`."""
    nouns = sum(len(s["nouns"]) for s in scored)
    wrong = sum(len(s["hallucinated"]) for s in scored)
    return {
        "chair": _ratio(wrong, nouns),
        "cover": _ratio(sum(len(s["covered"]) for s in scored), sum(s["truth"] for s in scored)),
        "hal": _ratio(sum(bool(s["hallucinated"]) for s in scored), len(scored)),
        "cog": _ratio(sum(len(s["cognised"]) for s in scored), sum(s["hallu"] for s in scored)),
        "descriptions": len(scored),
        "nouns": nouns,
        "hallucinated_nouns": wrong,
    }


def read_answer(response: str, parser: str = "reference") -> str | None:
    """``"yes"``, ``"no"``, or None (neither, under the reference's exact match)."""
    if parser not in PARSERS:
        raise ConfigError(f"unknown AMBER parser {parser!r}; choose one of: {', '.join(PARSERS)}")
    if parser == "robust":
        return parse_robust(response)
    return {"Yes": "yes", "No": "no"}.get(response)


def yes_no_metrics(rows: Sequence[tuple[str | None, str]]) -> dict[str, Any]:
    """Accuracy, and precision/recall/F1 with *no* the positive class, of (read, truth)."""
    right = sum(read == truth for read, truth in rows)
    said_no = sum(read == "no" for read, _ in rows)
    truly_no = sum(truth == "no" for _, truth in rows)
    right_no = sum(read == "no" and truth == "no" for read, truth in rows)
    precision, recall = _ratio(right_no, said_no), _ratio(right_no, truly_no)
    return {
        "accuracy": _ratio(right, len(rows)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "n": len(rows),
    }


def discriminative_metrics(rows: Sequence[tuple[str, str | None, str]]) -> dict[str, Any]:
    """Overall and per-dimension yes/no metrics of ``(type, read, truth)`` rows."""

    def of(types: set[str] | None, exclude: bool = False) -> list[tuple[str | None, str]]:
        return [
            (read, truth)
            for kind, read, truth in rows
            if types is None or ((kind in types) != exclude)
        ]

    known = {EXISTENCE, *ATTRIBUTES.values()}
    groups = {
        "discriminative": of(None),
        "existence": of({EXISTENCE}),
        "attribute": of(set(ATTRIBUTES.values())),
        **{name: of({kind}) for name, kind in ATTRIBUTES.items()},
        "relation": of(known, exclude=True),
    }
    return {name: yes_no_metrics(group) for name, group in groups.items() if group}


def load_items(
    path: str | os.PathLike[str],
    *,
    prompt: str = DEFAULT_PROMPT,
    limit: int | None = None,
    policy: ErrorPolicy | None = None,
) -> list[EvalItem]:
    """The queries of an AMBER query file as items with id ``amber-{id}``."""
    policy = policy or ErrorPolicy()
    items: list[EvalItem] = []
    seen: set[int] = set()
    for position, line, record in read_json_records(path, policy=policy):
        if limit is not None and len(items) >= limit:
            break
        try:
            if not isinstance(record, dict):
                raise RecordError("an AMBER query must be a JSON object")
            check_json_value(record, "the query")
            amber_id = record.get("id")
            if not isinstance(amber_id, int) or isinstance(amber_id, bool):
                raise RecordError("'id' must be an integer")
            if not isinstance(record.get("query"), str) or not isinstance(record.get("image"), str):
                raise RecordError("needs 'query' and 'image'", record_id=f"amber-{amber_id}")
            if amber_id in seen:
                raise RecordError(
                    "duplicate id", record_id=f"amber-{amber_id}", kind="duplicate-id"
                )
        except RecordError as error:
            policy.handle(located(error, path, position, line))
            continue
        seen.add(amber_id)
        items.append(
            EvalItem(
                id=f"amber-{amber_id}",
                prompt=user_prompt(prompt, record["query"]),
                image=record["image"],
                fields={"amber_id": amber_id, "image": record["image"], "query": record["query"]},
                keys=(f"index={position}",),
            )
        )
    return items


def prediction_keys(row: Mapping[str, Any], index: int) -> list[str]:
    """An answer's query: AMBER's ``id`` (``1`` or bpo's ``amber-1``), else its position."""
    value = row.get("id")
    if value is None:
        return [f"index={index}"]
    text = str(value)
    return [text if text.startswith("amber-") else f"amber-{text}"]


def score_items(
    items: Sequence[EvalItem],
    answers: Mapping[str, str],
    data: AmberData,
    *,
    parser: str = "reference",
    similar: Similar | None = None,
    policy: ErrorPolicy | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """AMBER's metrics of the answered items (see the module docstring).

    Returns:
        (metrics: ``generative`` and the discriminative groups of
        `discriminative_metrics` for the tasks answered, ``amber_score`` with both,
        ``parser_disagreements``; details ``{"descriptions": [...]}``).
    """
    policy = policy or ErrorPolicy()
    descriptions, questions = [], []
    disagreements = 0
    for item in items:
        if item.id not in answers:
            continue
        annotation = data.annotations.get(item.fields["amber_id"])
        if annotation is None or ("hallu" in annotation) != (
            annotation.get("type") == "generative"
        ):
            reason = "no annotation" if annotation is None else "annotation lacks 'hallu'"
            policy.handle(RecordError(reason, record_id=item.id, kind="no-ground-truth"))
            continue
        answer = answers[item.id]
        if annotation["type"] == "generative":
            unknown = [
                w for w in annotation["truth"] + annotation["hallu"] if w not in data.relation
            ]
            if unknown:
                # inference.py would stop with a KeyError on association[word].
                policy.handle(
                    RecordError(
                        f"objects missing from relation.json: {', '.join(unknown)}",
                        record_id=item.id,
                        kind="no-ground-truth",
                    )
                )
                continue
            descriptions.append(
                {"id": item.id, **score_description(answer, annotation, data, similar)}
            )
        else:
            read = read_answer(answer, parser)
            questions.append((str(annotation["type"]), read, str(annotation["truth"])))
            disagreements += read_answer(answer, "reference") != read_answer(answer, "robust")
    metrics: dict[str, Any] = {}
    if descriptions:
        metrics["generative"] = generative_metrics(descriptions)
    metrics.update(discriminative_metrics(questions))
    if "generative" in metrics and "discriminative" in metrics:
        metrics["amber_score"] = (
            1 - metrics["generative"]["chair"] + metrics["discriminative"]["f1"]
        ) / 2
    metrics["parser_disagreements"] = disagreements
    return metrics, {"descriptions": descriptions}
