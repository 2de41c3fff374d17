"""The registry, `bpo eval` for the new benchmarks, bpo run's eval section, the report's headline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo.cli import main
from bpo.commands import eval as eval_command
from bpo.config import Recipe
from bpo.errors import ConfigError
from bpo.eval.benches import BENCHES, get_bench
from bpo.eval.recipe import EVAL_KEYS, check_eval, eval_options
from bpo.report.evaluation import EvalRun
from bpo.report.headline import HEADLINE, render_headline
from tests.eval.test_amber import DESCRIPTIONS, YES_NO, amber_dir


def test_one_registry_everywhere() -> None:
    assert tuple(BENCHES) == eval_command.BENCHES
    assert set(EVAL_KEYS) == set(BENCHES)  # bpo run can run each one
    assert set(BENCHES) - {"toy"} <= set(HEADLINE)
    with pytest.raises(ConfigError, match="pope, chair, mmhal, amber, objhal, hallusion"):
        get_bench("amberr")


def test_help_documents_each_benchmarks_files(capsys: pytest.CaptureFixture[str]) -> None:
    for bench in ("amber", "objhal", "hallusion"):
        with pytest.raises(SystemExit):
            main(["eval", "--bench", bench, "--help"])
    text = capsys.readouterr().out
    for expected in (
        "annotations.json", "relation.json", "safe_words.txt", "query_all.json",
        "obj_halbench_300_with_image.jsonl", "HallusionBench.json", "--amber-dir",
        "--objects-from", "filtered_resps",
    ):  # fmt: skip
        assert expected in text, expected


def test_cli_scores_amber_responses_and_compares_parsers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = amber_dir(tmp_path)
    responses = tmp_path / "responses.json"
    responses.write_text(
        json.dumps([{"id": i, "response": t} for i, t in {**DESCRIPTIONS, **YES_NO}.items()])
    )
    argv = ["eval", "--bench", "amber", "--amber-dir", str(folder), "--predictions", str(responses)]
    assert main([*argv, "--out", str(tmp_path / "reference")]) == 0
    assert main([*argv, "--out", str(tmp_path / "robust"), "--parser", "robust"]) == 0
    printed = capsys.readouterr().out
    assert "AMBER score: 0.5571" in printed  # (1 - 2/7 + 0.4) / 2
    assert main(["eval", "compare", *(str(tmp_path / n / "results.json")
                                      for n in ("reference", "robust"))]) == 0  # fmt: skip
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]
            if line and not line.startswith("note")}  # fmt: skip
    # accuracy 3/6 -> 5/6 with the robust reading
    assert rows["discriminative.accuracy"] == ["0.5000", "0.8333", "+0.3333"]
    assert rows["generative.chair"][-1] == "+0.0000"


def test_bpo_run_eval_section(tmp_path: Path) -> None:
    recipe = Recipe()
    recipe.samples.image_root = "images"
    config = recipe.eval
    config.amber, config.mmhal, config.objhal = "AMBER/data", "mmhal.json", "objhal.jsonl"
    config.image_roots = {"amber": "AMBER/image"}
    # Refused before any stage: MMHal-Bench without a judge, Object HalBench without COCO.
    with pytest.raises(ConfigError, match=r"eval\.judge_model"):
        check_eval(config)
    config.judge_model, config.judge_base_url = "gpt-4o", "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match=r"eval\.coco_instances"):
        check_eval(config)
    config.coco_instances = ["instances_train2014.json", "instances_val2014.json"]
    check_eval(config)
    assert list(config.benches()) == ["mmhal", "amber", "objhal"]

    def options(bench: str) -> object:
        return eval_options(
            recipe, bench, config.benches()[bench], out=tmp_path / bench, model="m",
            judge_cache=tmp_path / "cache.jsonl",
        )  # fmt: skip

    amber = options("amber")
    assert (amber.amber_dir, amber.data, amber.image_root) == ("AMBER/data", None, "AMBER/image")
    mmhal = options("mmhal")
    assert (mmhal.data, mmhal.image_root, mmhal.judge_model) == ("mmhal.json", "images", "gpt-4o")
    assert mmhal.judge_options["base_url"] == "http://127.0.0.1:9/v1"
    assert options("objhal").coco_instances == config.coco_instances
    assert options("amber").judge_model is None  # no judge where none is used


def _run(tmp_path: Path, folder: str, bench: str, metrics: dict) -> EvalRun:
    path = tmp_path / folder / "results.json"
    return EvalRun(folder, path, {"bench": bench, "metrics": metrics})


def test_headline_shows_the_new_benchmarks(tmp_path: Path) -> None:
    amber = {
        "amber_score": 0.6,
        "generative": {"chair": 0.1, "hal": 0.3},
        "discriminative": {"f1": 0.8},
    }
    better = {
        "amber_score": 0.7,
        "generative": {"chair": 0.05, "hal": 0.35},
        "discriminative": {"f1": 0.8},
    }
    hb = {"overall": {"aAcc": 0.5, "fAcc": 0.2, "qAcc": 0.1}}
    html = render_headline(
        {
            "amber": [_run(tmp_path, "base-amber", "amber", amber),
                      _run(tmp_path, "bpo-amber", "amber", better)],
            "hallusion": [_run(tmp_path, "base-hallusion", "hallusion", hb)],
        }
    )  # fmt: skip
    for title in ("AMBER score", "AMBER CHAIR", "AMBER Hal", "AMBER discriminative F1",
                  "HallusionBench aAcc", "HallusionBench qAcc"):  # fmt: skip
        assert title in html, title
    assert "eval/bpo-hallusion/results.json" in html  # the missing after-run is named
    row = html[html.index("AMBER CHAIR") :].split("</tr>")[0]
    assert "0.1000" in row and "-0.0500" in row and "better" in row and "lower" in row
    row = html[html.index("AMBER Hal") :].split("</tr>")[0]
    assert "worse" in row  # Hal went up
