"""POPE: yes/no questions about objects, scored the way the reference scorer does.

POPE (Li et al., EMNLP 2023, "Evaluating Object Hallucination in Large
Vision-Language Models") asks "Is there a <object> in the image?" about COCO
val2014 images, half of them about objects that are absent, sampled three ways
(the random, popular and adversarial splits). Question files are JSON Lines
(``coco_pope_{split}.json``), one ``{"question_id", "image", "text", "label"}``
per line, ``label`` being ``"yes"`` or ``"no"``.

Answer parsing. The ``reference`` parser is the reference scorer's rule, word for
word (``evaluate.py`` of github.com/AoiDragon/POPE, copied unchanged into LLaVA's
``llava/eval/eval_pope.py``), so numbers compare with papers:

1. keep the text before the first ``"."`` (the first sentence);
2. delete commas;
3. split on single spaces; if one of the words is exactly ``"No"``, ``"no"`` or
   ``"not"`` the answer is *no*, otherwise it is *yes* (an empty answer too).

It misreads some answers: "I don't see any." and "Not at all" are *yes* to it
(no word is exactly "no"/"not"), "No\\nthere is none" too (a newline does not
split words). The ``robust`` parser reads them as people do; bpo reports how
many answers the two parsers read differently next to the metrics, so a
large count flags a model whose numbers depend on the parser. Its rules:

1. the first sentence: the text up to the first ``.``, ``!``, ``?`` or line break;
2. lower-cased words (letters and apostrophes, curly apostrophes normalised), so
   "No" and "NO" are "no", and "know", "eyes", "snow" are just words;
3. a leading "yes"/"yeah"/"yep" is *yes* and a leading "no"/"nope" is *no*,
   whatever follows ("Yes, it is not small." is *yes*);
4. otherwise the answer is *no* if a negation appears: "no", "not", "none",
   "nothing", "nobody", "never", "neither", "nor", "cannot", or a contraction in
   "n't" ("don't", "isn't", "can't"); else *yes* (an empty answer included,
   as in the reference).

Metrics, as the reference computes them, with "yes" the positive class: TP, FP,
TN, FN, accuracy, precision, recall, F1 and the yes-ratio *of the predictions*
(the share of answers read as yes; lmms-eval's ``pope_aggregate_yes_ratio``
computes it from the labels instead, which is always 0.5 on POPE). Where the
reference divides by zero (no yes answers at all), precision, recall and F1 are
0.0 here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.data.records import check_json_value
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.eval.items import EvalItem, located, read_json_records, user_prompt

if TYPE_CHECKING:
    from bpo.data.records import Sample

SPLITS = ("random", "popular", "adversarial")

# LLaVA-1.5's POPE prompt (playground/data/eval/pope/llava_pope_test.jsonl; lmms-eval's
# pope_doc_to_text appends the same instruction): the question, then a short-answer hint.
DEFAULT_PROMPT = "{question}\nAnswer the question using a single word or phrase."

Parser = Callable[[str], str]


def parse_reference(answer: str) -> str:
    """The reference scorer's reading of an answer: ``"yes"`` or ``"no"`` (see module doc)."""
    text = answer
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


_SENTENCE_END = re.compile(r"[.!?\n]")
_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)*")
_LEADING_YES = frozenset({"yes", "yeah", "yep"})
_LEADING_NO = frozenset({"no", "nope"})
_NEGATIONS = frozenset(
    {"no", "not", "none", "nothing", "nobody", "never", "neither", "nor", "cannot"}
)


def parse_robust(answer: str) -> str:
    """A reading of an answer that understands negations (see module doc): yes or no."""
    sentence = _SENTENCE_END.split(answer.strip(), maxsplit=1)[0]
    words = _WORDS.findall(sentence.lower().replace("\u2019", "'"))
    if not words:
        return "yes"
    if words[0] in _LEADING_YES:
        return "yes"
    if words[0] in _LEADING_NO:
        return "no"
    negated = any(word in _NEGATIONS or word.endswith("n't") for word in words)
    return "no" if negated else "yes"


PARSERS: dict[str, Parser] = {"reference": parse_reference, "robust": parse_robust}


def get_parser(name: str) -> Parser:
    """The parser registered under `name`; a ConfigError lists the valid names."""
    if name not in PARSERS:
        raise ConfigError(f"unknown POPE parser {name!r}; choose one of: {', '.join(PARSERS)}")
    return PARSERS[name]


def normalize_label(label: Any) -> str:
    """A POPE label as ``"yes"``/``"no"`` (also from booleans; case and spaces ignored).

    Raises:
        ValueError: for anything else.
    """
    if isinstance(label, bool):
        return "yes" if label else "no"
    if isinstance(label, str) and label.strip().lower() in ("yes", "no"):
        return label.strip().lower()
    raise ValueError(f"a POPE label must be 'yes' or 'no', got {label!r}")


def confusion_metrics(predicted: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """TP/FP/TN/FN and the metrics of the reference scorer, "yes" the positive class."""
    if len(predicted) != len(labels):
        raise ValueError(f"{len(predicted)} predictions but {len(labels)} labels")
    pairs = list(zip(predicted, labels, strict=True))
    tp = sum(p == "yes" and y == "yes" for p, y in pairs)
    fp = sum(p == "yes" and y == "no" for p, y in pairs)
    tn = sum(p == "no" and y == "no" for p, y in pairs)
    fn = sum(p == "no" and y == "yes" for p, y in pairs)
    n = len(pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": n,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n if n else 0.0,
    }


def score_pope(
    predictions: Sequence[str], labels: Sequence[Any], *, parser: str = "reference"
) -> dict[str, Any]:
    """POPE metrics of free-text answers against yes/no labels.

    Usable without the CLI (e.g. on the toy world's yes/no questions).

    Args:
        predictions: the model's answers, as generated.
        labels: ``"yes"``/``"no"`` (or booleans), one per answer.
        parser: ``"reference"`` (the published scorer's rule) or ``"robust"``.

    Returns:
        ``n``, ``tp``, ``fp``, ``tn``, ``fn``, ``accuracy``, ``precision``, ``recall``,
        ``f1``, ``yes_ratio`` (of the predictions) under `parser`, plus
        ``parser_disagreements``: how many answers the reference and robust
        parsers read differently.
    """
    read = get_parser(parser)
    gold = [normalize_label(label) for label in labels]
    metrics = confusion_metrics([read(answer) for answer in predictions], gold)
    metrics["parser_disagreements"] = sum(
        parse_reference(answer) != parse_robust(answer) for answer in predictions
    )
    return metrics


def score_pope_splits(
    rows: Iterable[tuple[str, str, Any]], *, parser: str = "reference"
) -> dict[str, dict[str, Any]]:
    """POPE metrics per split, pooled over all questions (``overall``) and averaged.

    Args:
        rows: ``(split, answer, label)`` per question.
        parser: as in `score_pope`.

    Returns:
        ``{split: metrics, ..., "overall": metrics}`` and, with more than one split,
        ``"mean"``: each rate averaged over the splits (as papers that report one
        number for POPE average the three splits).
    """
    by_split: dict[str, tuple[list[str], list[Any]]] = {}
    for split, answer, label in rows:
        answers, labels = by_split.setdefault(split, ([], []))
        answers.append(answer)
        labels.append(label)
    results = {
        split: score_pope(answers, labels, parser=parser)
        for split, (answers, labels) in by_split.items()
    }
    all_answers = [a for answers, _ in by_split.values() for a in answers]
    all_labels = [y for _, labels in by_split.values() for y in labels]
    results["overall"] = score_pope(all_answers, all_labels, parser=parser)
    if len(by_split) > 1:
        rates = ("accuracy", "precision", "recall", "f1", "yes_ratio")
        results["mean"] = {
            rate: sum(results[split][rate] for split in by_split) / len(by_split) for rate in rates
        }
    return results


def split_name(path: str | os.PathLike[str]) -> str:
    """The split of a POPE question file: ``coco_pope_popular.json`` -> ``popular``.

    Names that do not follow POPE's ``{dataset}_pope_{split}`` pattern give their stem.
    """
    stem = Path(path).name
    for suffix in (".jsonl", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    match = re.fullmatch(r"(?:\w+_)?pope_(\w+)", stem)
    return match.group(1) if match else stem


def question_files(
    data: str | os.PathLike[str] | None, splits: Sequence[str] = ()
) -> dict[str, Path]:
    """The question file of each split, from ``--data`` and ``--pope-split NAME=FILE``.

    Args:
        data: a question file (its split named after it, see `split_name`), or a
            folder whose ``*pope_*.json``/``.jsonl`` files are the splits (POPE's
            ``output/coco/`` layout), or None.
        splits: ``NAME=FILE`` strings, added to (or replacing) those of `data`.

    Returns:
        ``{split: file}``, the published splits first in POPE's order.

    Raises:
        ConfigError: no file at all, a missing file, or a malformed ``NAME=FILE``.
    """
    found: dict[str, Path] = {}
    if data is not None:
        root = Path(data)
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if re.search(r"pope_\w+\.jsonl?$", p.name))
            if not files:
                raise ConfigError(f"{root}: no POPE question files (coco_pope_{{split}}.json)")
            found.update((split_name(p), p) for p in files)
        elif root.is_file():
            found[split_name(root)] = root
        else:
            raise ConfigError(f"no such file or folder: {root}")
    for entry in splits:
        name, sep, file = entry.partition("=")
        if not sep or not name or not file:
            raise ConfigError(f"--pope-split takes NAME=FILE, got {entry!r}")
        if not Path(file).is_file():
            raise ConfigError(f"--pope-split {name}: no such file: {file}")
        found[name] = Path(file)
    if not found:
        raise ConfigError(
            "POPE needs question files: --data FILE_OR_FOLDER or --pope-split NAME=FILE"
        )
    order = {split: i for i, split in enumerate(SPLITS)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def load_items(
    files: Mapping[str, str | os.PathLike[str]],
    *,
    prompt: str = DEFAULT_PROMPT,
    limit: int | None = None,
    policy: ErrorPolicy | None = None,
) -> list[EvalItem]:
    """The questions of each split as items with id ``{split}/{question_id}``.

    Each record needs ``question_id``, ``image``, ``text`` (or ``question``) and
    ``label`` (or ``meta.label``) ``"yes"``/``"no"``.

    Args:
        files: ``{split: question file}``.
        prompt: the prompt template; ``{question}`` is replaced by the question.
        limit: at most this many questions of each split (the first ones).
        policy: what to do with a bad record (default: raise).
    """
    policy = policy or ErrorPolicy()
    items: list[EvalItem] = []
    seen: set[str] = set()
    for split, path in files.items():
        taken = 0
        for position, line, record in read_json_records(path, policy=policy):
            if limit is not None and taken >= limit:
                break
            try:
                item = _item(split, position, record)
                if item.id in seen:
                    raise RecordError("duplicate question_id", kind="duplicate-id")
            except RecordError as error:
                policy.handle(located(error, path, position, line))
                continue
            seen.add(item.id)
            item.prompt = user_prompt(prompt, item.fields["question"])
            items.append(item)
            taken += 1
    return items


def _item(split: str, position: int, record: Any) -> EvalItem:
    if not isinstance(record, dict):
        raise RecordError("a POPE question must be a JSON object")
    # Its fields go into predictions.jsonl: refuse what UTF-8 cannot write there.
    check_json_value(record, "the question")
    question_id = record.get("question_id", record.get("id"))
    if question_id is None:
        raise RecordError("no 'question_id'")
    record_id = f"{split}/{question_id}"
    question = record.get("text", record.get("question"))
    image = record.get("image")
    if not isinstance(question, str) or not question.strip():
        raise RecordError("no question ('text')", record_id=record_id)
    if not isinstance(image, str) or not image:
        raise RecordError("no 'image'", record_id=record_id)
    try:
        label = normalize_label(label_of(record))
    except (KeyError, ValueError) as error:
        reason = "no 'label'" if isinstance(error, KeyError) else str(error)
        raise RecordError(reason, record_id=record_id) from None
    return EvalItem(
        id=record_id,
        prompt=[],
        image=image,
        fields={
            "split": split,
            "question_id": question_id,
            "question": question,
            "label": label,
            "image": image,
        },
        keys=(
            f"question_id={question_id}@{split}",
            f"question_id={question_id}",
            f"index={position}",
        ),
    )


def label_of(record: Mapping[str, Any]) -> Any:
    """A record's yes/no label: ``label`` (POPE files) or ``meta.label`` (bpo samples).

    Raises:
        KeyError: the record has neither.
    """
    if "label" in record:
        return record["label"]
    meta = record.get("meta")
    if isinstance(meta, Mapping) and "label" in meta:
        return meta["label"]
    raise KeyError("label")


def score_items(
    items: Sequence[EvalItem], answers: Mapping[str, str], *, parser: str = "reference"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics per split of the answered items, and the answers the parsers disagree on.

    Returns:
        (metrics as `score_pope_splits`, details ``{"disagreements": [...]}``: the
        first 50 answers the reference and robust parsers read differently).
    """
    answered = [item for item in items if item.id in answers]
    metrics = score_pope_splits(
        ((item.fields["split"], answers[item.id], item.fields["label"]) for item in answered),
        parser=parser,
    )
    disagreements: list[dict[str, str]] = []
    for item in answered:
        answer = answers[item.id]
        reference, robust = parse_reference(answer), parse_robust(answer)
        if reference != robust and len(disagreements) < 50:
            disagreements.append(
                {"id": item.id, "answer": answer, "reference": reference, "robust": robust}
            )
    return metrics, {"disagreements": disagreements}


def score_samples(
    samples: Iterable[Sample], answers: Mapping[str, str], *, parser: str = "reference"
) -> dict[str, Any]:
    """POPE metrics on bpo samples whose ``meta.label`` is the yes/no answer.

    The toy world's hook: `answers` maps sample ids to the model's answers;
    samples without an answer are left out.
    """
    pairs = [(answers[s.id], label_of(s.to_dict())) for s in samples if s.id in answers]
    return score_pope([a for a, _ in pairs], [y for _, y in pairs], parser=parser)
