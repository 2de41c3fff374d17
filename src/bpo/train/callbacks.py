"""`MetricsLogger`: one JSON line per logging step in ``metrics.jsonl``, with the step time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from bpo.fsio import write_text

# TRL's DPO metrics worth a report, in the order written (others follow as TRL names them).
REPORTED = (
    "loss",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "learning_rate",
    "grad_norm",
)


class MetricsLogger(TrainerCallback):
    """Appends each training log to a JSONL file, with the mean wall time per optimizer step.

    A line holds ``step``, ``epoch``, TRL's metrics (loss, reward margin and
    accuracy, chosen and rejected rewards and log-probs, learning rate ...) and
    ``step_time`` (seconds per optimizer step since the previous line, data
    loading included). Only the main process writes. On resume, lines past the
    checkpoint's step, and a last line torn by a killed process, are dropped
    first (the file is rewritten atomically), so each step appears once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._last = 0.0
        self._times: list[float] = []

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._last = time.perf_counter()
        self._times = []
        if state.is_world_process_zero and self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                step = _step(line)
                if step is not None and step <= state.global_step:
                    kept.append(line)
            write_text(self.path, "".join(line + "\n" for line in kept))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        now = time.perf_counter()
        self._times.append(now - self._last)
        self._last = now

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return  # the end-of-training summary goes to train_result.json instead
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
        record.update({key: logs[key] for key in REPORTED if key in logs})
        record.update({key: value for key, value in logs.items() if key not in record})
        if self._times:
            record["step_time"] = sum(self._times) / len(self._times)
            self._times = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _step(line: str) -> int | None:
    try:
        step = json.loads(line).get("step")
    except (json.JSONDecodeError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of a ``metrics.jsonl``, in order."""
    return [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
