"""`write_report`: read a run directory's stages, streaming, and write one HTML file.

Memory is bounded whatever the size of the run: pairs and negatives are read
one record at a time; what is kept is a bottom-k sample of pairs per strategy
(`bpo.report.gallery.BottomKSampler`), counters, and the ids of the sampled
pairs. The page is bounded too: thumbnails are shrunk, the gallery's HTML
stops at `ReportOptions.max_gallery_bytes`, long texts are cut. The file is
written next to its destination and renamed into place, so a reader never
sees half a report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bpo.data.formats import read_records, read_samples
from bpo.data.jsonl import IdIndex
from bpo.data.records import Negative, Pair, Sample
from bpo.errors import ConfigError, ErrorPolicy
from bpo.fsio import write_text
from bpo.report.dataset import DataCounts, read_stats, render_data
from bpo.report.evaluation import load_runs, render_evaluation
from bpo.report.gallery import BottomKSampler, GalleryItem, attach_params, render_gallery
from bpo.report.headline import render_headline
from bpo.report.html import MISSING, Section, escape, note, page, table, truncate
from bpo.report.layout import RunFiles, find_run_files
from bpo.report.rounds import read_summary, render_rounds
from bpo.report.training import render_training

MAX_CONFIG_CHARS = 20_000


@dataclass
class ReportOptions:
    """How much of the run the page shows.

    Attributes:
        pairs_per_strategy: pairs sampled per strategy for the gallery.
        page_size: gallery cards per page.
        seed: the gallery sample's seed (the same seed shows the same pairs).
        max_gallery_bytes: the most HTML the gallery's cards may take; with the
            defaults a 3-strategy gallery takes 2-5 MB, so the page stays well
            under 20 MB.
        image_root: the folder image paths are relative to (default: see
            `bpo.report.layout.find_run_files`).
    """

    pairs_per_strategy: int = 48
    page_size: int = 12
    seed: int = 0
    max_gallery_bytes: int = 15_000_000
    image_root: str | os.PathLike[str] | None = None

    def check(self) -> None:
        if self.pairs_per_strategy < 0:
            raise ConfigError(f"pairs per strategy must be >= 0, got {self.pairs_per_strategy}")
        if self.page_size < 1:
            raise ConfigError(f"page size must be >= 1, got {self.page_size}")
        if self.max_gallery_bytes < 0:
            raise ConfigError(
                f"the gallery's size limit must be >= 0, got {self.max_gallery_bytes}"
            )


def write_report(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    options: ReportOptions | None = None,
    policy: ErrorPolicy | None = None,
) -> Path:
    """Write the HTML report of a run directory (any subset of its stages).

    Args:
        run_dir: the run directory (see `bpo.report.layout`).
        out: the HTML file (default: ``RUN_DIR/report.html``).
        options: what to show (default `ReportOptions()`).
        policy: bad records in the run's files: raise, or skip and count them
            (the page lists the counts). Images that cannot be shown never stop
            the report: the card says why instead.

    Returns:
        The path of the report.

    Raises:
        ConfigError: `run_dir` is not a directory or holds no stage's output (then
            nothing is written), or bad options.
        RecordError: a bad record, under ``on_error="raise"``.
    """
    options = options or ReportOptions()
    options.check()
    policy = policy or ErrorPolicy()
    files = find_run_files(run_dir, image_root=options.image_root)
    target = Path(out) if out is not None else files.root / "report.html"
    return write_text(target, build_page(files, options, policy))


def build_page(files: RunFiles, options: ReportOptions, policy: ErrorPolicy) -> str:
    """The report's HTML for the files found (see `write_report`)."""
    counts = DataCounts()
    sampler = BottomKSampler(options.pairs_per_strategy, seed=options.seed)
    if files.pairs is not None:
        for pair in read_records(files.pairs, Pair, policy=policy):
            counts.add_pair(pair)
            sampler.add(pair.strategy, pair.id, pair)
    sample: dict[str, list[GalleryItem]] = {
        name: [GalleryItem.from_pair(pair) for pair in pairs]
        for name, pairs in sampler.sample().items()
    }
    if files.pairs is None and files.negatives:
        # No pairs yet: show the negatives, each beside its sample's gold answer.
        negatives = BottomKSampler(options.pairs_per_strategy, seed=options.seed)
        for negative in _negatives(files, policy):
            counts.negatives[negative.strategy] += 1
            negatives.add(negative.strategy, negative.id, negative)
        sample = _join_samples(files, negatives.sample(), counts, policy)
    elif files.negatives:
        items = [item for items in sample.values() for item in items]
        attach_params(items, _counted_negatives(files, counts, policy))
    if files.samples is not None and counts.samples is None:
        counts.samples = sum(1 for _ in read_samples(files.samples, policy=policy))

    totals = dict(counts.pairs) if files.pairs is not None else dict(counts.negatives)
    evaluations, unreadable = load_runs(files.results, files.root)
    sections = [
        Section("pairs", "Pairs gallery", _gallery(sample, totals, files, options)),
        Section("data", "Data", render_data(counts, read_stats(files.pair_stats))),
        Section("training", "Training", render_training(files.metrics, files.root, policy)),
        Section(
            "evaluation",
            "Evaluation",
            render_evaluation(evaluations, unreadable, files.image_roots, policy),
        ),
    ]
    # What the run changed comes first, then the run's files; the overview is made
    # last so that its count of skipped records covers every section's reading.
    sections[:0] = [
        Section("headline", "Before and after", render_headline(evaluations)),
        Section("overview", "Run", _overview(files, counts, policy)),
    ]
    rounds = read_summary(files.root)
    if rounds is not None:  # iterative BPO (`bpo run` with rounds.count > 1)
        sections.insert(1, Section("rounds", "Rounds", render_rounds(rounds)))
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return page(f"bpo report: {files.root.resolve().name}", f"{files.root} · {created}", sections)


def _negatives(files: RunFiles, policy: ErrorPolicy) -> Iterator[Negative]:
    for path in files.negatives:
        yield from read_records(path, Negative, policy=policy)


def _counted_negatives(
    files: RunFiles, counts: DataCounts, policy: ErrorPolicy
) -> Iterator[Negative]:
    for negative in _negatives(files, policy):
        counts.negatives[negative.strategy] += 1
        yield negative


def _join_samples(
    files: RunFiles,
    negatives: dict[str, list[Negative]],
    counts: DataCounts,
    policy: ErrorPolicy,
) -> dict[str, list[GalleryItem]]:
    """Gallery items of sampled negatives: chosen = their sample's gold response."""
    if files.samples is None:
        return {}
    wanted = IdIndex(n.sample_id for group in negatives.values() for n in group)
    samples: dict[str, Sample] = {}
    total = 0
    for record in read_samples(files.samples, policy=policy):
        total += 1
        if record.id in wanted:
            samples[record.id] = record
    counts.samples = total
    return {
        strategy: [
            GalleryItem.from_negative(n, samples[n.sample_id])
            for n in group
            if n.sample_id in samples
        ]
        for strategy, group in negatives.items()
    }


def _gallery(
    sample: dict[str, list[GalleryItem]],
    totals: dict[str, int],
    files: RunFiles,
    options: ReportOptions,
) -> str:
    if not sample:
        return note("No pairs found (looked for pairs.jsonl, or negatives/*.jsonl with samples).")
    html, shown = render_gallery(
        sample,
        totals,
        files.image_roots,
        page_size=options.page_size,
        max_bytes=options.max_gallery_bytes,
    )
    source = "pairs.jsonl" if files.pairs is not None else "negatives joined with their samples"
    intro = note(
        f"{shown} pairs from {source}: a seeded sample of up to {options.pairs_per_strategy} "
        f"per strategy (seed {options.seed})."
    )
    return intro + html


def _overview(files: RunFiles, counts: DataCounts, policy: ErrorPolicy) -> str:
    def shown(paths: list[Path] | Path | None) -> str:
        if paths is None or paths == []:
            return MISSING
        paths = paths if isinstance(paths, list) else [paths]
        # Relative to the run folder where inside it (a recipe's samples may be elsewhere).
        return ", ".join(
            str(path.relative_to(files.root) if path.is_relative_to(files.root) else path)
            for path in paths
        )

    rows = [
        ["recipe", shown(files.config_path)],
        ["samples", shown(files.samples)],
        ["negatives", shown(files.negatives)],
        ["pairs", shown(files.pairs)],
        ["pairs stats", shown(files.pair_stats)],
        ["training metrics", shown(files.metrics)],
        ["evaluation results", shown(files.results)],
        ["image roots", ", ".join(str(root) for root in files.image_roots) or MISSING],
    ]
    parts = [table(["stage", "files found"], rows)]
    if policy.total:
        parts.append(f"<p>Bad records skipped while reading: {escape(policy.summary())}.</p>")
    if files.config_path is not None:
        text = truncate(
            files.config_path.read_text(encoding="utf-8", errors="replace"), MAX_CONFIG_CHARS
        )
        parts.append(
            f"<details><summary>recipe (config.yaml)</summary><pre>{escape(text)}</pre></details>"
        )
    return "".join(parts)
