"""The page's first table: base against BPO on each benchmark's main metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bpo.report import write_report

from .pages import find_classes, find_table, parse_report

HEADERS = ["metric", "base", "bpo", "change", "better when"]


def _headline(page: str) -> dict[str, tuple[list[str], list[str]]]:
    """Metric title -> (its cells, their CSS classes) in the headline table."""
    parsed = parse_report(page)
    rows, classes = (
        find_table(parsed, "metric", "better when"),
        find_classes(parsed, "metric", "better when"),
    )
    assert rows[0] == HEADERS
    return {row[0]: (row, css) for row, css in zip(rows[1:], classes[1:], strict=True)}


def _metrics(run: Path, folder: str) -> dict:
    return json.loads((run / "eval" / folder / "results.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def page(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_report(tiny_run, tmp_path_factory.mktemp("h") / "r.html").read_text()


def test_headline_is_the_first_section_and_holds_each_benchmarks_main_metrics(
    page: str, tiny_run: Path
) -> None:
    assert page.index('id="headline"') < page.index('id="overview"') < page.index('id="pairs"')
    shown = _headline(page)
    assert list(shown) == [
        "CHAIR_s", "CHAIR_i", "CHAIR recall",
        "POPE accuracy (random)", "POPE F1 (random)", "POPE yes-ratio (random)",
    ]  # fmt: skip
    base, bpo = _metrics(tiny_run, "base-chair"), _metrics(tiny_run, "bpo-chair")
    row, css = shown["CHAIR_s"]
    assert [float(row[1]), float(row[2])] == pytest.approx(
        [base["chair_s"], bpo["chair_s"]], abs=1e-4
    )
    assert float(row[3].replace("−", "-")) == pytest.approx(
        bpo["chair_s"] - base["chair_s"], abs=1e-4
    )
    assert bpo["chair_s"] < base["chair_s"] and "better" in css[3].split()
    assert row[4] == "lower"
    base, bpo = _metrics(tiny_run, "base-pope"), _metrics(tiny_run, "bpo-pope")
    row, css = shown["POPE yes-ratio (random)"]
    assert (float(row[1]), float(row[2])) == (
        base["random"]["yes_ratio"],
        bpo["random"]["yes_ratio"],
    )
    assert "better" in css[3].split() and row[4] == "closer to 0.5"


def test_a_model_not_evaluated_yet_is_a_dash_and_said(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("bpo-pope"))
    page = write_report(run).read_text()
    row, css = _headline(page)["POPE F1 (random)"]
    assert row[2:4] == ["—", "—"] and "better" not in css[3] and "worse" not in css[3]
    assert "Not evaluated yet: eval/bpo-pope/results.json." in parse_report(page).text


def test_pope_with_several_splits_shows_their_mean(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for folder, popular in (("base-pope", 0.6), ("bpo-pope", 0.8)):
        path = run / "eval" / folder / "results.json"
        results = json.loads(path.read_text())
        random_accuracy = results["metrics"]["random"]["accuracy"]
        results["metrics"]["popular"] = {**results["metrics"]["random"], "accuracy": popular}
        results["metrics"]["mean"] = {"accuracy": (random_accuracy + popular) / 2}
        path.write_text(json.dumps(results))
    row, _ = _headline(write_report(run).read_text())["POPE accuracy (mean of 2 splits)"]
    expected = [(m["random"]["accuracy"] + m["popular"]["accuracy"]) / 2
                for m in (_metrics(run, "base-pope"), _metrics(run, "bpo-pope"))]  # fmt: skip
    assert [float(row[1]), float(row[2])] == pytest.approx(expected, abs=1e-4)


def test_mmhal_and_plain_base_and_bpo_folders(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for name, score, rate in (("base", 2.0, 0.55), ("bpo", 2.6, 0.40)):
        folder = run / "eval" / name
        folder.mkdir(parents=True)
        results = {
            "bench": "mmhal",
            "metrics": {"average_score": score, "hallucination_rate": rate, "n": 96,
                        "by_type": {"counting": {"average_score": score}}},
        }  # fmt: skip
        (folder / "results.json").write_text(json.dumps(results))
    shown = _headline(write_report(run).read_text())
    assert list(shown) == ["MMHal average score", "MMHal hallucination rate"]
    row, css = shown["MMHal hallucination rate"]
    assert row[1:4] == ["0.5500", "0.4000", "-0.1500"] and "better" in css[3].split()
    assert "better" in shown["MMHal average score"][1][3].split()


def test_without_evaluations_the_headline_says_what_it_looked_for(
    tiny_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    text = parse_report(write_report(run).read_text()).text
    headline = text.split("Before and after", 2)[2].split("Run")[0]
    assert "No before/after evaluation yet" in headline and "eval/bpo-<bench>" in headline
