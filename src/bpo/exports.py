"""Exports of a pairs file to the formats trainers read, without conversion.

- ``trl``: a Hugging Face `datasets` dataset in TRL's conversational vision
  preference format (what `trl.DPOTrainer` and its `DataCollatorForVisionPreference`
  take): ``images`` (a list of one image, the `datasets.Image` feature),
  ``prompt`` (messages with content lists, an ``{"type": "image"}`` part opening
  the first user message), ``chosen`` and ``rejected`` (one assistant message
  each), plus ``id`` and ``strategy``. Saved with ``save_to_disk`` as
  ``<name>_trl/`` and as ``<name>_trl.parquet``.
- ``bpo``: the BPO release format (github.com/pipilurj/bootstrapped-preference-optimization-BPO,
  ``data_generation/README.md``): a JSON array of ``{"prompt", "image",
  "completions": [{"score", "response", "type"}]}``, one record per (image,
  prompt, gold answer) with the gold answer once (score 1, type ``"gt"``) and all
  its negatives (score 0, type ``"mllm-hal"`` for image-weakening, ``"llm-hal"``
  for llm-injection, else the strategy name). Saved as ``<name>_bpo.json``.
- ``llamafactory``: LLaMA-Factory's sharegpt preference format for images
  (``data/README.md`` in hiyouga/LLaMA-Factory): ``conversations`` (``from``
  human/gpt/system, ``<image>`` opening the first human turn), ``chosen`` and
  ``rejected`` (``{"from": "gpt", "value"}``), ``images`` (one path). Saved as
  ``<name>_llamafactory.json`` with its entry merged into ``dataset_info.json``.

Every export streams: the pairs file is read line by line, images one at a time
(`Dataset.from_generator`), and the BPO grouping holds byte offsets, not texts.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bpo.data.records import Pair, chat_messages
from bpo.errors import BpoError, ConfigError, ErrorPolicy, RecordError
from bpo.fsio import atomic_dir, atomic_write, write_text
from bpo.pairs import records_with_lines, stable_hash

EXPORT_FORMATS = ("trl", "bpo", "llamafactory")

# Our strategy -> the release's completion "type" (data_generation/ of the BPO
# repository: run_llava_image_weakening.py writes "mllm-hal", error_injection.py
# "llm-hal"); the inverse of what `bpo.data.formats.read_bpo_release` maps.
RELEASE_TYPES = {"image-weakening": "mllm-hal", "llm-injection": "llm-hal"}
RELEASE_GOLD_TYPE = "gt"

# The image placeholder of LLaVA-style prompts, used by the BPO release and LLaMA-Factory.
IMAGE_TOKEN = "<image>"

# Original image bytes are kept when the file already decodes to RGB in one of
# these formats; anything else is stored as a PNG of its RGB conversion.
_KEPT_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        format: the export format.
        paths: the files or folders written.
        rows: the records written (pairs; for ``bpo``, grouped records).
        pairs: the pairs they hold.
        left_out: pairs the format cannot hold, by reason.
    """

    format: str
    paths: list[Path]
    rows: int = 0
    pairs: int = 0
    left_out: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        text = f"{self.format}: {self.pairs} pairs in {self.rows} records -> "
        text += ", ".join(str(path) for path in self.paths)
        if self.left_out:
            text += " (left out: " + ", ".join(f"{k}: {n}" for k, n in self.left_out.items()) + ")"
        return text


def _write_json_array(path: Path, items: Iterable[dict[str, Any]]) -> int:
    """Write `items` as a JSON array, one item per line, atomically; return the count."""
    count = 0
    with atomic_write(path) as handle:
        handle.write("[")
        for item in items:
            handle.write(",\n" if count else "\n")
            handle.write(json.dumps(item, ensure_ascii=False))
            count += 1
        handle.write("\n]\n" if count else "]\n")
    return count


# --- TRL / Hugging Face datasets -------------------------------------------------------


def trl_features() -> Any:
    """The `datasets.Features` of the TRL export."""
    from datasets import Features, Image, List, Value

    message = {
        "role": Value("string"),
        "content": List({"type": Value("string"), "text": Value("string")}),
    }
    return Features(
        {
            "id": Value("string"),
            "images": List(Image()),
            "prompt": List(message),
            "chosen": List(message),
            "rejected": List(message),
            "strategy": Value("string"),
        }
    )


def _image_bytes(pair: Pair, image_root: str | os.PathLike[str] | None) -> bytes:
    """The image of `pair`, checked by `load_image`, as bytes for the `datasets.Image` feature.

    An RGB JPEG/PNG/WebP keeps its original bytes (re-encoding photos as PNG
    would triple the dataset, as JPEG would lose quality); any other file is
    stored as a PNG of `load_image`'s RGB conversion.
    """
    from PIL import Image

    from bpo.data.images import load_image, resolve_image_path

    assert pair.image is not None
    image = load_image(pair.image, image_root, record_id=pair.id)
    path = resolve_image_path(pair.image, image_root, record_id=pair.id)
    with Image.open(path) as header:
        original_is_rgb = header.mode == "RGB" and header.format in _KEPT_IMAGE_FORMATS
    if original_is_rgb:
        return path.read_bytes()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _text_message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def trl_row(pair: Pair, image: bytes | None) -> dict[str, Any]:
    """One row of the TRL export (`image`: the encoded image, or None for text-only)."""
    return {
        "id": pair.id,
        "images": [image] if image is not None else [],
        "prompt": chat_messages(pair.prompt, with_image=image is not None),
        "chosen": [_text_message("assistant", pair.chosen)],
        "rejected": [_text_message("assistant", pair.rejected)],
        "strategy": pair.strategy,
    }


def _trl_rows(
    pairs_path: str, image_root: str | None, policy: ErrorPolicy, result: ExportResult
) -> Iterator[dict[str, Any]]:
    for _, pair in records_with_lines(pairs_path, Pair, policy=policy):
        image = None
        if pair.image is not None:
            try:
                image = _image_bytes(pair, image_root)
            except RecordError as error:
                policy.handle(error)
                result.left_out[error.kind] += 1
                continue
        result.rows += 1
        result.pairs += 1
        yield trl_row(pair, image)


def _bpo_error(error: BaseException) -> BpoError | None:
    """The bpo error inside an exception `datasets` wrapped (DatasetGenerationError)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, BpoError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def export_trl(
    pairs_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    policy: ErrorPolicy | None = None,
) -> ExportResult:
    """Export pairs as a TRL conversational vision preference dataset.

    The dataset is built with `datasets.Dataset.from_generator` (rows are written
    to Arrow as they come, so images are never all in memory) in a fresh cache
    folder (so a changed pairs file is never served from a stale cache), then
    saved with ``save_to_disk`` and as one parquet file, each renamed into place
    once complete. The cache folder has a fixed hidden name, ``.<name>_trl.cache``,
    so that one left by a killed export is removed by the next.

    Args:
        pairs_path: the pairs JSONL file.
        out_dir: where ``<name>_trl/`` and ``<name>_trl.parquet`` are written.
        name: the prefix of the outputs (default: the pairs file's stem).
        image_root: the folder the pairs' image paths are relative to.
        policy: what to do with a bad pair or image (default: raise).

    Returns:
        What was written; pairs whose image failed (when skipped) are in `left_out`.

    Raises:
        ConfigError: when there is no pair to export (`datasets` cannot build or
            load back an empty dataset).
    """
    import datasets

    policy = policy or ErrorPolicy()
    pairs_path, out_dir = Path(pairs_path), Path(out_dir)
    name = name or pairs_path.stem
    target, parquet = out_dir / f"{name}_trl", out_dir / f"{name}_trl.parquet"
    result = ExportResult("trl", [target, parquet])
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = out_dir / f".{name}_trl.cache"
    shutil.rmtree(cache, ignore_errors=True)
    try:
        try:
            dataset = datasets.Dataset.from_generator(
                _trl_rows,
                features=trl_features(),
                cache_dir=str(cache),
                gen_kwargs={
                    "pairs_path": str(pairs_path),
                    "image_root": None if image_root is None else str(image_root),
                    "policy": policy,
                    "result": result,
                },
            )
        except Exception as error:
            cause = _bpo_error(error)
            if cause is not None:
                raise cause from None
            if result.rows:
                raise
            # `datasets` builds no dataset from a generator that yields nothing
            # (and could not load a saved empty one back).
            raise ConfigError(
                f"nothing to export as a TRL dataset: {pairs_path} holds no pair that could be read"
            ) from None
        with atomic_dir(target) as staging:
            dataset.save_to_disk(str(staging))
        with atomic_write(parquet, "wb") as handle:
            dataset.to_parquet(handle)
        del dataset
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return result


# --- BPO release -----------------------------------------------------------------------


def release_prompt(pair: Pair) -> str | None:
    """The release's prompt string ``"question\\n<image>"``, or None if it cannot hold the prompt.

    The release holds one question about one image: no system prompt, no earlier turns.
    """
    if len(pair.prompt) != 1 or pair.image is None:
        return None
    return f"{pair.prompt[0]['content']}\n{IMAGE_TOKEN}"


def export_bpo_release(
    pairs_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    policy: ErrorPolicy | None = None,
) -> ExportResult:
    """Export pairs in the BPO release format, grouped per (image, prompt, gold answer).

    Pairs whose prompt is more than one user message (a system prompt, earlier
    turns) or that have no image cannot be written in this format: they are left
    out and counted. Grouping streams in two passes: the first maps each group (a
    64-bit hash of image, prompt and gold answer) to the lines of its pairs, the
    second reads each group's lines back by their byte offsets; no text is held.

    Args:
        pairs_path: the pairs JSONL file.
        out_dir: where ``<name>_bpo.json`` is written.
        name: the prefix of the output (default: the pairs file's stem).
        policy: what to do with a bad pair (default: raise).
    """
    policy = policy or ErrorPolicy()
    pairs_path, out_dir = Path(pairs_path), Path(out_dir)
    target = out_dir / f"{name or pairs_path.stem}_bpo.json"
    result = ExportResult("bpo", [target])

    # group (a hash of image, prompt and gold answer) -> the lines of its pairs
    groups: dict[int, list[int]] = {}
    for line, pair in records_with_lines(pairs_path, Pair, policy=policy):
        prompt = release_prompt(pair)
        if prompt is None or pair.image is None:
            result.left_out["no-image" if pair.image is None else "multi-turn-prompt"] += 1
            continue
        groups.setdefault(stable_hash(pair.image, prompt, pair.chosen), []).append(line)

    offsets = array("q")  # byte offset of each line: 8 bytes per pair
    with open(pairs_path, "rb") as handle:
        position = 0
        for raw in handle:
            offsets.append(position)
            position += len(raw)

    def read_pair(handle: BinaryIO, line: int) -> Pair:
        handle.seek(offsets[line - 1])
        return Pair.from_dict(json.loads(handle.readline()))

    def records() -> Iterator[dict[str, Any]]:
        with open(pairs_path, "rb") as handle:
            for lines in groups.values():
                pairs = [read_pair(handle, line) for line in lines]  # one group at a time
                first = pairs[0]
                gold = {"score": 1, "response": first.chosen, "type": RELEASE_GOLD_TYPE}
                negatives = [
                    {
                        "score": 0,
                        "response": pair.rejected,
                        "type": RELEASE_TYPES.get(pair.strategy, pair.strategy),
                    }
                    for pair in pairs
                ]
                result.pairs += len(pairs)
                yield {
                    "prompt": release_prompt(first),
                    "image": first.image,
                    "completions": [gold, *negatives],
                }

    result.rows = _write_json_array(target, records())
    return result


# --- LLaMA-Factory ---------------------------------------------------------------------

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

    result.rows = _write_json_array(data_file, records())
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


def export_pairs(
    format: str,
    pairs_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    policy: ErrorPolicy | None = None,
) -> ExportResult:
    """Export a pairs file in `format` (one of `EXPORT_FORMATS`).

    Raises:
        ConfigError: for an unknown format, listing the valid ones.
    """
    if format == "trl":
        return export_trl(pairs_path, out_dir, name=name, image_root=image_root, policy=policy)
    if format == "bpo":
        return export_bpo_release(pairs_path, out_dir, name=name, policy=policy)
    if format == "llamafactory":
        return export_llamafactory(
            pairs_path, out_dir, name=name, image_root=image_root, policy=policy
        )
    raise ConfigError(
        f"unknown export format {format!r}; valid formats: {', '.join(EXPORT_FORMATS)}"
    )
