"""The Evaluation section: every run's metrics side by side, ordered and coloured."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pytest

from bpo.eval.compare import compare_results
from bpo.report import write_report

from .conftest import edit_results
from .pages import find_table, parse_report


@pytest.fixture(scope="module")
def report(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = write_report(tiny_run, tmp_path_factory.mktemp("report") / "report.html")
    return out.read_text(encoding="utf-8")


def test_evaluation_table_agrees_with_bpo_eval_compare(report: str, tiny_run: Path) -> None:
    base, bpo = (
        tiny_run / "eval" / "base-chair" / "results.json",
        tiny_run / "eval" / "bpo-chair" / "results.json",
    )
    printed = {
        line.split()[0]: line.split()[1:]
        for line in compare_results([base, bpo]).splitlines()
        if line and line.split()[0] in ("chair_s", "chair_i", "recall")
    }
    rows = find_table(parse_report(report), "metric", "bpo-chair")
    shown = {row[0]: row[1:] for row in rows[1:]}
    assert rows[0][1:3] == ["base-chair", "bpo-chair"]  # the baseline comes first
    for name, values in printed.items():
        assert shown[name] == values
    # CHAIR examples: the hallucinated objects of the base run are marked.
    details = json.loads(base.read_text())["details"]["captions"]
    for caption in details:
        for surface, _category in caption["hallucinated"]:
            assert f"<mark>{html.escape(surface)}</mark>" in report


def _change_class(page: str, metric: str) -> str:
    """The CSS class of the change cell (the last column) of `metric`'s row."""
    parsed = parse_report(page)
    for rows, classes in zip(parsed.tables, parsed.classes, strict=True):
        for row, css in zip(rows, classes, strict=True):
            if row[0] == metric:
                return css[-1]
    raise AssertionError(f"no row {metric!r}")


def test_changes_are_coloured_by_whether_they_are_better(
    report: str, tiny_run: Path, tmp_path: Path
) -> None:
    # The fixture: BPO cut CHAIR and brought POPE's yes-ratio from 1.0 down to 0.5.
    assert _change_class(report, "chair_s") == "better num"
    assert _change_class(report, "random.accuracy") == "better num"
    assert _change_class(report, "random.yes_ratio") == "better num"  # lower, and better
    assert _change_class(report, "random.n") == "num"  # a count: neutral
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    edit_results(run, "base-pope", {"random.yes_ratio": 0.55})
    edit_results(run, "bpo-pope", {"random.yes_ratio": 0.9})
    page = write_report(run).read_text()
    assert _change_class(page, "random.yes_ratio") == "worse num"  # away from 0.5: not green
    edit_results(run, "base-pope", {"random.yes_ratio": 0.2})
    edit_results(run, "bpo-pope", {"random.yes_ratio": 0.45})
    assert _change_class(write_report(run).read_text(), "random.yes_ratio") == "better num"


def test_pope_shows_overall_only_when_it_pools_several_splits(
    report: str, tiny_run: Path, tmp_path: Path
) -> None:
    rows = find_table(parse_report(report), "metric", "bpo-pope")
    names = [row[0] for row in rows[1:]]
    assert "random.accuracy" in names and "random.yes_ratio" in names
    assert not any(name.startswith("overall.") for name in names)  # the same numbers again

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for folder in ("base-pope", "bpo-pope"):
        path = run / "eval" / folder / "results.json"
        results = json.loads(path.read_text())
        results["metrics"]["popular"] = results["metrics"]["random"]
        path.write_text(json.dumps(results))
    rows = find_table(parse_report(write_report(run).read_text()), "metric", "bpo-pope")
    names = [row[0] for row in rows[1:]]
    assert {"random.f1", "popular.f1", "overall.f1"} <= set(names)


def test_the_base_model_comes_first_whatever_its_date(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = run / "eval" / "base-chair" / "results.json"
    results = json.loads(path.read_text())
    results["created"] = "2999-01-01T00:00:00+00:00"  # evaluated after the BPO model
    path.write_text(json.dumps(results))
    rows = find_table(parse_report(write_report(run).read_text()), "metric", "bpo-chair")
    assert rows[0][1:] == ["base-chair", "bpo-chair", "bpo-chair − base-chair"]
