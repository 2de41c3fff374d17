"""Object HalBench: CHAIR on detailed descriptions of 300 COCO images.

Object HalBench (Yu et al., CVPR 2024, RLHF-V; evaluated as in RLAIF-V's
``eval/eval_gpt_obj_halbench.py``) asks one of eight detailed-description prompts
about each of 300 COCO images. Its file (``obj_halbench_300_with_image.jsonl``)
holds one ``{"org_idx", "image_id", "question", "image"}`` per line, ``image``
being the picture itself, base64-encoded (bpo also takes a path there, or an
``image_path``, under the image root).

Scoring, as the reference's ``CHAIR.compute_chair``:

- ground truth: each image's COCO instance categories and the objects its COCO
  captions name (the reference combines train2014 and val2014: give both files,
  ``--coco-instances`` and ``--coco-captions`` repeat);
- ``chair_s`` (response level): responses with a hallucinated object / responses;
  ``chair_s_refine``: the same over responses that name any COCO object;
- ``chair_i`` (mention level): hallucinated mentions / mentions;
- ``recall`` (the reference's ``obj_rec``): per response, the distinct present
  categories it names, summed, over the summed numbers of present objects.

Mentions come two ways. ``lexicon`` (the default, LLM-free, the reference
without ``--use_gpt``: ``caption_to_words``): every mention of a COCO object in
the response, repeats kept, read by `bpo.lexicon.ObjectLexicon` (CHAIR's
synonyms; the reference uses its own refined list, ``synonyms_refine.txt``).
``judge`` (the reference with ``--use_gpt``): a text model lists the objects the
response says are in the image, as a JSON list; responses of 3 words or fewer
get ``[]`` without asking (the reference's rule); the list is read from a
```json block, else from the reply's last line when it holds ``["``
(``parse_object_list``); the lexicon finds the COCO objects the listed names
name, each distinct object word once ("dog" and "dogs" are one, as the
reference's spaCy lemmas are; the reference keeps a name's nouns, then the
names that are COCO words). A reply with no readable list leaves its response out, counted
as ``unparsed`` (the reference retries, then stops). The judge's prompt is
bpo's wording of the reference's instructions.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bpo.data.records import check_json_value
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.eval.coco import coco_image_id, load_coco_objects
from bpo.eval.items import EvalItem, located, read_json_records, user_prompt
from bpo.eval.judge import JudgeCache, run_judge
from bpo.lexicon import ObjectLexicon, pluralize

if TYPE_CHECKING:
    from bpo.backends import Backend

# The file's own prompts (eight detailed-description requests) are asked as they are.
DEFAULT_PROMPT = "{question}"
EXTRACTORS = ("lexicon", "judge")
# get_gpt_resp: `if len(caption.strip().split()) <= 3: extract_objs = []`.
SHORT_ANSWER_WORDS = 3
# A path names a file; a base64 image is long and has no extension.
_IMAGE_NAME = re.compile(r"^[^\n]{1,255}\.(?:jpe?g|png|webp|bmp|gif)$", re.IGNORECASE)

JUDGE_PROMPT = """\
Below is a question about a picture and an answer someone gave. Take the answer as \
correct and list every object it says is visible in the picture.

Question: {question}

Answer: {answer}

Rules: list only objects the answer names explicitly; give each object's name \
without its attributes (no colours, materials or other properties); give the list \
as a JSON list of strings, ["object_1", ..., "object_n"], or [] when the answer \
names no visible object."""

_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)


def parse_object_list(reply: str) -> list[str] | None:
    """The judge's object list (parse_object_list's rule), or None when it has none."""
    candidates = []
    block = _JSON_BLOCK.search(reply)
    if block:
        candidates.append(block.group(1))
    elif '["' in reply:
        candidates.append(reply.strip().split("\n")[-1])
    for text in candidates:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if isinstance(value, list) and all(isinstance(name, str) for name in value):
            return value
    return None


def judge_prompt(question: str, answer: str) -> str:
    return JUDGE_PROMPT.replace("{question}", question).replace("{answer}", answer)


def mentions_from_names(names: Iterable[str], lexicon: ObjectLexicon) -> list[tuple[str, str]]:
    """``(words, category)`` of the COCO objects the listed names name, each object word once.

    The reference lemmatizes each name and keeps each distinct result once, so
    "dog" and "dogs" are one mention and "man" and "woman" two: here a mention is
    keyed by its category and its plural form.
    """
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for name in names:
        for mention in lexicon.mentions(name):
            surface = mention.surface.lower()
            key = (mention.category, surface if mention.plural else pluralize(surface))
            found.setdefault(key, (surface, mention.category))
    return list(found.values())


def score_mentions(
    mentions: Sequence[Sequence[tuple[str, str]]], present: Sequence[Iterable[str]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Object HalBench's metrics of each response's ``(words, category)`` mentions."""
    rows = []
    hallucinated_responses = named_responses = wrong_mentions = all_mentions = 0
    recalled = truth = 0
    for found, objects in zip(mentions, present, strict=True):
        gt = set(objects)
        wrong = [pair for pair in found if pair[1] not in gt]
        right = {category for _, category in found if category in gt}
        hallucinated_responses += bool(wrong)
        named_responses += bool(found)
        wrong_mentions += len(wrong)
        all_mentions += len(found)
        recalled += len(right)
        truth += len(gt)
        rows.append({"mentions": [list(p) for p in found], "hallucinated": [list(p) for p in wrong],
                     "objects": sorted(gt)})  # fmt: skip
    count = len(rows)

    def ratio(part: int, whole: int) -> float:
        return part / whole if whole else 0.0

    metrics = {
        "chair_s": ratio(hallucinated_responses, count),
        "chair_s_refine": ratio(hallucinated_responses, named_responses),
        "chair_i": ratio(wrong_mentions, all_mentions),
        "recall": ratio(recalled, truth),
        "responses": count,
        "hallucinated_responses": hallucinated_responses,
        "mentions": all_mentions,
        "hallucinated_mentions": wrong_mentions,
    }
    return metrics, rows


def load_items(
    path: str | os.PathLike[str],
    *,
    prompt: str = DEFAULT_PROMPT,
    limit: int | None = None,
    policy: ErrorPolicy | None = None,
) -> list[EvalItem]:
    """The prompts as items with id ``objhal-{image_id}`` (see the module docstring)."""
    policy = policy or ErrorPolicy()
    items: list[EvalItem] = []
    seen: set[str] = set()
    for position, line, record in read_json_records(path, policy=policy):
        if limit is not None and len(items) >= limit:
            break
        try:
            item = _item(position, record, prompt)
            if item.id in seen:
                raise RecordError("duplicate image_id", record_id=item.id, kind="duplicate-id")
        except RecordError as error:
            policy.handle(located(error, path, position, line))
            continue
        seen.add(item.id)
        items.append(item)
    return items


def _item(position: int, record: Any, prompt: str) -> EvalItem:
    if not isinstance(record, dict):
        raise RecordError("an Object HalBench record must be a JSON object")
    check_json_value(record, "the record")
    image_id = record.get("image_id")
    if isinstance(image_id, str) and image_id.isascii() and image_id.isdigit():
        image_id = int(image_id)
    path = record.get("image_path")
    image = record.get("image")
    data = None
    if not isinstance(path, str):
        path = image if isinstance(image, str) and _IMAGE_NAME.match(image) else None
        data = image if isinstance(image, str) and path is None and image else None
    if image_id is None and isinstance(path, str):
        image_id = coco_image_id(path)
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise RecordError("'image_id' must be the COCO image id")
    record_id = f"objhal-{image_id}"
    question = record.get("question", record.get("prompt"))
    if not isinstance(question, str) or not question.strip():
        raise RecordError("no 'question'", record_id=record_id)
    if path is None and data is None:
        raise RecordError(
            "no image: 'image' (base64 or a path) or 'image_path'", record_id=record_id
        )
    name = path if path is not None else f"COCO_{image_id:012d}.jpg (embedded)"
    return EvalItem(
        id=record_id,
        prompt=user_prompt(prompt, question),
        image=path,
        fields={"image_id": image_id, "question": question, "image": name},
        keys=(f"image_id={image_id}", f"index={position}"),
        image_data=data,
    )


def ground_truth(
    items: Sequence[EvalItem],
    *,
    instances: Sequence[str | os.PathLike[str]] = (),
    captions: Sequence[str | os.PathLike[str]] = (),
    lexicon: ObjectLexicon | None = None,
) -> dict[int, set[str]]:
    """Each image's objects from COCO files (several files' objects are united)."""
    if not instances and not captions:
        raise ConfigError(
            "Object HalBench needs COCO ground truth: --coco-instances and --coco-captions "
            "(instances/captions_train2014.json and _val2014.json, as the reference combines them)"
        )
    ids = [item.fields["image_id"] for item in items]
    truth: dict[int, set[str]] = {image_id: set() for image_id in ids}
    for path in instances:
        for image_id, objects in load_coco_objects(ids, instances=path, lexicon=lexicon).items():
            truth[image_id] |= objects
    for path in captions:
        for image_id, objects in load_coco_objects(ids, captions=path, lexicon=lexicon).items():
            truth[image_id] |= objects
    return truth


def score_items(
    items: Sequence[EvalItem],
    answers: Mapping[str, str],
    truth: Mapping[int, set[str]],
    lexicon: ObjectLexicon,
    *,
    judge: Backend | None = None,
    cache: JudgeCache | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 1024,
    progress: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Object HalBench's metrics of the answered items: with the lexicon, or the judge's lists."""
    answered = [item for item in items if item.id in answers]
    names: dict[str, list[str] | None] = {}
    calls = 0
    if judge is not None:
        assert cache is not None
        # The reference asks nothing about short answers: their list is [].
        asked = [i for i in answered if len(answers[i.id].strip().split()) > SHORT_ANSWER_WORDS]
        prompts = [judge_prompt(i.fields["question"], answers[i.id]) for i in asked]
        replies, calls = run_judge(
            prompts, judge, cache, batch_size=batch_size, max_new_tokens=max_new_tokens,
            progress=progress,
        )  # fmt: skip
        names = {i.id: [] for i in answered}
        names.update({i.id: parse_object_list(r) for i, r in zip(asked, replies, strict=True)})
    scored = [item for item in answered if judge is None or names[item.id] is not None]
    mentions = [
        [(m.surface, m.category) for m in lexicon.mentions(answers[item.id])]
        if judge is None
        else mentions_from_names(names[item.id] or [], lexicon)
        for item in scored
    ]
    metrics, rows = score_mentions(mentions, [truth[item.fields["image_id"]] for item in scored])
    if judge is not None:
        metrics["unparsed"] = len(answered) - len(scored)
        metrics["judge_calls"] = calls
    metrics["words_per_response"] = (
        sum(len(answers[item.id].strip().split(" ")) for item in scored) / len(scored)
        if scored
        else 0.0
    )
    details = [{"id": item.id, **row} for item, row in zip(scored, rows, strict=True)]
    return metrics, {"captions": details}
