"""The TRL export: a `datasets` dataset in TRL's conversational vision preference format.

The format is described in `bpo.exports`; it is saved with ``save_to_disk`` and as parquet.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bpo.data.records import Pair, chat_messages
from bpo.errors import BpoError, ConfigError, ErrorPolicy, RecordError
from bpo.exports.common import ExportResult, export_name
from bpo.fsio import atomic_dir, atomic_write
from bpo.pairs import records_with_lines

# Original image bytes are kept when the file already decodes to RGB in one of
# these formats; anything else is stored as a PNG of its RGB conversion.
_KEPT_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")


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
            "weakening": Value("string"),
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
        # JSON text (None if the image was not weakened): one Arrow type whatever the
        # distortion's parameters are.
        "weakening": json.dumps(pair.weakening, sort_keys=True) if pair.weakening else None,
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
    name = export_name(name, pairs_path)
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
