"""`import bpo`: the stages as functions with the CLI's settings, on the tiny pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bpo
from bpo.errors import ConfigError
from tests.bootstrap.conftest import write_dataset

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_import_bpo_is_instant_and_loads_nothing_heavy() -> None:
    code = "import bpo, sys; print(sorted(m for m in ('torch', 'transformers', 'numpy', 'PIL') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert set(bpo.__all__) >= {"bootstrap", "pairs", "train", "evaluate", "report", "run"}


def test_the_tiny_pipeline_from_python(tiny_llava_path: Path, tmp_path: Path) -> None:
    samples = write_dataset(tmp_path / "data", 4)
    images = samples.parent / "images"
    weakened = bpo.bootstrap(
        samples,
        strategy="image-weakening",
        out=tmp_path / "iw.jsonl",
        model=tiny_llava_path,
        image_root=images,
        max_new_tokens=6,
        no_progress=True,
    )
    assert weakened.samples_done == 4 and weakened.negatives_written >= 1
    injected = bpo.bootstrap(
        samples, strategy="cooccurrence", out=tmp_path / "co.jsonl", num_negatives=2
    )
    assert injected.negatives_written >= 1

    stats = bpo.pairs(
        samples, [tmp_path / "iw.jsonl", tmp_path / "co.jsonl"], out=tmp_path / "pairs.jsonl"
    )
    assert stats.written == sum(stats.kept.values()) >= 2

    result = bpo.train(
        config=RECIPES / "tiny.yaml",
        overrides=[
            f"model.name={tiny_llava_path}",
            f"data.pairs={tmp_path / 'pairs.jsonl'}",
            f"data.image_root={images}",
            "train.max_steps=2",
        ],
        output_dir=tmp_path / "run",
    )
    assert result.global_step == 2 and result.output.name == "adapter"
    assert "final loss" in result.summary()

    chair = tmp_path / "chair.jsonl"
    chair.write_text(json.dumps({"id": "c0", "image": "000.png", "objects": ["person"]}) + "\n")
    results = bpo.evaluate(
        bench="chair",
        data=chair,
        image_root=images,
        model=tiny_llava_path,
        max_new_tokens=6,
        out=tmp_path / "eval",
        no_progress=True,
    )
    assert results["counts"]["answered"] == 1 and "chair_i" in results["metrics"]

    page = bpo.report(tmp_path / "run")
    assert page.exists() and page.stat().st_size > 0

    # The same checks as the CLI: a rerun with other settings is refused.
    with pytest.raises(ConfigError, match="num_negatives 2 → 3"):
        bpo.bootstrap(samples, strategy="cooccurrence", out=tmp_path / "co.jsonl", num_negatives=3)


def test_unknown_or_missing_keywords_are_named() -> None:
    with pytest.raises(TypeError, match="needs the keyword 'out'"):
        bpo.bootstrap("s.json", strategy="cooccurrence")
    with pytest.raises(TypeError, match=r"unknown keyword 'num_negative'.*num_negatives"):
        bpo.bootstrap("s.json", strategy="cooccurrence", out="o.jsonl", num_negative=2)


def test_bpo_run_from_python(tiny_llava_path: Path, tmp_path: Path) -> None:
    samples = write_dataset(tmp_path / "data", 4)
    run = bpo.run(
        RECIPES / "tiny.yaml",
        [
            f"model.name={tiny_llava_path}",
            f"samples.path={samples}",
            f"samples.image_root={samples.parent / 'images'}",
            "bootstrap.strategies=[cooccurrence]",
            "train.max_steps=1",
        ],
        out=tmp_path / "run",
        stages=["bootstrap", "pairs", "train"],
        no_progress=True,
    )
    assert run.done("train") and "steps" in run.summary()
