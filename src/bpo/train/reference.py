"""Reference log-probs computed once, before training, and cached with the tokenized pairs.

DPO compares the policy's log-probs of the chosen and rejected responses with a
frozen reference model's. The reference never changes, so its log-probs can be
computed in one pass and read back at each step, which drops the reference
forward pass from every training step. TRL does this for text datasets
(``precompute_ref_log_probs``) but refuses vision datasets; this module does it
for them. This module owns the cache (its key, its store, the fixed batches of a
resumable pass) and knows nothing of the trainer: it is handed a function that
gives the log-probs of a batch of rows. `BpoDPOTrainer` hands it TRL's own
`DPOTrainer.compute_ref_log_probs` on our batches (with LoRA: the model with its
adapter disabled; with full fine-tuning: TRL's reference copy, freed afterwards),
so choosing and running the reference model stays with the trainer.

The pass is batched, shows a progress bar, and resumes: each batch's results are
appended to ``reference_logps.jsonl`` (one line per row, keyed by row index, via
`bpo.data.jsonl.JsonlWriter`), so a killed pass restarts at the first batch with
a missing row. The batches are fixed (process r takes rows r, r + n, r + 2n ...
of n processes, cut in `batch_size` slices) whatever is already stored: a row is
always computed in the same batch, with the same padding, so a resumed pass
stores the same bits as an uninterrupted one. Under several processes, the main
process writes every process's rows. ``done.json`` marks a complete pass. The folder is
keyed by a hash of the tokenized pairs and of the reference model (see
`reference_fingerprint`), so a changed model or data gets a fresh cache.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bpo import console
from bpo.config import Recipe
from bpo.data.jsonl import JsonlWriter, iter_jsonl, repair_torn_tail
from bpo.errors import BpoError
from bpo.fsio import write_text
from bpo.train.data import REFERENCE_COLUMNS, WEAKENED_REFERENCE_COLUMN, digest

# The log-probs of a batch of dataset rows, one sequence per column (chosen, rejected, and
# with the image-conditional term the chosen on the weakened image), one value per row each.
BatchLogps = Callable[[list[dict[str, Any]]], Sequence[Sequence[float]]]

# Bump when the way reference log-probs are computed changes.
REFERENCE_VERSION = 1
STORE_NAME = "reference_logps.jsonl"
DONE_NAME = "done.json"


def model_fingerprint(name: str, revision: str | None = None) -> str:
    """A hash that changes when the model's weights or config change.

    A local folder: the names, sizes and modification times of its weight and
    config files. A hub id: the id and the commit of the cached snapshot (its
    folder name in the hub cache), else the requested revision.
    """
    path = Path(name)
    if path.is_dir():
        files = sorted(
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*")
            if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".pt"}
        )
        return digest("local", files)
    commit = revision
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
        if isinstance(cached, str):
            commit = Path(cached).parent.name  # .../snapshots/<commit>/config.json
    except ImportError:
        pass
    return digest("hub", name, commit)


def reference_columns(recipe: Recipe) -> tuple[str, ...]:
    """The reference log-probs the recipe's loss reads: chosen, rejected, and the chosen on
    the weakened image when ``train.image_conditional_weight`` is set."""
    if recipe.train.image_conditional_weight:
        return (*REFERENCE_COLUMNS, WEAKENED_REFERENCE_COLUMN)
    return REFERENCE_COLUMNS


def reference_fingerprint(recipe: Recipe, data_fingerprint: str, *, mixed_precision: str) -> str:
    """What the reference log-probs depend on: the tokenized pairs, the model, the numerics
    and the columns stored (a cache without the weakened column is not reused for one
    with it; the two-column key is the one of earlier versions)."""
    model = recipe.model
    parts: list[Any] = [
        REFERENCE_VERSION,
        data_fingerprint,
        # The reference's own weights: train.reference_model's, else the policy's start.
        model_fingerprint(recipe.train.reference_model, None)
        if recipe.train.reference_model
        else model_fingerprint(model.name, model.revision),
        model.dtype,
        model.attn_implementation,
        mixed_precision,
        recipe.train.trl.get("ld_alpha"),
    ]
    columns = reference_columns(recipe)
    if columns != REFERENCE_COLUMNS:
        parts.append(columns)
    return digest(*parts)


def _read_store(path: Path, columns: Sequence[str]) -> dict[int, tuple[float, ...]]:
    values: dict[int, tuple[float, ...]] = {}
    if path.exists():
        for _, row in iter_jsonl(path):
            values[int(row["id"])] = tuple(float(row[column]) for column in columns)
    return values


def compute_reference_logps(
    dataset: Any,
    folder: str | os.PathLike[str],
    batch_size: int,
    *,
    accelerator: Any,
    batch_logps: BatchLogps,
    columns: Sequence[str] = REFERENCE_COLUMNS,
) -> Any:
    """`dataset` with the reference log-probs of every row as two columns.

    Reads them from `folder` when a complete pass is cached there; otherwise
    computes the missing rows (all processes take part) and caches them.

    Args:
        dataset: the tokenized pairs.
        folder: the cache folder of this dataset and reference model.
        batch_size: pairs per forward pass.
        accelerator: the `accelerate.Accelerator` of the processes taking part.
        batch_logps: the reference log-probs of a list of rows (collated, run and
            read back by the caller, the trainer), one sequence per column.
        columns: the names of the values `batch_logps` gives, in its order.

    Returns:
        The dataset with one more column per name of `columns`.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    folder = Path(folder)
    store, done = folder / STORE_NAME, folder / DONE_NAME
    if not done.exists():
        if accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            repair_torn_tail(store)
        accelerator.wait_for_everyone()
        present = _read_store(store, columns)
        rank, world = accelerator.process_index, accelerator.num_processes
        shares = [range(len(dataset))[r::world] for r in range(world)]

        def batch_rows(r: int, index: int) -> list[int]:
            return list(shares[r][index * batch_size : (index + 1) * batch_size])

        # Every process runs the same batches (the same number of gathers), even where its
        # own share of a batch is empty or already stored.
        pending = [
            index
            for index in range(math.ceil(len(shares[0]) / batch_size))
            if any(row not in present for r in range(world) for row in batch_rows(r, index))
        ]
        to_compute = sum(1 for row in range(len(dataset)) if row not in present)
        writer = JsonlWriter(store) if accelerator.is_main_process else None
        try:
            progress = tqdm(
                total=to_compute,
                desc="reference log-probs",
                unit="pair",
                leave=False,  # the run's one lasting bar is training's
                disable=True
                if not accelerator.is_main_process or not pending
                else console.hide_bar(),
            )
            for index in pending:
                rows = batch_rows(rank, index)
                # A process out of rows still runs a forward pass (its result unused): under
                # ZeRO-3 every forward gathers weights from all processes.
                computed = batch_logps([dataset[row] for row in rows or [0]])
                results = [
                    (row, [float(value) for value in row_values])
                    for row, *row_values in zip(rows, *computed, strict=False)
                ]
                gathered = gather_object(results)
                if writer is not None:
                    for row, row_values in gathered:
                        # A row stored before the kill is skipped (its id is present).
                        record = {"id": str(row), **dict(zip(columns, row_values, strict=True))}
                        progress.update(writer.write(record))
            progress.close()
        finally:
            if writer is not None:
                writer.close()
        if accelerator.is_main_process:
            write_text(done, json.dumps({"rows": len(dataset)}) + "\n")
        accelerator.wait_for_everyone()
    values = _read_store(store, columns)
    missing = len(dataset) - sum(1 for row in range(len(dataset)) if row in values)
    if missing:
        raise BpoError(
            f"{store}: reference log-probs of {missing} rows are missing; delete {folder} "
            "to compute them again"
        )
    for index, column in enumerate(columns):
        dataset = dataset.add_column(column, [values[row][index] for row in range(len(dataset))])
    return dataset
