"""MS-COCO's annotations as CHAIR reads them: image ids in file names, and each image's
objects from the instances and captions files (streamed), as lexicon categories.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bpo.errors import ConfigError
from bpo.lexicon import ObjectLexicon

# COCO file names end in the zero-padded image id: COCO_val2014_000000123456.jpg.
# ASCII digits only, and a match starts where a run of digits starts: \d+ alone
# tried every position of a long run of digits (20,000 digits took 6 s).
_COCO_ID = re.compile(r"(?<![0-9])([0-9]+)\.(?:jpe?g|png)$", re.IGNORECASE)
# The longest image id read (COCO's are 12 digits; int() refuses past 4300).
_MAX_ID_DIGITS = 18
# The only values read from COCO files: {prefix of an object: its fields}.
_INSTANCE_FIELDS = {
    "annotations.item": ("image_id", "category_id"),
    "categories.item": ("id", "name"),
}
_CAPTION_FIELDS = {"annotations.item": ("image_id", "caption")}
# ijson keeps the dotted path of every open level, so memory grows with the square
# of the nesting depth; COCO's longest path (annotations.item.segmentation.item.item)
# has 41 characters, and a file nested past this is refused.
_MAX_PREFIX = 256
# What a field that should be a number or a string but opens a container reads as.
_CONTAINERS: dict[str, Any] = {"start_array": [], "start_map": {}}


def coco_image_id(image: str) -> int | None:
    """The COCO image id in a file name (``COCO_val2014_000000000042.jpg`` -> 42), or None."""
    match = _COCO_ID.search(image)
    return id_digits(match.group(1)) if match else None


def id_digits(text: str) -> int | None:
    """`text` as an image id if it is ASCII digits (not too many), else None."""
    if text.isascii() and text.isdigit() and len(text) <= _MAX_ID_DIGITS:
        return int(text)
    return None


def canonical_objects(names: Iterable[str], lexicon: ObjectLexicon) -> set[str]:
    """Object names (COCO category names, synonyms, plurals) as the lexicon's categories.

    A name the lexicon knows as a category is kept; any other is read as text
    ("puppies" -> dog); names naming no category are dropped.
    """
    objects: set[str] = set()
    for name in names:
        key = " ".join(name.lower().split())
        if key in lexicon:
            objects.add(key)
        else:
            objects.update(lexicon.objects(name))
    return objects


def load_coco_objects(
    image_ids: Iterable[int],
    *,
    instances: str | os.PathLike[str] | None = None,
    captions: str | os.PathLike[str] | None = None,
    lexicon: ObjectLexicon | None = None,
) -> dict[int, set[str]]:
    """Each image's objects from COCO annotation files, as the CHAIR reference builds them.

    The union of the image's instance categories (``instances_val2014.json``)
    and the objects its reference captions mention (``captions_val2014.json``),
    as lexicon categories. Only the images asked for are kept. The files are
    streamed with ijson: ``instances_val2014.json`` is ~160 MB, mostly
    segmentation polygons that are never built into Python objects here.

    Args:
        image_ids: the COCO image ids to collect.
        instances: an instances file, or None.
        captions: a captions file, or None.
        lexicon: the object lexicon (default: COCO's).

    Returns:
        ``{image_id: objects}`` for each id asked for (an empty set where neither
        file has anything about the image).

    Raises:
        ConfigError: neither file given, or a file that is missing or not COCO JSON.
    """
    lexicon = lexicon or ObjectLexicon.default()
    wanted = set(image_ids)
    objects: dict[int, set[str]] = {image_id: set() for image_id in wanted}
    if instances is None and captions is None:
        raise ConfigError("CHAIR ground truth needs a COCO instances or captions file")
    if instances is not None:
        path = _existing(instances)
        names: dict[int, str] = {}
        pairs: list[tuple[int, int]] = []
        for prefix, fields in _coco_items(path, "instances", _INSTANCE_FIELDS):
            if prefix == "categories.item":
                if fields.get("id") is not None and isinstance(fields.get("name"), str):
                    names[_coco_int(fields["id"], "category id", path)] = fields["name"]
            elif fields.get("image_id") is not None and fields.get("category_id") is not None:
                image_id = _coco_int(fields["image_id"], "image_id", path)
                if image_id in wanted:
                    pairs.append((image_id, _coco_int(fields["category_id"], "category_id", path)))
        if not names:
            raise ConfigError(f"{path}: no 'categories' (not a COCO instances file?)")
        for image_id, category_id in pairs:
            if category_id not in names:
                raise ConfigError(f"{path}: annotation with unknown category_id {category_id}")
            objects[image_id] |= canonical_objects([names[category_id]], lexicon)
    if captions is not None:
        path = _existing(captions)
        for _, fields in _coco_items(path, "captions", _CAPTION_FIELDS):
            if fields.get("image_id") is None or not isinstance(fields.get("caption"), str):
                continue
            image_id = _coco_int(fields["image_id"], "image_id", path)
            if image_id in wanted:
                objects[image_id] |= set(lexicon.find(fields["caption"]))
    return objects


def _coco_items(
    path: Path, kind: str, wanted: Mapping[str, tuple[str, ...]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(prefix, {field: value})`` for each object at a prefix of `wanted`, streamed.

    Low-level events: only the fields asked for are read, never the polygons.

    Raises:
        ConfigError: the file is not JSON, or is nested deeper than COCO files are.
    """
    import ijson

    field_of = {f"{prefix}.{name}": name for prefix, names in wanted.items() for name in names}
    fields: dict[str, Any] = {}
    try:
        with path.open("rb") as handle:
            # Small reads: ijson builds the events (and paths) of a whole read at once,
            # so a 64 KiB read of "[[[[..." alone took 15 s; 4 KiB reads cost no speed.
            for prefix, event, value in ijson.parse(handle, buf_size=4096):
                if prefix in field_of:
                    if event not in ("end_map", "end_array"):  # a container: [] or {}
                        fields[field_of[prefix]] = _CONTAINERS.get(event, value)
                elif event == "end_map" and prefix in wanted:
                    yield prefix, fields
                    fields = {}
                elif len(prefix) > _MAX_PREFIX:
                    raise ConfigError(f"{path}: nested too deeply (not a COCO {kind} file)")
    except (ijson.JSONError, ValueError) as error:
        raise ConfigError(f"{path}: not a COCO {kind} file ({error})") from None


def _coco_int(value: Any, what: str, path: Path) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{path}: {what} {value!r:.80} is not an integer (not a COCO file?)")


def _existing(path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    if not target.is_file():
        raise ConfigError(f"no such file: {target}")
    return target
