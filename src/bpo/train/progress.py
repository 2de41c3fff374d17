"""The training console: one progress bar, a compact line per log, a summary at the end.

transformers prints each log as a raw dict (`PrinterCallback`) or beside its
own bar (`ProgressCallback`); `ConsoleProgress` replaces both. Every
``logging_steps`` it prints one line of the numbers a DPO run is judged by (loss,
reward accuracy and margin, the chosen and rejected log-probs, whose fall
together is the likelihood displacement DPO is known for), and `summary_table`
gives the run's first and last values once it ends, from ``metrics.jsonl``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from bpo import console

# (metrics key, label, format) of the compact line, in order.
LINE = (
    ("loss", "loss", "{:.4f}"),
    ("rewards/accuracies", "acc", "{:.2f}"),
    ("rewards/margins", "margin", "{:.3f}"),
    ("logps/chosen", "logp chosen", "{:.2f}"),
    ("logps/rejected", "rejected", "{:.2f}"),
    ("grad_norm", "grad", "{:.3g}"),
    ("learning_rate", "lr", "{:.1e}"),
)


def log_line(step: int, max_steps: int, logs: dict[str, Any]) -> str:
    """``step 10/300  loss 0.6931  acc 0.50 ...`` from one training log."""
    parts = [f"step {step}/{max_steps}"]
    for key, label, fmt in LINE:
        value = logs.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {fmt.format(value)}")
    return "  ".join(parts)


class ConsoleProgress(TrainerCallback):
    """One bar over the optimizer steps, and `log_line` above it at each log (main process)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        from tqdm.auto import tqdm

        if state.is_world_process_zero and console.level() > console.QUIET:
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc="train",
                unit="step",
                disable=console.hide_bar(),
            )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.bar is not None and logs and "loss" in logs:
            console.say(log_line(state.global_step, state.max_steps, logs))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _first_last(rows: list[dict[str, Any]], key: str) -> tuple[float, float] | None:
    values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
    return (values[0], values[-1]) if values else None


def summary_table(
    run_dir: str | os.PathLike[str],
    *,
    global_step: int,
    seconds: float,
    output: str | os.PathLike[str],
    resumed_from: str | None = None,
    more: Sequence[tuple[str, str]] = (),
) -> str:
    """The end-of-run summary of a training run folder, as aligned text.

    Args:
        run_dir: the run folder (its ``metrics.jsonl`` is read).
        global_step: optimizer steps done in all.
        seconds: wall time of this invocation's training.
        output: where the adapter or model is.
        resumed_from: the checkpoint this invocation resumed from.
        more: further (label, value) rows, after the output's.
    """
    from bpo.train.callbacks import read_metrics

    metrics = Path(run_dir) / "metrics.jsonl"
    rows = read_metrics(metrics) if metrics.exists() else []
    lines: list[tuple[str, str]] = [("steps", str(global_step))]
    timing = f"{seconds:.1f} s"
    if resumed_from:
        timing += f" (resumed from {Path(resumed_from).name})"
    lines.append(("time", timing))
    last = rows[-1] if rows else {}
    for key, label, fmt in (
        ("loss", "final loss", "{:.4f}"),
        ("rewards/accuracies", "reward accuracy", "{:.2f}"),
        ("rewards/margins", "reward margin", "{:.3f}"),
    ):
        if isinstance(last.get(key), (int, float)):
            lines.append((label, fmt.format(last[key])))
    for key, label in (
        ("logps/chosen", "log-prob chosen"),
        ("logps/rejected", "log-prob rejected"),
    ):
        pair = _first_last(rows, key)
        if pair is not None:
            lines.append((label, f"{pair[0]:.2f} → {pair[1]:.2f} (first → last log)"))
    name = "adapter" if Path(output).name == "adapter" else "model"
    lines.append((name, str(output)))
    lines.extend(more)
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in lines)
