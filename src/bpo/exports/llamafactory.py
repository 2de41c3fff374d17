"""The LLaMA-Factory export: sharegpt preference records and their dataset_info.json entry."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bpo.data.records import Pair
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.exports.common import IMAGE_TOKEN, ExportResult, write_json_array
from bpo.fsio import write_text
from bpo.pairs import records_with_lines

_SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def llamafactory_record(pair: Pair, image: str | None) -> dict[str, Any]:
    """One pair in LLaMA-Factory's sharegpt preference format (`image`: the path to write)."""
    conversations = []
    image_placed = image is None
    for message in pair.prompt:
        value = message["content"]
        if not image_placed and message["role"] == "user":
            value, image_placed = IMAGE_TOKEN + value, True
        conversations.append({"from": _SHAREGPT_ROLES[message["role"]], "value": value})
    record: dict[str, Any] = {
        "conversations": conversations,
        "chosen": {"from": "gpt", "value": pair.chosen},
        "rejected": {"from": "gpt", "value": pair.rejected},
    }
    if image is not None:
        record["images"] = [image]
    return record


def llamafactory_dataset_info(file_name: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry that declares a sharegpt preference file with images."""
    return {
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


def export_llamafactory(
    pairs_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    policy: ErrorPolicy | None = None,
) -> ExportResult:
    """Export pairs for LLaMA-Factory (sharegpt, ``ranking: true``) and declare them.

    With `image_root`, image paths are written resolved and absolute (checked
    not to leave the root), so LLaMA-Factory finds them whatever its
    ``media_dir``; without it, they are written as in the pairs, relative to the
    image root, for ``media_dir: <image root>``. The ``dataset_info.json`` in
    `out_dir` gets (or has replaced) the entry `name`; its other entries are kept,
    so `out_dir` may be LLaMA-Factory's own ``data/`` folder.

    Args:
        pairs_path: the pairs JSONL file.
        out_dir: where ``<name>_llamafactory.json`` and ``dataset_info.json`` go.
        name: the dataset name and the output prefix (default: the pairs file's stem).
        image_root: the folder the pairs' image paths are relative to.
        policy: what to do with a bad pair or image path (default: raise).
    """
    from bpo.data.images import resolve_image_path

    policy = policy or ErrorPolicy()
    pairs_path, out_dir = Path(pairs_path), Path(out_dir)
    name = name or pairs_path.stem
    data_file = out_dir / f"{name}_llamafactory.json"
    info_file = out_dir / "dataset_info.json"
    result = ExportResult("llamafactory", [data_file, info_file])

    def records() -> Iterator[dict[str, Any]]:
        for _, pair in records_with_lines(pairs_path, Pair, policy=policy):
            image = pair.image
            if image is not None and image_root is not None:
                try:
                    image = str(resolve_image_path(image, image_root, record_id=pair.id))
                except RecordError as error:
                    policy.handle(error)
                    result.left_out[error.kind] += 1
                    continue
            result.pairs += 1
            yield llamafactory_record(pair, image)

    result.rows = write_json_array(data_file, records())
    info: dict[str, Any] = {}
    if info_file.exists():
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{info_file} is not valid JSON ({error.msg}); fix or remove it"
            ) from None
        if not isinstance(info, dict):
            raise ConfigError(f"{info_file} must hold a JSON object")
    info[name] = llamafactory_dataset_info(data_file.name)
    write_text(info_file, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return result
