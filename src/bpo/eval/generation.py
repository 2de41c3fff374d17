"""Answering benchmark items through any backend, resumably.

Answers are appended to a JSONL file as each batch finishes, one ``{"id",
"answer", ...fields}`` per item; items already in the file are skipped, so a
re-run continues where the last one stopped and a crash costs at most the
batch in flight. Images are loaded batch by batch (memory stays bounded).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpo.console import hide_bar
from bpo.data.jsonl import JsonlWriter
from bpo.engine import LOCAL, EngineOptions, run_batches
from bpo.engine.work import AnswerWork, BackendSpec
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.eval.items import EvalItem

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from bpo.backends import Backend


@dataclass
class GenerationStats:
    """What one generation pass did."""

    generated: int = 0
    resumed: int = 0
    failed: int = 0


def generate_answers(
    items: Sequence[EvalItem],
    backend: Backend | BackendSpec,
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int = 0,
    policy: ErrorPolicy | None = None,
    progress: bool = True,
    before_first_write: Callable[[], None] | None = None,
    resume: bool = True,
    engine: EngineOptions = LOCAL,
) -> GenerationStats:
    """Answer the items not yet in `path` (JSONL), batch by batch, appending as they finish.

    An item whose image cannot be loaded, or whose batch the backend fails on
    (a `BpoError` other than a `ConfigError`), is handled by `policy`: raised, or
    counted and left unanswered (a re-run retries it). `before_first_write` is
    called just before the first answer is written (the settings record goes
    there); `resume=False` replaces `path` instead of continuing it. `backend` is
    a backend built here, or a `BackendSpec` that the `engine` builds: here, or in
    each Ray replica (`bpo.engine`).
    """
    from tqdm.auto import tqdm

    from bpo.backends import GenerationRequest

    policy = policy or ErrorPolicy()
    stats = GenerationStats()
    work = AnswerWork(backend)
    with (
        closing(work),
        JsonlWriter(path, resume=resume, before_first_write=before_first_write) as writer,
    ):
        pending = [item for item in items if item.id not in writer]
        stats.resumed = len(items) - len(pending)
        with tqdm(
            total=len(pending), desc="answering", unit="item", disable=hide_bar(progress)
        ) as bar:

            def batches() -> Iterator[tuple[list[EvalItem], list[GenerationRequest]]]:
                for start in range(0, len(pending), batch_size):
                    chunk = pending[start : start + batch_size]
                    batch, requests = [], []
                    for item in chunk:
                        try:
                            image = _image(item, image_root)
                        except RecordError as error:
                            policy.handle(error)
                            stats.failed += 1
                            continue
                        batch.append(item)
                        requests.append(
                            GenerationRequest(
                                item.prompt,
                                image=image,
                                max_new_tokens=max_new_tokens,
                                temperature=temperature,
                                seed=seed,
                            )
                        )
                    bar.update(len(chunk) - len(batch))
                    if requests:
                        yield batch, requests

            for batch, result in run_batches(work, batches(), engine):
                if isinstance(result.error, ConfigError):
                    raise result.error
                if result.error is not None:
                    for item in batch:
                        policy.handle(
                            RecordError(
                                str(result.error), record_id=item.id, kind="generation-failed"
                            )
                        )
                    stats.failed += len(batch)
                else:
                    assert result.outputs is not None
                    for item, text in zip(batch, result.outputs, strict=True):
                        writer.write({"id": item.id, "answer": text, **item.fields})
                        stats.generated += 1
                bar.update(len(batch))
    return stats


def _image(item: EvalItem, image_root: str | os.PathLike[str] | None) -> PILImage | None:
    """The item's image: decoded from its embedded data, else loaded from the image root."""
    from bpo.data.images import decode_image, load_image

    if item.image_data is not None:
        try:
            data = base64.b64decode(item.image_data, validate=True)
        except (binascii.Error, ValueError):
            raise RecordError("embedded image is not base64", record_id=item.id) from None
        return decode_image(io.BytesIO(data), record_id=item.id)
    if item.image is None:
        return None
    return load_image(item.image, image_root, record_id=item.id)
