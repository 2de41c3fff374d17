"""A text-only judge behind any backend, with its answers cached on disk.

MMHal-Bench rates answers with a judge and Object HalBench can extract objects
with one; both ask through `run_judge`, which asks the backend only for prompts
the cache does not hold. The cache is a JSONL file keyed by a hash of the judge
model's name and the full prompt, so re-scoring the same answers costs nothing,
and a changed prompt or judge is asked again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bpo.backends import Backend


def cache_key(model: str, prompt: str) -> str:
    """The judge cache's key: SHA-256 of the judge model's name and the prompt."""
    return hashlib.sha256(f"{model}\0{prompt}".encode()).hexdigest()


class JudgeCache:
    """Judge answers on disk (JSONL), keyed by `cache_key`; appended as they arrive."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from bpo.data.jsonl import JsonlWriter, iter_jsonl, repair_torn_tail

        self.path = Path(path)
        self.answers: dict[str, str] = {}
        repair_torn_tail(self.path)
        if self.path.exists():
            for _, row in iter_jsonl(self.path):
                if isinstance(row, dict) and isinstance(row.get("output"), str) and "id" in row:
                    self.answers.setdefault(str(row["id"]), row["output"])
        self._writer = JsonlWriter(self.path)

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, model: str, output: str) -> None:
        self.answers[key] = output
        self._writer.write({"id": key, "model": model, "output": output})

    def close(self) -> None:
        self._writer.close()


def run_judge(
    prompts: Sequence[str],
    backend: Backend,
    cache: JudgeCache,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 1024,
    progress: bool = False,
) -> tuple[list[str], int]:
    """The judge's answer to each prompt, from the cache or the backend (greedy).

    Answers are cached batch by batch, so an interrupted run keeps what it got.

    Returns:
        (answers in the order of `prompts`, how many the backend was asked for).
    """
    from bpo.backends import GenerationRequest

    keys = [cache_key(backend.model_name, prompt) for prompt in prompts]
    todo: dict[str, int] = {}  # uncached key -> the first prompt that has it
    for index, key in enumerate(keys):
        if key not in todo and cache.get(key) is None:
            todo[key] = index
    pending = list(todo.items())
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        requests = [
            GenerationRequest(
                [{"role": "user", "content": prompts[i]}],
                max_new_tokens=max_new_tokens,
                # Greedy, as the reference asks GPT-4 (temperature 0).
                temperature=0.0,
            )
            for _, i in chunk
        ]
        outputs = backend.generate(requests, progress=progress)
        for (key, _), output in zip(chunk, outputs, strict=True):
            cache.put(key, backend.model_name, output)
    answers = [cache.get(key) or "" for key in keys]
    return answers, len(pending)
