"""The page's first table: the base model against the BPO model, on each benchmark's main numbers.

`bpo run` evaluates both models on each benchmark into ``RUN/eval/base-<bench>/`` and
``RUN/eval/bpo-<bench>/`` (a folder named plain ``base`` or ``bpo`` counts too), as
`bpo.toy.demo.before_after` reads them for the console. The metrics shown per
benchmark are those papers report: CHAIR_s, CHAIR_i and recall (Rohrbach et al.
2018); POPE's accuracy, F1 and yes-ratio (Li et al. 2023), of the lone split, or
averaged over the splits as papers do; MMHal-Bench's average score and
hallucination rate (Sun et al. 2023); AMBER's score, CHAIR and Hal and
discriminative F1 (Wang et al. 2023); Object HalBench's CHAIR_s, CHAIR_i and
recall (Yu et al. 2024); HallusionBench's aAcc, fAcc and qAcc (Guan et al. 2024);
and the toy world's own measures. Every other metric is in the Evaluation section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bpo.report.evaluation import EvalRun, is_baseline, shown, signed
from bpo.report.html import MISSING, note, table
from bpo.report.metric_direction import judge, rule

# Benchmark -> (metric, its name on the page), in page order. POPE's metrics are
# looked up under the split they come from (see `_pope_split`).
HEADLINE: dict[str, tuple[tuple[str, str], ...]] = {
    # The toy world's headline first: the bias BPO is meant to remove (bpo.toy.demo).
    "toy": (
        ("cf_absent_partner_rate", "toy: CF absent-partner rate"),
        ("cf_recall", "toy: CF recall"),
        ("normal_dependent_recall", "toy: normal dependent recall"),
    ),
    "chair": (("chair_s", "CHAIR_s"), ("chair_i", "CHAIR_i"), ("recall", "CHAIR recall")),
    "pope": (("accuracy", "POPE accuracy"), ("f1", "POPE F1"), ("yes_ratio", "POPE yes-ratio")),
    "mmhal": (
        ("average_score", "MMHal average score"),
        ("hallucination_rate", "MMHal hallucination rate"),
    ),
    "amber": (
        ("amber_score", "AMBER score"),
        ("generative.chair", "AMBER CHAIR"),
        ("generative.hal", "AMBER Hal"),
        ("discriminative.f1", "AMBER discriminative F1"),
    ),
    "objhal": (
        ("chair_s", "Object HalBench CHAIR_s"),
        ("chair_i", "Object HalBench CHAIR_i"),
        ("recall", "Object HalBench recall"),
    ),
    "hallusion": (
        ("overall.aAcc", "HallusionBench aAcc"),
        ("overall.fAcc", "HallusionBench fAcc"),
        ("overall.qAcc", "HallusionBench qAcc"),
    ),
}
AFTER_NAMES = ("bpo", "after")


def render_headline(by_bench: Mapping[str, Sequence[EvalRun]]) -> str:
    """The headline's HTML: one row per main metric, base, BPO and the change, coloured.

    Args:
        by_bench: the run's evaluations by benchmark (`bpo.report.evaluation.load_runs`).
    """
    rows, classes, missing = [], [], []
    for bench, metrics in HEADLINE.items():
        runs = by_bench.get(bench, ())
        before = next((run for run in runs if is_baseline(run)), None)
        after = next((run for run in runs if _stem(run) in AFTER_NAMES), None)
        if before is None and after is None:
            continue  # not evaluated, or under other names: the Evaluation section has it
        for who, run in (("base", before), ("bpo", after)):
            if run is None:
                missing.append(f"eval/{who}-{bench}/results.json")
        split, where = _pope_split(before or after) if bench == "pope" else ("", "")
        for metric, title in metrics:
            dotted = f"{split}.{metric}" if split else metric
            values = [run.metrics.get(dotted) if run else None for run in (before, after)]
            change = (
                values[1] - values[0] if values[0] is not None and values[1] is not None else None
            )
            title += f" ({where})" if where else ""
            rows.append([title, *map(shown, values), signed(change), rule(dotted) or MISSING])
            classes.append(["", "", "", judge(dotted, *values), "note"])
    if not rows:
        return note(
            "No before/after evaluation yet (looked for eval/base-<bench>/results.json and "
            "eval/bpo-<bench>/results.json)."
        )
    parts = [table(["metric", "base", "bpo", "change", "better when"], rows, classes=classes)]
    if missing:
        parts.append(note(f"Not evaluated yet: {', '.join(missing)}."))
    parts.append(
        '<p class="note">Every metric of every run: <a href="#evaluation">Evaluation</a>.</p>'
    )
    return "".join(parts)


def _stem(run: EvalRun) -> str:
    """The run's folder name without its benchmark suffix (``bpo-pope`` -> ``bpo``)."""
    return run.path.parent.name.lower().removesuffix(f"-{run.bench.lower()}")


def _pope_split(run: EvalRun | None) -> tuple[str, str]:
    """Where POPE's headline numbers are, and how to say it: the mean over several
    splits (as papers report one POPE number), else the lone split."""
    metrics: dict[str, Any] = run.results["metrics"] if run else {}
    splits = [k for k, v in metrics.items() if isinstance(v, dict) and k not in ("overall", "mean")]
    if "mean" in metrics:
        return "mean", f"mean of {len(splits)} splits"
    if len(splits) == 1:
        return splits[0], splits[0]
    return "overall", "overall"
