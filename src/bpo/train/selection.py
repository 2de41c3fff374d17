"""``train.select: hardest``: per sample, train on the pairs whose rejected response the
reference model finds most likely.

The bootstrapped negatives of one sample differ in how close they come to the gold
answer; the ones the reference model already rates highly (a high log-prob per token)
are the hardest to tell from the chosen response. After the reference pass, this keeps
per sample the ``train.select_k`` pairs with the highest reference log-prob per token
of the rejected response, and records the reference margins (per-token log-prob of the
chosen minus the rejected) of all pairs and of the kept ones.

A sample is the prompt's token ids (the question, its turns and the image placeholders)
with the image bytes: pairs built from one sample share both, whatever their ids say
(pairs loaded from a saved dataset carry ids of any shape). Per token, not summed, so a
long rejected response is not passed over for its length alone. The log-probs are the
reference cache's (`bpo.train.reference`), sums over the response tokens; the token
counts are the cached ``rejected_ids`` and ``chosen_ids``, after truncation, the same
tokens the sums run over. With ``train.trl.ld_alpha`` the sums are TRL's length-desensitized
ones, divided by the same counts.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpo.fsio import write_text
from bpo.train.data import REFERENCE_COLUMNS
from bpo.train.run_folder import MARGINS_NAME

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
IMAGE_COLUMNS = ("images", "image")


@dataclass
class Selection:
    """The pairs kept for training and the reference margins.

    Attributes:
        rows: the dataset rows kept, ascending.
        pair_ids: every row's pair id.
        total: the pairs before selection.
        margins: the per-token reference margin of every pair, by row.
        k: pairs kept per sample.
    """

    rows: list[int]
    pair_ids: list[str]
    total: int
    margins: list[float]
    k: int

    def summary(self) -> str:
        return f"kept {len(self.rows)} of {self.total} pairs (train.select hardest, k={self.k})"

    def counts(self) -> dict[str, Any]:
        return {
            "select": "hardest",
            "select_k": self.k,
            "pairs": self.total,
            "kept": len(self.rows),
        }

    def margins_record(self) -> dict[str, Any]:
        """What ``reference_margins.json`` holds: the counts, both distributions, the kept ids."""
        kept = [self.margins[row] for row in self.rows]
        return {
            **self.counts(),
            "margins": {"all": distribution(self.margins), "kept": distribution(kept)},
            "kept_ids": [self.pair_ids[row] for row in self.rows],
        }


def hardest_rows(
    samples: Sequence[str], pair_ids: Sequence[str], rejected_per_token: Sequence[float], k: int
) -> list[int]:
    """The rows kept: per sample, the `k` with the highest rejected log-prob per token.

    Ties go to the smaller pair id, so the choice never depends on the row order; a
    sample with `k` pairs or fewer keeps them all.

    Args:
        samples: each row's sample key.
        pair_ids: each row's pair id.
        rejected_per_token: each row's reference log-prob per token of the rejected response.
        k: pairs kept per sample (>= 1).

    Returns:
        The kept rows, ascending (the data order of training is the trainer's).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    by_sample: dict[str, list[int]] = defaultdict(list)
    for row, sample in enumerate(samples):
        by_sample[sample].append(row)
    kept: list[int] = []
    for rows in by_sample.values():
        rows.sort(key=lambda row: (-rejected_per_token[row], pair_ids[row], row))
        kept += rows[:k]
    return sorted(kept)


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """Count, mean and quantiles (linear interpolation between the sorted values)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "mean": None, "quantiles": {}}

    def quantile(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "count": len(ordered),
        "mean": sum(ordered) / len(ordered),
        "quantiles": {f"{q:g}": quantile(q) for q in QUANTILES},
    }


def _update(sha: Any, value: Any) -> None:
    """Hash an image cell as stored (bytes, else path; lists of them in order)."""
    if isinstance(value, dict):
        _update(sha, value.get("bytes") if value.get("bytes") is not None else value.get("path"))
    elif isinstance(value, list):
        sha.update(b"[%d" % len(value))
        for item in value:
            _update(sha, item)
    elif isinstance(value, bytes):
        sha.update(b"b%d:" % len(value) + value)
    else:
        sha.update(json.dumps(value).encode("utf-8"))


def sample_keys(dataset: Any, batch_size: int = 256) -> list[str]:
    """Each row's sample: a hash of its prompt ids and its image bytes (not decoded).

    Read `batch_size` rows at a time, so the images never sit in memory all at once.
    """
    names = ["prompt_ids", *(name for name in IMAGE_COLUMNS if name in dataset.column_names)]
    keys = []
    for batch in dataset.select_columns(names).with_format("arrow").iter(batch_size):
        columns = [batch.column(name).to_pylist() for name in names]
        for cells in zip(*columns, strict=True):
            sha = hashlib.sha256()
            for name, cell in zip(names, cells, strict=True):
                sha.update(name.encode("utf-8"))
                _update(sha, cell)
            keys.append(sha.hexdigest())
    return keys


def _lengths(dataset: Any, name: str) -> list[int]:
    """The lengths of a list column, from Arrow (the lists are not turned into Python)."""
    import pyarrow.compute as pc

    table = dataset.select_columns([name]).with_format("arrow")[:]
    return [int(n) for n in pc.list_value_length(table.column(name)).to_pylist()]


def select_hardest(dataset: Any, k: int) -> Selection:
    """`hardest_rows` of a dataset holding the reference columns (`bpo.train.reference`)."""
    chosen_sums, rejected_sums = (dataset[name] for name in REFERENCE_COLUMNS)
    chosen_lengths, rejected_lengths = (
        _lengths(dataset, name) for name in ("chosen_ids", "rejected_ids")
    )
    # A response cut to nothing has no token: its per-token log-prob is 0 (no evidence).
    chosen = [s / n if n else 0.0 for s, n in zip(chosen_sums, chosen_lengths, strict=True)]
    rejected = [s / n if n else 0.0 for s, n in zip(rejected_sums, rejected_lengths, strict=True)]
    pair_ids = (
        [str(value) for value in dataset["id"]]
        if "id" in dataset.column_names
        else [f"{row:012d}" for row in range(len(dataset))]
    )
    rows = hardest_rows(sample_keys(dataset), pair_ids, rejected, k)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return Selection(rows=rows, pair_ids=pair_ids, total=len(dataset), margins=margins, k=k)


def write_margins(selection: Selection, run_dir: Path) -> Path:
    path = run_dir / MARGINS_NAME
    write_text(path, json.dumps(selection.margins_record(), indent=2) + "\n")
    return path
