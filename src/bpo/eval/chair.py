"""CHAIR: the objects a description names that are not in the image.

CHAIR (Rohrbach et al., EMNLP 2018, "Object Hallucination in Image Captioning";
reference: github.com/LisaAnne/Hallucination, ``utils/chair.py``) compares the
MS-COCO objects a caption mentions with the objects the image holds:

- ``chair_s``: the share of captions that mention at least one absent object;
- ``chair_i``: the share of object *mentions* that name an absent object. As in
  the reference, mentions are not de-duplicated: "a dog ... the dog" counts two
  mentions (and two hallucinations if there is no dog);
- ``recall``: the share of the images' objects that the captions mention,
  summed over images (``sum |mentioned & present| / sum |present|``), as added
  by the widely used variants of the reference (OPERA's ``chair.py``, Maxlinn's
  CHAIR-metric-standalone).

An image's objects, as in the reference (``get_annotations``), are the union of
its COCO instance categories and the objects its five reference captions name.
Object mentions come from `bpo.lexicon.ObjectLexicon` (CHAIR's synonyms,
plurals, two-word names such as "hot dog" and "teddy bear", "baby bird" as a
bird, "toilet seat" not a chair). Where the reference divides by zero (no
mentions, no objects), the rate is 0.0 here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bpo.data.records import check_json_value, validate_prompt
from bpo.errors import ErrorPolicy, RecordError
from bpo.eval.coco import canonical_objects, coco_image_id, id_digits, load_coco_objects
from bpo.eval.items import EvalItem, located, read_json_records, user_prompt
from bpo.lexicon import ObjectLexicon

if TYPE_CHECKING:
    from bpo.data.records import Sample

# Instruction-tuned VLMs are asked for a detailed description (OPERA, VCD and the
# LLaVA-RLHF/BPO line of work use this prompt for CHAIR on COCO val2014).
DEFAULT_PROMPT = "Please describe this image in detail."


def score_chair(
    captions: Sequence[str],
    gt_objects: Sequence[Iterable[str]],
    lexicon: ObjectLexicon | None = None,
    *,
    ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """CHAIR_s, CHAIR_i and recall of captions against each image's objects.

    Usable without the CLI (e.g. on the toy world's samples, whose objects sit in
    ``meta.objects``).

    Args:
        captions: the generated descriptions.
        gt_objects: the objects present in each caption's image (category names,
            synonyms or plurals; they are mapped to the lexicon's categories).
        lexicon: the object lexicon (default: COCO's, `ObjectLexicon.default()`).
        ids: an id per caption for the per-caption details (default: positions).

    Returns:
        ``{"metrics": {...}, "captions": [...]}``. Metrics: ``chair_s``, ``chair_i``,
        ``recall``, ``captions``, ``hallucinated_captions``, ``mentions``,
        ``hallucinated_mentions``, ``mentions_per_caption``. Per caption: ``id``,
        ``mentions`` and ``hallucinated`` (``[words, category]`` pairs, in order,
        repeats kept), ``objects`` (present, sorted), ``chair_s``, ``chair_i``, ``recall``.
    """
    lexicon = lexicon or ObjectLexicon.default()
    if len(captions) != len(gt_objects):
        raise ValueError(f"{len(captions)} captions but {len(gt_objects)} object sets")
    if ids is not None and len(ids) != len(captions):
        raise ValueError(f"{len(captions)} captions but {len(ids)} ids")
    mentions = hallucinated_mentions = hallucinated_captions = 0
    present_total = recalled_total = 0
    details = []
    for index, (caption, names) in enumerate(zip(captions, gt_objects, strict=True)):
        present = canonical_objects(names, lexicon)
        found = [(m.surface, m.category) for m in lexicon.mentions(caption)]
        wrong = [(surface, category) for surface, category in found if category not in present]
        recalled = {category for _, category in found} & present
        mentions += len(found)
        hallucinated_mentions += len(wrong)
        hallucinated_captions += bool(wrong)
        present_total += len(present)
        recalled_total += len(recalled)
        details.append(
            {
                "id": ids[index] if ids is not None else str(index),
                "mentions": [list(pair) for pair in found],
                "hallucinated": [list(pair) for pair in wrong],
                "objects": sorted(present),
                "chair_s": int(bool(wrong)),
                "chair_i": len(wrong) / len(found) if found else 0.0,
                "recall": len(recalled) / len(present) if present else 0.0,
            }
        )
    count = len(captions)
    metrics = {
        "chair_s": hallucinated_captions / count if count else 0.0,
        "chair_i": hallucinated_mentions / mentions if mentions else 0.0,
        "recall": recalled_total / present_total if present_total else 0.0,
        "captions": count,
        "hallucinated_captions": hallucinated_captions,
        "mentions": mentions,
        "hallucinated_mentions": hallucinated_mentions,
        "mentions_per_caption": mentions / count if count else 0.0,
    }
    return {"metrics": metrics, "captions": details}


def objects_of(record: Mapping[str, Any]) -> list[str] | None:
    """A record's listed objects: ``objects`` or ``meta.objects``; None when it lists none.

    Raises:
        ValueError: the field is there but is not a list of strings.
    """
    value = record.get("objects")
    meta = record.get("meta")
    if value is None and isinstance(meta, Mapping):
        value = meta.get("objects")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError("'objects' must be a list of object names")
    return value


def load_items(
    path: str | os.PathLike[str],
    *,
    prompt: str = DEFAULT_PROMPT,
    limit: int | None = None,
    policy: ErrorPolicy | None = None,
) -> list[EvalItem]:
    """The images to describe, from a JSON array or JSONL file.

    Each record needs ``image`` (a path under the image root). Optional:
    ``id`` (default ``coco-{image_id}``, else the image path), ``image_id`` (the
    COCO id; default: read from a COCO file name), ``objects`` or ``meta.objects``
    (the objects present, used instead of COCO annotation files), and ``prompt``
    (a string or a bpo chat prompt; default: `prompt`). bpo `Sample` records
    (the toy world's, with ``meta.objects``) are read as they are.

    Args:
        path: the file.
        prompt: the description prompt for records without their own.
        limit: at most this many records (the first ones).
        policy: what to do with a bad record (default: raise).
    """
    policy = policy or ErrorPolicy()
    items: list[EvalItem] = []
    seen: set[str] = set()
    for position, line, record in read_json_records(path, policy=policy):
        if limit is not None and len(items) >= limit:
            break
        try:
            item = _item(position, record, prompt)
            if item.id in seen:
                raise RecordError("duplicate id", record_id=item.id, kind="duplicate-id")
        except RecordError as error:
            policy.handle(located(error, path, position, line))
            continue
        seen.add(item.id)
        items.append(item)
    return items


def _item(position: int, record: Any, prompt: str) -> EvalItem:
    if not isinstance(record, dict):
        raise RecordError("a CHAIR record must be a JSON object")
    # Its fields go into predictions.jsonl: refuse what UTF-8 cannot write there.
    check_json_value(record, "the record")
    image = record.get("image")
    if not isinstance(image, str) or not image:
        raise RecordError("no 'image'", record_id=_optional_id(record))
    image_id = record.get("image_id")
    if image_id is None:
        image_id = coco_image_id(image)
    elif isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
        raise RecordError("'image_id' must be an integer", record_id=_optional_id(record))
    elif isinstance(image_id, str):
        # isdigit() alone lets "²" through, which int() refuses.
        image_id = id_digits(image_id)
    record_id = _optional_id(record) or (f"coco-{image_id}" if image_id is not None else image)
    try:
        objects = objects_of(record)
        messages = validate_prompt(record["prompt"]) if "prompt" in record else user_prompt(prompt)
    except (ValueError, RecordError) as error:
        reason = error.reason if isinstance(error, RecordError) else str(error)
        raise RecordError(reason, record_id=record_id) from None
    fields: dict[str, Any] = {"image": image, "image_id": image_id}
    if objects is not None:
        fields["objects"] = objects
    keys = [f"image={image}", f"index={position}"]
    if image_id is not None:
        keys.insert(0, f"image_id={image_id}")
    return EvalItem(id=record_id, prompt=messages, image=image, fields=fields, keys=tuple(keys))


def _optional_id(record: Mapping[str, Any]) -> str | None:
    value = record.get("id")
    return str(value) if value is not None and not isinstance(value, bool) else None


def ground_truth(
    items: Sequence[EvalItem],
    *,
    instances: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    captions: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    lexicon: ObjectLexicon | None = None,
    policy: ErrorPolicy | None = None,
) -> dict[str, list[str]]:
    """Each item's objects: from COCO annotation files when given, else its own ``objects``.

    Several instances or captions files (train2014 and val2014) are united.

    Returns:
        ``{item id: objects}``; an item with neither (no COCO image id, no
        ``objects``) is a RecordError (kind ``no-ground-truth``) under `policy`
        and is left out.
    """
    policy = policy or ErrorPolicy()
    from_coco: dict[int, set[str]] = {}
    instance_files, caption_files = _paths(instances), _paths(captions)
    use_coco = bool(instance_files or caption_files)
    if use_coco:
        ids = [item.fields["image_id"] for item in items if item.fields["image_id"] is not None]
        from_coco = {image_id: set() for image_id in ids}
        for kind, files in (("instances", instance_files), ("captions", caption_files)):
            for path in files:
                found = load_coco_objects(ids, lexicon=lexicon, **{kind: path})
                for image_id, objects in found.items():
                    from_coco[image_id] |= objects
    truth: dict[str, list[str]] = {}
    for item in items:
        image_id = item.fields["image_id"]
        if use_coco and image_id is not None:
            truth[item.id] = sorted(from_coco[image_id])
        elif "objects" in item.fields:
            truth[item.id] = list(item.fields["objects"])
        else:
            needed = (
                "a COCO image id" if use_coco else "'objects' (or --coco-instances/--coco-captions)"
            )
            policy.handle(
                RecordError(
                    f"no ground truth: needs {needed}", record_id=item.id, kind="no-ground-truth"
                )
            )
    return truth


def _paths(value: Any) -> list[str | os.PathLike[str]]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def score_items(
    items: Sequence[EvalItem],
    answers: Mapping[str, str],
    truth: Mapping[str, Iterable[str]],
    lexicon: ObjectLexicon | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """CHAIR of the answered items that have ground truth.

    Returns:
        (metrics, details ``{"captions": [...]}``), as `score_chair`.
    """
    scored = [item for item in items if item.id in answers and item.id in truth]
    result = score_chair(
        [answers[item.id] for item in scored],
        [list(truth[item.id]) for item in scored],
        lexicon,
        ids=[item.id for item in scored],
    )
    return result["metrics"], {"captions": result["captions"]}


def score_samples(
    samples: Iterable[Sample], answers: Mapping[str, str], lexicon: ObjectLexicon | None = None
) -> dict[str, Any]:
    """CHAIR on bpo samples whose ``meta.objects`` lists the objects present.

    The toy world's hook: `answers` maps sample ids to the model's descriptions;
    samples without an answer are left out. Returns what `score_chair` returns.

    Raises:
        RecordError: an answered sample without ``meta.objects``.
    """
    captions, objects, ids = [], [], []
    for sample in samples:
        if sample.id not in answers:
            continue
        listed = objects_of({"meta": sample.meta})
        if listed is None:
            raise RecordError("no meta.objects", record_id=sample.id, kind="no-ground-truth")
        captions.append(answers[sample.id])
        objects.append(listed)
        ids.append(sample.id)
    return score_chair(captions, objects, lexicon, ids=ids)
