"""Runs a bootstrap strategy over a samples file: batched, resumable, shardable.

Two files are written side by side, both append-only:

- ``OUT`` (negatives.jsonl): one `Negative` per line, stable ids.
- ``OUT.log.jsonl``: one line per finished sample (`status` ok, dropped or error).

A sample counts as done once its log line is written, after its negatives; so a
crash (even ``kill -9``) loses at most the batch in flight, and a re-run skips
done samples and never writes a negative id twice. Samples that failed (status
error) are retried on a re-run.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.bootstrap.base import BootstrapStrategy
from bpo.console import counts_text, hide_bar
from bpo.data.jsonl import JsonlWriter, iter_jsonl
from bpo.data.records import Sample
from bpo.engine import LOCAL, EngineOptions, run_batches
from bpo.engine.work import StrategySpec, StrategyWork
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.fsio import write_text
from bpo.provenance import Provenance, file_record

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the samples whose position in the file is index mod count."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index_text, count_text = text.split("/")
            shard = cls(int(index_text), int(count_text))
        except ValueError:
            raise ConfigError(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
        if shard.count < 1 or not 0 <= shard.index < shard.count:
            raise ConfigError(f"--shard {text}: need 0 <= i < n")
        return shard

    def __contains__(self, position: int) -> bool:
        return position % self.count == self.index


@dataclass
class BootstrapSummary:
    """What a run did; saved as ``OUT.summary.json``."""

    strategy: str
    samples_done: int = 0
    samples_resumed: int = 0
    negatives_written: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def describe(self, out: str | os.PathLike[str]) -> str:
        """One line for the console; counts that are zero are left out."""
        text = (
            f"{self.negatives_written} negatives for {self.samples_done} samples written to {out}"
        )
        notes = []
        if self.samples_resumed:
            notes.append(f"{self.samples_resumed} samples already done")
        if self.dropped:
            notes.append(f"dropped {counts_text(self.dropped)}")
        if self.errors:
            notes.append(f"skipped {counts_text(self.errors)}")
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "samples_done": self.samples_done,
            "samples_resumed": self.samples_resumed,
            "negatives_written": self.negatives_written,
            "dropped": dict(self.dropped),
            "errors": dict(self.errors),
        }


def log_path(out: str | os.PathLike[str]) -> Path:
    return Path(f"{out}.log.jsonl")


def negatives_provenance(
    out: str | os.PathLike[str], settings: Mapping[str, Any], *, overwrite: bool = False
) -> Provenance:
    """The settings record of a negatives file (`bpo.bootstrap.strategies.strategy_settings`).

    Its outputs are the negatives, their log, the summary and the skipped records:
    ``--overwrite`` replaces all four.
    """
    return Provenance(
        stage="bootstrap",
        record=file_record(out),
        settings=dict(settings),
        outputs=[
            Path(out),
            log_path(out),
            Path(f"{out}.summary.json"),
            Path(f"{out}.skipped.json"),
        ],
        overwrite=overwrite,
    )


def _done_samples(path: Path) -> set[str]:
    done: set[str] = set()
    if not path.exists():
        return done
    for _, entry in iter_jsonl(path):
        if isinstance(entry, dict) and entry.get("status") in ("ok", "dropped"):
            done.add(str(entry["sample_id"]))
    return done


def _batches(
    samples: Iterator[Sample],
    *,
    needs_image: bool,
    image_root: str | os.PathLike[str] | None,
    batch_size: int,
    policy: ErrorPolicy,
    log: JsonlWriter,
) -> Iterator[list[tuple[Sample, Image.Image | None]]]:
    from bpo.data.images import load_image

    batch: list[tuple[Sample, Image.Image | None]] = []
    for sample in samples:
        image = None
        if needs_image:
            if sample.image is None:
                error = RecordError("this strategy needs an image", record_id=sample.id)
                _log_error(log, sample.id, error, policy)
                continue
            try:
                image = load_image(sample.image, image_root, record_id=sample.id)
            except RecordError as error:
                _log_error(log, sample.id, error, policy)
                continue
        batch.append((sample, image))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _log_error(log: JsonlWriter, sample_id: str, error: RecordError, policy: ErrorPolicy) -> None:
    policy.handle(error)  # raises under --on-error raise
    log.write(
        {"id": f"{sample_id}#error", "sample_id": sample_id, "status": "error", **error.to_dict()}
    )


def run_bootstrap(
    samples_path: str | os.PathLike[str],
    strategy: BootstrapStrategy | StrategySpec,
    out: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    format: str = "auto",
    num_negatives: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    shard: Shard = Shard(),
    policy: ErrorPolicy | None = None,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    engine: EngineOptions = LOCAL,
) -> BootstrapSummary:
    """Bootstrap negatives for every sample of `samples_path` (in this shard) into `out`.

    Args:
        samples_path: a samples file in any format `bpo.data.formats` reads.
        strategy: the bootstrap strategy, or a `StrategySpec` built here (local engine,
            or a strategy without a model) or in each Ray replica (a model strategy).
        out: the negatives JSONL; an existing one is resumed.
        image_root: the folder image paths are relative to.
        format: the samples file's format ("auto" detects it).
        num_negatives: negatives asked for per sample.
        seed: the run's seed; each negative's own seed derives from it and the sample id.
        batch_size: samples per call to the strategy.
        shard: which share of the samples this process handles.
        policy: what to do with bad records (default: raise).
        progress: show a progress bar.
        settings: what shapes the negatives (`strategy_settings`), saved beside
            `out` and compared with an existing output's before anything else
            (default: the strategy's name, the number of negatives and the seed).
        overwrite: replace an existing output instead of resuming it.
        engine: where the batches run (`bpo.engine`); the output is the same.

    Returns:
        The run's summary, also saved as ``OUT.summary.json``.

    Raises:
        ConfigError: when `out` holds negatives made with other settings, or the
            samples file holds no sample.
    """
    if num_negatives < 1:
        raise ConfigError("num_negatives must be at least 1")
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    engine.check()
    policy = policy or ErrorPolicy()
    if settings is None:
        settings = {"strategy": strategy.name, "num_negatives": num_negatives, "seed": seed}
    provenance = negatives_provenance(out, settings, overwrite=overwrite)
    provenance.check()
    summary = BootstrapSummary(strategy=strategy.name)
    built_model = not isinstance(strategy, StrategySpec) and hasattr(strategy, "backend")
    if engine.engine == "ray" and built_model:
        raise ConfigError("--engine ray builds the model in each replica: pass a StrategySpec")
    work = StrategyWork(strategy, num_negatives=num_negatives, seed=seed)
    with closing(work):
        _generate(
            work, samples_path, out, summary, provenance, image_root=image_root, format=format,
            batch_size=batch_size, shard=shard, policy=policy, progress=progress,
            overwrite=overwrite, engine=engine,
        )  # fmt: skip
    summary.errors.update(policy.counts)
    write_text(f"{out}.summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
    policy.report(f"{out}.skipped.json")
    return summary


def _generate(
    work: StrategyWork,
    samples_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    summary: BootstrapSummary,
    provenance: Provenance,
    *,
    image_root: str | os.PathLike[str] | None,
    format: str,
    batch_size: int,
    shard: Shard,
    policy: ErrorPolicy,
    progress: bool,
    overwrite: bool,
    engine: EngineOptions,
) -> None:
    """`run_bootstrap`'s reading, generating and writing."""
    from tqdm.auto import tqdm

    from bpo.data.formats import read_samples

    # The strategy is built here, unless each Ray replica builds its own: a model
    # strategy, which learns nothing from the data (fit is cooccurrence's statistics).
    fit_here = engine.engine == "local" or not work.builds_model
    if fit_here:
        work.prepare()
    # One reading pass both fits the strategy (on every sample, not only this shard's)
    # and counts this shard's samples for the progress bar; what fit leaves unread is
    # drained. Reading problems are reported once, in the generation pass below.
    total = read = 0
    quiet = ErrorPolicy(on_error="skip")

    def counted() -> Iterator[Sample]:
        nonlocal total, read
        for position, sample in enumerate(read_samples(samples_path, format=format, policy=quiet)):
            total += position in shard
            read += 1
            yield sample

    samples = counted()
    if fit_here:
        assert work.strategy is not None
        work.strategy.fit(samples)
    deque(samples, maxlen=0)
    if not read and not quiet.total:  # bad records are reported by the pass below
        raise ConfigError(f"{samples_path} holds no samples")

    done = set() if overwrite else _done_samples(log_path(out))
    with (
        JsonlWriter(out, resume=not overwrite, before_first_write=provenance.commit) as writer,
        JsonlWriter(
            log_path(out), resume=not overwrite, before_first_write=provenance.commit
        ) as log,
    ):
        bar = tqdm(
            total=total,
            desc=f"bootstrap {summary.strategy}",
            unit="sample",
            disable=hide_bar(progress),
        )

        def pending() -> Iterator[Sample]:
            for position, sample in enumerate(
                read_samples(samples_path, format=format, policy=policy)
            ):
                if position not in shard:
                    continue
                # The bar counts samples read; it runs a few batches ahead at most.
                bar.update(1)
                if sample.id in done:
                    summary.samples_resumed += 1
                    continue
                yield sample

        batches = _batches(
            pending(),
            needs_image=work.needs_image,
            image_root=image_root,
            batch_size=batch_size,
            policy=policy,
            log=log,
        )
        # The driver keeps the samples; only the batch (with its images) goes to the work.
        keyed = (([sample for sample, _ in batch], batch) for batch in batches)
        for batch_samples, result in run_batches(work, keyed, engine):
            if result.error is not None:
                if policy.on_error == "raise":
                    raise result.error
                for sample in batch_samples:
                    failure = RecordError(
                        str(result.error), record_id=sample.id, kind="generation-failed"
                    )
                    _log_error(log, sample.id, failure, policy)
                continue
            summary.dropped.update(result.dropped)
            assert result.outputs is not None
            for sample, negatives in zip(batch_samples, result.outputs, strict=True):
                for negative in negatives:
                    if writer.write(negative):
                        summary.negatives_written += 1
                status = "ok" if negatives else "dropped"
                log.write({"id": sample.id, "sample_id": sample.id, "status": status})
                summary.samples_done += 1
        bar.close()
        writer.open()  # a finished run leaves its (maybe empty) output for the next stage
