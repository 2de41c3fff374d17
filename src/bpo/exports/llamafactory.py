"""The LLaMA-Factory export: sharegpt preference records and their dataset_info.json entry.

How LLaMA-Factory reads what is written here (hiyouga/LLaMA-Factory, read at ff6d4d1):

- ``dataset_info.json`` is read from ``dataset_dir`` (default ``data``), and a local
  entry's ``file_name`` is joined to ``dataset_dir`` (`get_dataset_list` in
  src/llamafactory/data/parser.py, `_load_single_dataset` in data/loader.py).
- Each image path is joined to ``media_dir`` and used if that is a file; if not, it is
  used as written, i.e. relative to the trainer's working directory, with a warning
  (`DatasetConverter._find_medias` in data/converter.py). ``media_dir`` defaults to
  ``dataset_dir`` (`DataArguments.__post_init__` in hparams/data_args.py).
- Every ``<image>`` in the messages (prompt, chosen and rejected) is one image: their
  count must equal the number of images (`BasePlugin._validate_messages` in
  data/mm_plugin.py), and each is replaced where it stands by the model's image tokens
  (e.g. `LlavaPlugin.process_messages`), leaving the text around it as it is.
- An entry's keys other than LLaMA-Factory's own are ignored (`DatasetAttr.join` reads
  only the keys it knows), which is where the entry records the pairs file it came from.

So image paths are written relative to the export folder, which is the ``dataset_dir``
that holds ``dataset_info.json``: the folder and the images, moved together, still load
with LLaMA-Factory's default ``media_dir`` and from any working directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

from bpo.data.records import Pair
from bpo.errors import ConfigError, ErrorPolicy, ImageError, RecordError
from bpo.exports.common import IMAGE_TOKEN, ExportResult, export_name, write_json_array
from bpo.fsio import write_text
from bpo.pairs import records_with_lines

_SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}

# LLaVA trains on "<image>\n" opening the user turn: `preprocess_multimodal` in
# haotian-liu/LLaVA's llava/train/train.py moves every placeholder there, as
# DEFAULT_IMAGE_TOKEN + "\n". The LLaVA chat template (`bpo.tiny_models`, llava-hf) renders
# an image part the same way, so this export and the TRL one give the same text.
# mm_plugin replaces the placeholder alone and keeps the newline; LLaMA-Factory's own
# data/mllm_demo.json glues "<image>" to the question instead, which would drop it.
IMAGE_LINE = IMAGE_TOKEN + "\n"

# The key of a dataset_info.json entry that names the pairs file it was exported from.
SOURCE_KEY = "bpo_pairs"

_INFO_FILE = "dataset_info.json"


def llamafactory_record(pair: Pair, image: str | None) -> dict[str, Any]:
    """One pair in LLaMA-Factory's sharegpt preference format (`image`: the path to write).

    With an image, ``"<image>\\n"`` opens the first user turn (see `IMAGE_LINE`).
    """
    conversations = []
    image_placed = image is None
    for message in pair.prompt:
        value = message["content"]
        if not image_placed and message["role"] == "user":
            value, image_placed = IMAGE_LINE + value, True
        conversations.append({"from": _SHAREGPT_ROLES[message["role"]], "value": value})
    record: dict[str, Any] = {
        "conversations": conversations,
        "chosen": {"from": "gpt", "value": pair.chosen},
        "rejected": {"from": "gpt", "value": pair.rejected},
    }
    if image is not None:
        record["images"] = [image]
    return record


def llamafactory_dataset_info(file_name: str, *, source: str | None = None) -> dict[str, Any]:
    """The ``dataset_info.json`` entry that declares a sharegpt preference file with images.

    Args:
        file_name: the data file, relative to the dataset folder.
        source: the pairs file it was exported from, recorded under `SOURCE_KEY`.
    """
    entry: dict[str, Any] = {
        "file_name": file_name,
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {
            "messages": "conversations",
            "chosen": "chosen",
            "rejected": "rejected",
            "images": "images",
        },
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "system_tag": "system",
        },
    }
    if source is not None:
        entry[SOURCE_KEY] = source
    return entry


def _relative_to(path: Path, folder: Path) -> str:
    """`path` relative to `folder`, with '/' (which os.path.join takes on every OS)."""
    try:
        return PurePath(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # Windows: another drive, where no relative path leads
        return path.as_posix()


def dataset_image_path(
    image: str,
    image_root: str | os.PathLike[str] | None,
    dataset_dir: Path,
    *,
    record_id: str | None = None,
) -> str:
    """A pair's image path as written in the export: relative to `dataset_dir`.

    The path goes through `bpo.data.images.resolve_image_path`'s check against the
    image root, which is the current directory when `image_root` is None (pairs' paths
    are relative to an image root; without one they are read from the current
    directory, so that is the root they may not leave). The file must exist.

    The path is taken as the folders are laid out, symlinks kept, so that an image
    root linked into the project (``data/images -> /mnt/coco``) is written as
    ``images/...`` and moves with the project. If that path does not lead to the same
    file (a ``..`` out of a linked folder goes up from where the folder really is), the
    path between the resolved locations is written instead.

    Raises:
        ImageError: kind ``"unsafe-path"`` (leaves the root), ``"bad-image-path"``
            (empty) or ``"missing-image"`` (no such file).
    """
    from bpo.data.images import resolve_image_path

    root = Path.cwd() if image_root is None else Path(image_root)
    resolved = resolve_image_path(image, root, record_id=record_id)
    if not resolved.is_file():
        raise ImageError(
            "image file not found", record_id=record_id, path=resolved, kind="missing-image"
        )
    laid_out = _relative_to(Path(os.path.abspath(root / image)), Path(os.path.abspath(dataset_dir)))
    if (dataset_dir / laid_out).resolve() == resolved:
        return laid_out
    return _relative_to(resolved, dataset_dir.resolve())


def _check_text(pair: Pair) -> None:
    """Refuse a pair whose texts hold ``<image>``: LLaMA-Factory would count it as an image."""
    texts = [message["content"] for message in pair.prompt] + [pair.chosen, pair.rejected]
    if any(IMAGE_TOKEN in text for text in texts):
        raise RecordError(
            f"the pair's text holds {IMAGE_TOKEN!r}, which LLaMA-Factory takes for one more "
            "image than the pair has",
            record_id=pair.id,
            kind="image-token-in-text",
        )


def check_llamafactory_name(name: str) -> None:
    """Refuse a dataset name that ``--dataset`` of LLaMA-Factory could not select.

    LLaMA-Factory splits ``dataset`` at commas and strips each name
    (`DataArguments.__post_init__`, hparams/data_args.py).
    """
    if "," in name or name != name.strip():
        raise ConfigError(
            f"invalid dataset name {name!r}: LLaMA-Factory splits its --dataset at commas "
            "and strips spaces, so it could not select this name"
        )


def _read_info(info_file: Path) -> dict[str, Any]:
    if not info_file.exists():
        return {}
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{info_file} is not valid JSON ({error.msg}); fix or remove it"
        ) from None
    if not isinstance(info, dict) or not all(isinstance(entry, dict) for entry in info.values()):
        raise ConfigError(f"{info_file} must hold a JSON object of dataset entries (objects)")
    return info


def _merged_info(
    info_file: Path, name: str, entry: dict[str, Any], *, overwrite: bool
) -> dict[str, Any]:
    """`info_file`'s entries with `entry` as `name`, or a refusal that names the conflict.

    An entry `name` is replaced when it was exported from the same pairs file (a rerun
    of `bpo pairs`, which appends, or one after a crash) or with `overwrite`; any other
    is someone else's dataset. No other entry may read the data file that is written.
    """
    info = _read_info(info_file)
    for other, declared in info.items():
        if other != name and declared.get("file_name") == entry["file_name"]:
            raise ConfigError(
                f"entry {other!r} of {info_file} reads {entry['file_name']}, which exporting "
                f"{name!r} would replace; export under another --dataset-name"
            )
    existing = info.get(name)
    if existing is not None and existing.get(SOURCE_KEY) != entry[SOURCE_KEY] and not overwrite:
        origin = (
            f"exported from {existing[SOURCE_KEY]}"
            if SOURCE_KEY in existing
            else "not exported by bpo"
        )
        raise ConfigError(
            f"{info_file} already has a dataset named {name!r} ({origin}, not from "
            f"{entry[SOURCE_KEY]}); export under another --dataset-name, or pass --overwrite "
            "to replace that entry"
        )
    info[name] = entry
    return info


def check_llamafactory_export(
    pairs_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    overwrite: bool = False,
) -> None:
    """Raise the `ConfigError` that `export_llamafactory` would raise before writing.

    For a caller with other work to do first (`bpo pairs` builds the pairs and the other
    exports), so that a refusal comes before any of it.
    """
    _plan(Path(pairs_path), Path(out_dir), name, overwrite=overwrite)


def _plan(
    pairs_path: Path, out_dir: Path, name: str | None, *, overwrite: bool
) -> tuple[str, dict[str, Any]]:
    name = export_name(name, pairs_path)
    check_llamafactory_name(name)
    entry = llamafactory_dataset_info(
        f"{name}_llamafactory.json", source=_relative_to(pairs_path.resolve(), out_dir.resolve())
    )
    _merged_info(out_dir / _INFO_FILE, name, entry, overwrite=overwrite)
    return name, entry


def export_llamafactory(
    pairs_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    policy: ErrorPolicy | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export pairs for LLaMA-Factory (sharegpt, ``ranking: true``) and declare them.

    `out_dir` is LLaMA-Factory's ``dataset_dir``: it gets ``<name>_llamafactory.json``
    and the entry `name` in its ``dataset_info.json``, whose other entries are kept, so
    it may be LLaMA-Factory's own ``data/`` folder. Image paths are written relative to
    `out_dir` (see the module docstring), so train with ``media_dir`` unset (or set to
    `out_dir`). They are checked not to leave the image root, which is `image_root`,
    or the current directory when it is None (the folder the pairs' relative paths are
    then read from); absolute paths are refused unless they lie inside that root.

    Nothing is written when the export is refused: a `name` that exists already, made
    from another pairs file or not by bpo (unless `overwrite`), another entry that reads
    the same data file, or an unreadable ``dataset_info.json``. ``dataset_info.json``
    is read again just before it is rewritten (atomically), so that an entry another
    export added meanwhile is kept.

    Args:
        pairs_path: the pairs JSONL file.
        out_dir: where ``<name>_llamafactory.json`` and ``dataset_info.json`` go.
        name: the dataset name and the output prefix (default: the pairs file's stem).
        image_root: the folder the pairs' image paths are relative to.
        policy: what to do with a bad pair, image path or missing image (default: raise).
        overwrite: replace an entry `name` that was not exported from this pairs file.

    Raises:
        ConfigError: for a refused export, naming ``dataset_info.json`` and the entry.
    """
    policy = policy or ErrorPolicy()
    pairs_path, out_dir = Path(pairs_path), Path(out_dir)
    name, entry = _plan(pairs_path, out_dir, name, overwrite=overwrite)
    data_file, info_file = out_dir / entry["file_name"], out_dir / _INFO_FILE
    result = ExportResult("llamafactory", [data_file, info_file])

    def records() -> Iterator[dict[str, Any]]:
        for _, pair in records_with_lines(pairs_path, Pair, policy=policy):
            try:
                _check_text(pair)
                image = pair.image
                if image is not None:
                    image = dataset_image_path(image, image_root, out_dir, record_id=pair.id)
            except RecordError as error:
                policy.handle(error)
                result.left_out[error.kind] += 1
                continue
            result.pairs += 1
            yield llamafactory_record(pair, image)

    result.rows = write_json_array(data_file, records())
    info = _merged_info(info_file, name, entry, overwrite=overwrite)
    write_text(info_file, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return result
