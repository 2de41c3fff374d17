"""The Evaluation section: every benchmark's runs side by side, and CHAIR's examples.

Every ``results.json`` of the run (written by `bpo eval`) is grouped by its
benchmark. Within a benchmark, runs named like a baseline (``base``,
``before`` ...) come first, then by creation time: the first run is "before"
and each difference is ``run - first``, as `bpo eval compare` prints them
(its `flatten`, `load_results` and `run_label` are used here, so the two show
the same numbers). A difference is coloured when the metric has a known good
direction (`bpo.report.metric_direction`: CHAIR lower, F1 higher, POPE's
yes-ratio closer to 0.5).

For CHAIR, captions are shown with their hallucinated objects marked, from the
per-caption details of ``results.json`` and the answers of ``predictions.jsonl``:
those the last run fixed most, then those it made worse.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpo.data.jsonl import iter_jsonl
from bpo.errors import BpoError, ConfigError, ErrorPolicy
from bpo.eval.compare import flatten, format_value, load_results, run_label, setting_differences
from bpo.report import plots
from bpo.report.html import MISSING, escape, figure, note, table, truncate
from bpo.report.metric_direction import judge
from bpo.report.thumbnails import encode, load_from_roots

BASELINE_NAMES = ("base", "baseline", "before", "reference", "ref", "sft", "original")
# The metrics of a benchmark's bar chart (fnmatch patterns on dotted names); other
# benchmarks plot their metrics in [0, 1].
BAR_CHART_METRICS = {
    "pope": ("*.accuracy", "*.f1"),
    "chair": ("chair_s", "chair_i", "recall"),
    "mmhal": ("average_score", "hallucination_rate"),
    "amber": ("amber_score", "generative.chair", "generative.cover", "generative.hal",
              "generative.cog", "*.f1"),
    "objhal": ("chair_s", "chair_i", "recall"),
    "hallusion": ("overall.*Acc",),
}  # fmt: skip
MAX_BARS = 12
CHAIR_FIXED_EXAMPLES = 4
CHAIR_WORSE_EXAMPLES = 2
MAX_ANSWER_CHARS = 2000


@dataclass
class EvalRun:
    """One results.json: its label, its results and where it lies."""

    label: str
    path: Path
    results: dict[str, Any]

    @property
    def bench(self) -> str:
        return str(self.results.get("bench", "results"))

    @property
    def metrics(self) -> dict[str, float]:
        """The dotted metrics, without POPE's ``overall`` when it repeats a lone split."""
        metrics = self.results["metrics"]
        if self.bench == "pope":
            splits = [k for k, v in metrics.items() if isinstance(v, dict) and k != "overall"]
            # `score_pope_splits` pools every split into "overall": with one split
            # (and so no "mean") it is the same numbers under a second name.
            if len(splits) == 1 and splits[0] != "mean":
                metrics = {k: v for k, v in metrics.items() if k != "overall"}
        return flatten(metrics)


def load_runs(paths: Sequence[Path], root: Path) -> tuple[dict[str, list[EvalRun]], list[str]]:
    """Benchmark -> its runs in before/after order, and the files that could not be read."""
    runs, unreadable = [], []
    for path in paths:
        try:
            runs.append(EvalRun(run_label(path), path, load_results(path)))
        except ConfigError as error:
            unreadable.append(str(error))
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = str(run.path.parent.relative_to(root))
    by_bench: dict[str, list[EvalRun]] = {}
    for run in sorted(runs, key=_order):
        by_bench.setdefault(run.bench, []).append(run)
    return by_bench, unreadable


def _order(run: EvalRun) -> tuple[bool, str, str]:
    return not is_baseline(run), str(run.results.get("created", "")), run.label


def is_baseline(run: EvalRun) -> bool:
    """Whether the run's folder names a baseline: ``base``, or ``base-pope`` as `bpo run` names it."""
    name = run.path.parent.name.lower().removesuffix(f"-{run.bench.lower()}")
    return name in BASELINE_NAMES


def render_evaluation(
    by_bench: Mapping[str, Sequence[EvalRun]],
    unreadable: Sequence[str],
    image_roots: Sequence[Path | None],
    policy: ErrorPolicy,
) -> str:
    """The Evaluation section's HTML for the runs `load_runs` read."""
    if not by_bench and not unreadable:
        return note("No evaluation results found (looked for eval/*/results.json).")
    parts = [render_bench(bench, runs, image_roots, policy) for bench, runs in by_bench.items()]
    parts += [note(f"not read: {reason}") for reason in unreadable]
    return "".join(parts)


def render_bench(
    bench: str, runs: Sequence[EvalRun], image_roots: Sequence[Path | None], policy: ErrorPolicy
) -> str:
    """One benchmark: the table of metrics with differences, the bar chart, CHAIR examples."""
    labels = [run.label for run in runs]
    flats = [run.metrics for run in runs]
    names: dict[str, None] = {}
    for flat in flats:
        names.update(dict.fromkeys(flat))
    headers = ["metric", *labels, *(f"{label} − {labels[0]}" for label in labels[1:])]
    rows, classes = [], []
    for name in names:
        values = [flat.get(name) for flat in flats]
        deltas = [_delta(value, values[0]) for value in values[1:]]
        rows.append([name, *(shown(v) for v in values), *(signed(d) for d in deltas)])
        classes.append(
            ["", *([""] * len(values)), *(judge(name, values[0], v) for v in values[1:])]
        )
    parts = [
        f"<h3>{escape(bench)}</h3>",
        table(headers, rows, classes=classes, caption=_answered(runs)),
    ]
    settings = setting_differences([run.results for run in runs], labels)
    parts += [note(text) for text in settings]
    headline = _headline(bench, names, flats)
    if headline:
        bars = {
            run.label: {n: flat.get(n, math.nan) for n in headline}
            for run, flat in zip(runs, flats, strict=True)
        }
        parts.append(figure(plots.metrics_bar_plot(bench, headline, bars), f"{bench} metrics"))
    if bench == "chair":
        parts.append(render_chair_examples(runs, image_roots, policy))
    return "".join(parts)


def _answered(runs: Sequence[EvalRun]) -> str | None:
    """How many items each run answered, for the runs whose results say (None if none does)."""
    said = []
    for run in runs:
        counts = run.results.get("counts")
        answered = counts.get("answered") if isinstance(counts, dict) else None
        if isinstance(answered, int):
            said.append(f"{run.label}: {answered} answered")
    return ", ".join(said) or None


def _delta(value: float | None, base: float | None) -> float | None:
    return value - base if value is not None and base is not None else None


def shown(value: float | None) -> str:
    """A metric's value as `bpo eval compare` prints it; MISSING when the run lacks it.

    NaN (an undefined rate) stays "nan", as compare prints it: it is not missing.
    """
    return MISSING if value is None else format_value(value)


def signed(value: float | None) -> str:
    """A difference with its sign, MISSING when either side is absent or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:+d}" if isinstance(value, int) else f"{value:+.4f}"


def _headline(
    bench: str, names: Mapping[str, None], flats: Sequence[Mapping[str, float]]
) -> list[str]:
    def finite(name: str) -> bool:
        return any(math.isfinite(flat.get(name, math.nan)) for flat in flats)

    patterns = BAR_CHART_METRICS.get(bench)
    if patterns is not None:
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    else:
        # Rates in [0, 1] (NaN, an undefined rate, does not rule a metric out).
        chosen = [
            n
            for n in names
            if not any(flat.get(n, 0.0) < 0 or flat.get(n, 0.0) > 1 for flat in flats)
        ]
    return [n for n in chosen if finite(n)][:MAX_BARS]


# --------------------------------------------------------------------------- CHAIR examples


def render_chair_examples(
    runs: Sequence[EvalRun], image_roots: Sequence[Path | None], policy: ErrorPolicy
) -> str:
    """Captions with their hallucinated objects marked, in every run, for a few images.

    With several runs: those whose hallucinations the last run cut most, then those
    it added most; with one run, those with the most hallucinations.
    """
    captions = [_captions(run) for run in runs]
    common = set(captions[0]).intersection(*captions[1:])
    if not common:
        return note("CHAIR: no per-caption details in common to show examples.")

    def count(index: int, item_id: str) -> int:
        return len(captions[index][item_id].get("hallucinated") or [])

    if len(runs) == 1:
        ranked = sorted(common, key=lambda i: (-count(0, i), i))
        chosen = [(i, "most hallucinations") for i in ranked[:CHAIR_FIXED_EXAMPLES] if count(0, i)]
    else:
        change = {i: count(len(runs) - 1, i) - count(0, i) for i in common}
        fixed = sorted((i for i in common if change[i] < 0), key=lambda i: (change[i], i))
        worse = sorted((i for i in common if change[i] > 0), key=lambda i: (-change[i], i))
        chosen = [(i, "fewer hallucinations") for i in fixed[:CHAIR_FIXED_EXAMPLES]]
        chosen += [(i, "more hallucinations") for i in worse[:CHAIR_WORSE_EXAMPLES]]
    if not chosen:
        return note("CHAIR: no caption changed its hallucinations between runs.")
    wanted = {item_id for item_id, _ in chosen}
    answers = [_answers(run.path.parent / "predictions.jsonl", wanted, policy) for run in runs]
    cards = []
    for item_id, why in chosen:
        first = captions[0][item_id]
        image = _chair_image(answers, item_id, image_roots)
        columns = []
        for run, run_captions, run_answers in zip(runs, captions, answers, strict=True):
            detail = run_captions[item_id]
            wrong = [entry for entry in detail.get("hallucinated") or [] if isinstance(entry, list)]
            text = run_answers.get(item_id, {}).get("answer")
            body = (
                mark_words(truncate(text, MAX_ANSWER_CHARS), [str(e[0]) for e in wrong if e])
                if isinstance(text, str)
                else '<span class="note">(answer not in predictions.jsonl)</span>'
            )
            objects = ", ".join(sorted({str(e[1]) for e in wrong if len(e) > 1})) or "none"
            columns.append(
                f"<div><h4>{escape(run.label)}: hallucinated {escape(objects)}</h4>"
                f"<p>{body}</p></div>"
            )
        header = [item_id, why]
        if isinstance(first.get("objects"), list):  # left out when the results do not say
            header.append(f"objects present: {', '.join(map(str, first['objects'])) or 'none'}")
        cards.append(
            f'<article class="pair chair-example"><header>{escape(" · ".join(header))}</header>'
            f"{image}"
            f'<div class="responses">{"".join(columns)}</div></article>'
        )
    return "<h3>CHAIR: examples</h3>" + "".join(cards)


def _captions(run: EvalRun) -> dict[str, dict[str, Any]]:
    details = run.results.get("details")
    entries = details.get("captions") if isinstance(details, dict) else None
    if not isinstance(entries, list):
        return {}
    return {str(e["id"]): e for e in entries if isinstance(e, dict) and "id" in e}


def _answers(path: Path, wanted: set[str], policy: ErrorPolicy) -> dict[str, dict[str, Any]]:
    """The predictions lines of the `wanted` ids (streaming; empty if the file is absent)."""
    if not path.is_file():
        return {}
    found = {}
    for _, value in iter_jsonl(path, policy=policy):
        if isinstance(value, dict) and str(value.get("id")) in wanted:
            found[str(value["id"])] = value
    return found


def _chair_image(
    answers: Sequence[Mapping[str, Mapping[str, Any]]], item_id: str, roots: Sequence[Path | None]
) -> str:
    """The caption's image as a thumbnail, when a predictions line names it and a root has it."""
    for run_answers in answers:
        image = run_answers.get(item_id, {}).get("image")
        if isinstance(image, str) and image:
            try:
                thumbnail = encode(load_from_roots(image, roots, record_id=item_id))
            except BpoError:
                return ""  # the eval's images may live elsewhere: the text says enough
            css = ' class="small"' if thumbnail.small else ""
            return f'<div class="images"><img{css} src="{thumbnail.uri}" alt="image"></div>'
    return ""


def mark_words(text: str, words: Sequence[str]) -> str:
    """`text` escaped, with each whole-word occurrence of `words` in ``<mark>`` (any case)."""
    unique = sorted({w for w in words if w.strip()}, key=len, reverse=True)
    if not unique:
        return escape(text)
    pattern = re.compile(
        r"(?<!\w)(" + "|".join(re.escape(w) for w in unique) + r")(?!\w)", re.IGNORECASE
    )
    parts, position = [], 0
    for match in pattern.finditer(text):
        parts.append(escape(text[position : match.start()]))
        parts.append(f"<mark>{escape(match.group(0))}</mark>")
        position = match.end()
    parts.append(escape(text[position:]))
    return "".join(parts)
