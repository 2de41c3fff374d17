"""HallusionBench: yes/no questions on figures, scored per question, per figure, per question pair.

HallusionBench (Guan et al., CVPR 2024; github.com/tianyi-lab/HallusionBench)
asks yes/no questions about charts, tables, maps, illusions ... Its file
(``HallusionBench.json``, 1,129 questions) is a JSON array of records with
``category`` (``VD``: visual dependent, ``VS``: visual supplement),
``subcategory``, ``visual_input`` (``0``: no image, ``1``: the original image,
``2``: an edited one), ``set_id``, ``figure_id``, ``question_id``, ``question``,
``gt_answer`` (``"1"`` yes, ``"0"`` no), ``gt_answer_details`` and ``filename``
(``./hallusion_bench/VD/illusion/0_0.png``, None without an image). A result
file is the same records with ``model_prediction`` added.

Reading an answer. The reference (``utils.py``, ``evaluate_by_chatgpt``) asks
GPT-4 whether the answer agrees with ``gt_answer_details`` and reads its reply
as incorrect (0), correct (1) or unclear (2). bpo scores without a judge, two ways:

- ``reference``: lmms-eval's judge-free rule (``hallusion_bench/evaluate_hb.py``,
  ``hb_aggregation_result_intern``): the answer is *yes* when its lower-cased
  text contains ``"yes"`` anywhere, else *no* (so "I see eyes" is yes and an
  empty answer is no); never unclear.
- ``robust``: a leading yes/no word decides; otherwise an answer that says it
  cannot tell ("uncertain", "not sure", "cannot determine" ...) is *unclear*;
  otherwise `bpo.eval.pope.parse_robust` (negations understood).

The answer is correct (1) when it reads as ``gt_answer``, unclear (2) as
above, else incorrect (0). How many answers the two rules score differently is
reported (``parser_disagreements``).

Metrics, as the reference computes them (``utils.py``: ``assign_correctness``,
``get_eval_all``, ``get_eval_fig``, ``get_eval_pair_all``, ``get_eval_pair_easy``,
``get_eval_pair_hard``), as fractions (the reference prints percentages):

- a VS question without its figure (``figure_id`` 0) is right when correct *or
  unclear* ("the model does not know" is no hallucination); every other one
  only when correct;
- ``aAcc``: right questions / questions;
- ``fAcc``: figures (``category_subcategory_set_figure``, leaving out VS figure 0,
  which has no image) whose questions are all right / figures;
- ``qAcc``: question pairs (the same question across figures,
  ``category_subcategory_set_question``) all right / pairs;
- ``easy_aAcc`` and ``hard_aAcc``: as the reference's leaderboard computes its
  "easy/hard aAcc", per question pair over the questions with ``visual_input``
  other than 2 (easy) or equal to 2 (hard);

overall and for VD and VS alone. An unanswered question is left out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bpo.data.records import check_json_value
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.eval.items import EvalItem, lmms_eval_doc, located, read_json_records, user_prompt
from bpo.eval.pope import parse_robust

# lmms-eval's hallusion_bench_image.yaml asks the question as it is (no pre/post prompt).
DEFAULT_PROMPT = "{question}"
PARSERS = ("reference", "robust")
CATEGORIES = ("VD", "VS")
_FIELDS = ("category", "subcategory", "set_id", "figure_id", "question_id", "question")
# The keys lmms-eval's hb_process_results logs the question's fields under.
_LMMS_METRIC_KEYS = ("aAcc", "fAcc", "qAcc")

_LEADING = re.compile(r"\s*[\W_]*(yes|no)\b", re.IGNORECASE)
_UNCLEAR = re.compile(
    r"\b(uncertain|unclear|not sure|unsure|cannot (?:be )?(?:determined?|tell|say|know)|"
    r"can't (?:determine|tell|say|know)|unable to (?:determine|tell|say|know)|"
    r"impossible to (?:determine|tell|say|know)|not possible to (?:determine|tell|say))\b",
    re.IGNORECASE,
)


def read_reference(answer: str) -> str:
    """lmms-eval's judge-free reading: ``"1"`` (yes) if ``"yes"`` is anywhere in it, else ``"0"``."""
    return "1" if answer.lower().find("yes") != -1 else "0"


def read_robust(answer: str) -> str:
    """``"1"`` yes, ``"0"`` no or ``"2"`` unclear (see the module docstring)."""
    leading = _LEADING.match(answer)
    if leading:
        return "1" if leading.group(1).lower() == "yes" else "0"
    if _UNCLEAR.search(answer):
        return "2"
    return "1" if parse_robust(answer) == "yes" else "0"


def correctness(answer: str, gt_answer: str, parser: str = "reference") -> str:
    """The reference's correctness code of an answer: ``"1"`` correct, ``"0"`` incorrect,
    ``"2"`` unclear."""
    if parser not in PARSERS:
        raise ConfigError(f"unknown HallusionBench parser {parser!r}; choose: {', '.join(PARSERS)}")
    read = read_reference(answer) if parser == "reference" else read_robust(answer)
    if read == "2":
        return "2"
    return "1" if read == gt_answer else "0"


def is_right(record: Mapping[str, Any], code: str) -> bool:
    """assign_correctness: a VS question without its figure is right when correct or
    unclear; any other only when correct."""
    if record["category"] == "VS" and str(record["figure_id"]) == "0":
        return code in ("1", "2")
    return code == "1"


def _key(record: Mapping[str, Any], *names: str) -> str:
    return "_".join(str(record[name]) for name in names)


def _all_right(groups: dict[str, list[bool]]) -> float:
    return sum(all(values) for values in groups.values()) / len(groups) if groups else 0.0


def score_records(records: Sequence[Mapping[str, Any]], rights: Sequence[bool]) -> dict[str, Any]:
    """aAcc, fAcc, qAcc, easy/hard aAcc of questions judged right or not (module docstring)."""
    figures: dict[str, list[bool]] = {}
    pairs: dict[str, list[bool]] = {}
    easy: dict[str, list[bool]] = {}
    hard: dict[str, list[bool]] = {}
    for record, right in zip(records, rights, strict=True):
        pair = _key(record, "category", "subcategory", "set_id", "question_id")
        pairs.setdefault(pair, []).append(right)
        (hard if str(record["visual_input"]) == "2" else easy).setdefault(pair, []).append(right)
        if not (record["category"] == "VS" and str(record["figure_id"]) == "0"):
            figure = _key(record, "category", "subcategory", "set_id", "figure_id")
            figures.setdefault(figure, []).append(right)
    n = len(rights)
    return {
        "aAcc": sum(rights) / n if n else 0.0,
        "fAcc": _all_right(figures),
        "qAcc": _all_right(pairs),
        "easy_aAcc": _all_right(easy),
        "hard_aAcc": _all_right(hard),
        "questions": n,
        "figures": len(figures),
        "question_pairs": len(pairs),
    }


def score_hallusion(
    records: Sequence[Mapping[str, Any]], answers: Sequence[str], *, parser: str = "reference"
) -> dict[str, Any]:
    """HallusionBench's metrics of free-text answers, overall and for VD and VS.

    Args:
        records: the questions (the benchmark's fields, see the module docstring).
        answers: one answer per question.
        parser: ``"reference"`` or ``"robust"``.

    Returns:
        ``{"overall": metrics, "VD": metrics, "VS": metrics, "unclear": n,
        "parser_disagreements": n}``, metrics as `score_records`.
    """
    codes = [
        correctness(answer, str(record["gt_answer"]), parser)
        for record, answer in zip(records, answers, strict=True)
    ]
    rights = [is_right(record, code) for record, code in zip(records, codes, strict=True)]
    results: dict[str, Any] = {"overall": score_records(records, rights)}
    for category in CATEGORIES:
        chosen = [i for i, record in enumerate(records) if record["category"] == category]
        if chosen:
            results[category] = score_records(
                [records[i] for i in chosen], [rights[i] for i in chosen]
            )
    results["unclear"] = codes.count("2")
    results["parser_disagreements"] = sum(
        is_right(record, correctness(answer, str(record["gt_answer"]), "reference"))
        != is_right(record, correctness(answer, str(record["gt_answer"]), "robust"))
        for record, answer in zip(records, answers, strict=True)
    )
    return results


def question_record(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """The question's fields of a benchmark record, a result record or an lmms-eval sample."""
    doc = lmms_eval_doc(row)
    if doc is row and "category" not in row:
        # lmms-eval's hb_process_results logs the fields under each metric's name.
        for name in _LMMS_METRIC_KEYS:
            if isinstance(row.get(name), Mapping):
                return row[name]
    return doc


def question_key(record: Mapping[str, Any]) -> str:
    """The reference's name of a question (get_eval_all): category_subcategory_set_figure_question."""
    return _key(record, "category", "subcategory", "set_id", "figure_id", "question_id")


def load_items(
    path: str | os.PathLike[str],
    *,
    prompt: str = DEFAULT_PROMPT,
    limit: int | None = None,
    policy: ErrorPolicy | None = None,
) -> list[EvalItem]:
    """The questions as items with id ``hallusion/{question_key}``.

    `path` is ``HallusionBench.json``, a result file (with ``model_prediction``) or
    lmms-eval's logged samples of ``hallusion_bench_image``. Images are
    ``filename`` without its leading ``./``, under the image root (the folder
    holding ``hallusion_bench/``); questions with ``visual_input`` 0 have none.
    """
    policy = policy or ErrorPolicy()
    items: list[EvalItem] = []
    seen: set[str] = set()
    for position, line, row in read_json_records(path, policy=policy):
        if limit is not None and len(items) >= limit:
            break
        try:
            if not isinstance(row, dict):
                raise RecordError("a HallusionBench record must be a JSON object")
            record = question_record(row)
            check_json_value(dict(record), "the record")
            missing = [name for name in (*_FIELDS, "gt_answer") if record.get(name) is None]
            if missing:
                raise RecordError(f"missing: {', '.join(missing)}")
            record_id = f"hallusion/{question_key(record)}"
            if record["category"] not in CATEGORIES:
                raise RecordError(f"category must be VD or VS, not {record['category']!r}")
            if str(record["gt_answer"]) not in ("0", "1"):
                raise RecordError("gt_answer must be '0' or '1'", record_id=record_id)
            if record_id in seen:
                raise RecordError("duplicate question", record_id=record_id, kind="duplicate-id")
            image = _image(record)
        except RecordError as error:
            policy.handle(located(error, path, position, line))
            continue
        seen.add(record_id)
        fields = {name: record[name] for name in _FIELDS}
        fields.update(
            visual_input=str(record.get("visual_input", "1" if image else "0")),
            gt_answer=str(record["gt_answer"]),
            image=image,
        )
        items.append(
            EvalItem(
                id=record_id,
                prompt=user_prompt(prompt, str(record["question"])),
                image=image,
                fields=fields,
                keys=(f"key={question_key(record)}", f"index={position}"),
            )
        )
    return items


def _image(record: Mapping[str, Any]) -> str | None:
    if str(record.get("visual_input")) == "0":
        return None
    filename = record.get("filename")
    if filename is None:
        return None
    if not isinstance(filename, str) or not filename:
        raise RecordError("'filename' must be the image path")
    return filename.removeprefix("./")


def prediction_keys(row: Mapping[str, Any], index: int) -> list[str]:
    """An answer's question: its ``id`` (bpo's predictions), else the reference's question
    name from its fields (result files, lmms-eval samples), else its position."""
    if row.get("id") is not None:
        return [str(row["id"])]
    record = question_record(row)
    if all(record.get(name) is not None for name in _FIELDS[:-1]):
        return [f"key={question_key(record)}"]
    return [f"index={index}"]


def score_items(
    items: Sequence[EvalItem], answers: Mapping[str, str], *, parser: str = "reference"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of the answered items (`score_hallusion`) and each question's reading."""
    answered = [item for item in items if item.id in answers]
    records = [item.fields for item in answered]
    texts = [answers[item.id] for item in answered]
    metrics = score_hallusion(records, texts, parser=parser)
    questions = [
        {
            "id": item.id,
            "correctness": correctness(text, item.fields["gt_answer"], parser),
            "right": is_right(item.fields, correctness(text, item.fields["gt_answer"], parser)),
        }
        for item, text in zip(answered, texts, strict=True)
    ]
    return metrics, {"questions": questions}
