"""The Training section: which curves are drawn, the table of values, the log-prob reading."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bpo.errors import ErrorPolicy
from bpo.report import write_report
from bpo.report.plots import training_plot
from bpo.report.training import read_curves, render_training, training_panels

from .conftest import write_jsonl
from .pages import find_table, parse_report


def _lines(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "train/metrics.jsonl").read_text().splitlines()]


def test_panels_hold_the_log_probs_grad_norm_and_learning_rate(tiny_run: Path) -> None:
    lines = _lines(tiny_run)
    panels = training_panels(
        {"train": read_curves(tiny_run / "train/metrics.jsonl", ErrorPolicy())}
    )
    assert list(panels) == [
        "loss", "reward margin", "reward accuracy", "log-probs: chosen and rejected",
        "grad norm", "learning rate",
    ]  # fmt: skip
    logps = panels["log-probs: chosen and rejected"]
    assert list(logps) == ["chosen", "rejected"]  # one panel: they are read together
    assert logps["chosen"] == [(line["step"], line["logps/chosen"]) for line in lines]
    assert logps["rejected"] == [(line["step"], line["logps/rejected"]) for line in lines]
    assert panels["grad norm"]["train"] == [(line["step"], line["grad_norm"]) for line in lines]
    assert panels["learning rate"]["train"][0] == (1.0, lines[0]["learning_rate"])


def test_several_training_runs_name_their_lines(tiny_run: Path) -> None:
    curves = read_curves(tiny_run / "train/metrics.jsonl", ErrorPolicy())
    panels = training_panels({"round-1": curves, "round-2": curves})
    assert list(panels["log-probs: chosen and rejected"]) == [
        "round-1 chosen", "round-1 rejected", "round-2 chosen", "round-2 rejected",
    ]  # fmt: skip
    assert list(panels["loss"]) == ["round-1", "round-2"]


def test_six_panels_are_drawn_three_to_a_row(tiny_run: Path) -> None:
    curves = read_curves(tiny_run / "train/metrics.jsonl", ErrorPolicy())
    uri = training_plot(training_panels({"train": curves}))
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    # Two rows of three (4 x 3 inches each), not one row of six too small to read.
    assert 0.4 < image.height / image.width < 0.6


def test_table_has_first_and_last_log_probs_grad_norm_and_learning_rate(
    tiny_run: Path, tmp_path: Path
) -> None:
    lines = _lines(tiny_run)
    rows = find_table(parse_report(write_report(tiny_run, tmp_path / "r.html").read_text()),
                      "run", "last")  # fmt: skip
    shown = {row[1]: row for row in rows[1:]}
    for key in ("logps/chosen", "logps/rejected", "grad_norm", "learning_rate"):
        assert float(shown[key][2]) == pytest.approx(lines[0][key], rel=1e-3)
        assert float(shown[key][3]) == pytest.approx(lines[-1][key], rel=1e-3)


def test_a_falling_chosen_log_prob_is_called_likelihood_displacement(
    tiny_run: Path, tmp_path: Path
) -> None:
    # The fixture's chosen log-prob falls from -40.5 to -45 while the rejected one drops.
    html = render_training([tiny_run / "train/metrics.jsonl"], tiny_run, ErrorPolicy())
    assert "likelihood displacement" in html
    assert "chosen -40.5 → -45 (-4.5)" in html  # first and last tenth: one step each of 10
    rising = tmp_path / "train" / "metrics.jsonl"
    write_jsonl(rising, [{**line, "logps/chosen": -40.0 + step}
                         for step, line in enumerate(_lines(tiny_run))])  # fmt: skip
    html = render_training([rising], tmp_path, ErrorPolicy())
    assert "chosen -40 → -31 (+9)" in html and "likelihood displacement" not in html


def test_metrics_without_log_probs_leave_them_out(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "train", run / "train")
    write_jsonl(run / "train" / "metrics.jsonl",
                [{"step": line["step"], "loss": line["loss"]} for line in _lines(tiny_run)])  # fmt: skip
    panels = training_panels({"train": read_curves(run / "train/metrics.jsonl", ErrorPolicy())})
    assert list(panels) == ["loss"]
    assert "log-prob" not in render_training([run / "train/metrics.jsonl"], run, ErrorPolicy())


def test_a_run_on_the_hardest_pairs_shows_the_pairs_kept_and_the_margins(
    tiny_run: Path, tmp_path: Path
) -> None:
    from bpo.train.selection import Selection

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "train", run / "train")
    metrics = [run / "train/metrics.jsonl"]
    assert "pairs kept" not in render_training(metrics, run, ErrorPolicy())
    selection = Selection(
        rows=[0, 2], pair_ids=["a/0", "a/1", "b/0"], total=3, margins=[1.0, -1.0, 3.0], k=1
    )
    (run / "train/reference_margins.json").write_text(json.dumps(selection.margins_record()))
    html = render_training(metrics, run, ErrorPolicy())
    rows = find_table(parse_report(html), "run", "pairs kept")
    # All: -1, 1, 3 (10th percentile -0.6, median 1, 90th 2.6); kept: 1, 3.
    assert rows[1:] == [["train", "2 of 3 (k=1)", "-0.6 / 1 / 2.6", "1.2 / 2 / 2.8"]]
    (run / "train/reference_margins.json").write_text("{")
    policy = ErrorPolicy("skip")
    assert "pairs kept" not in render_training(metrics, run, policy)
    assert policy.total == 1
