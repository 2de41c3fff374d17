"""`bpo run`: every stage on the tiny LLaVA and real photos, then a resumed re-run."""

from __future__ import annotations

import json
from pathlib import Path

from bpo.cli import main

from .bootstrap.conftest import write_dataset

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_run_chains_every_stage_and_resumes(tiny_llava_path, tmp_path, capsys):
    samples = write_dataset(tmp_path / "data", 6)
    chair = tmp_path / "chair.jsonl"
    with chair.open("w") as handle:
        for i in range(3):
            handle.write(json.dumps({"id": f"c{i}", "image": f"{i:03d}.png", "objects": ["cat"]}))
            handle.write("\n")
    run_dir = tmp_path / "run"
    argv = [
        "run",
        str(RECIPES / "tiny.yaml"),
        f"model.name={tiny_llava_path}",
        f"samples.path={samples}",
        f"samples.image_root={samples.parent / 'images'}",
        "bootstrap.max_new_tokens=6",
        f"eval.chair={chair}",
        "eval.max_new_tokens=6",
        "train.max_steps=2",
        "--out",
        str(run_dir),
        "--no-progress",
    ]
    assert main(argv) == 0
    for path in (
        "config.yaml",
        "negatives/image-weakening.jsonl",
        "negatives/cooccurrence.jsonl",
        "pairs.jsonl",
        "train/metrics.jsonl",
        "model/config.json",
        "eval/base-chair/results.json",
        "eval/bpo-chair/results.json",
        "report.html",
    ):
        assert (run_dir / path).exists(), path
    strategies = {json.loads(line)["strategy"] for line in (run_dir / "pairs.jsonl").open()}
    assert strategies == {"image-weakening", "cooccurrence"}
    finished = {p.stem for p in (run_dir / "stages").glob("*.json")}
    assert {"pairs", "train", "export", "eval-base", "eval-bpo"} <= finished

    # A re-run finds every stage done and changes nothing.
    before = (run_dir / "pairs.jsonl").read_bytes(), (run_dir / "train/metrics.jsonl").read_bytes()
    assert main(argv) == 0
    after = (run_dir / "pairs.jsonl").read_bytes(), (run_dir / "train/metrics.jsonl").read_bytes()
    assert before == after

    # Other settings for the same run folder are refused, not mixed in.
    capsys.readouterr()
    assert main([*argv[:-3], "pairs.max_words=10", *argv[-3:]]) == 2
    err = capsys.readouterr().err
    assert "the run in" in err and "pairs.max_words 350 → 10" in err and "--overwrite" in err


def test_run_needs_samples_before_loading_anything(tmp_path):
    assert main(["run", str(RECIPES / "tiny.yaml"), "--out", str(tmp_path / "run")]) == 2
