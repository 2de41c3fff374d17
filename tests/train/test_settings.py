"""`bpo train --resume` and `bpo run` refuse a run folder made with other settings or by
another command, before any model loads, and change no byte (see tests/test_mismatched_settings.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bpo.cli import main
from tests.bootstrap.conftest import write_dataset
from tests.test_mismatched_settings import no_model_loads, refused
from tests.train.conftest import RECIPES, PairData

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture
def trained(tiny_llava_path: Path, pair_data: PairData, tmp_path: Path) -> list[str]:
    """A finished 2-step tiny training run; returns its command."""
    argv = [
        *("train", "--config", str(RECIPES / "tiny.yaml")),
        f"model.name={tiny_llava_path}",
        f"data.pairs={pair_data.pairs}",
        f"data.image_root={pair_data.image_root}",
        "train.max_steps=2",
        *("--output-dir", str(tmp_path / "run")),
    ]
    assert main(argv) == 0
    return argv


def test_train_resume_refuses_another_recipe_before_touching_anything(
    trained: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as trap:
        no_model_loads(trap)
        message = refused(
            [*trained, "lora.r=4", "train.learning_rate=0.5", "--resume"], run, capsys
        )
    assert "lora.r 8 → 4" in message and "train.learning_rate 0.001 → 0.5" in message
    assert "--output-dir" in message and "--overwrite" in message
    # The same recipe resumes (nothing left to train), and logging may change.
    assert main([*trained, "train.logging_steps=5", "--resume"]) == 0
    assert "learning_rate: 0.001" in (run / "config.yaml").read_text()


def test_train_resume_refuses_another_pair_selection(
    trained: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as trap:
        no_model_loads(trap)
        message = refused([*trained, "train.select=hardest", "--resume"], run, capsys)
        assert "train.select all → hardest" in message
        message = refused([*trained, "train.select_k=2", "--resume"], run, capsys)
        assert "train.select_k 1 → 2" in message


def test_bpo_run_refuses_a_folder_holding_a_train_run(
    trained: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    no_model_loads(monkeypatch)
    samples = write_dataset(tmp_path / "data", 2)
    run = tmp_path / "run"
    argv = [
        *("run", str(RECIPES / "tiny.yaml"), f"samples.path={samples}"),
        *("model.name=m", "--out", str(run), "--overwrite"),
    ]
    message = refused(argv, run, capsys)
    assert "`bpo train`" in message and "another --out" in message


def test_bpo_run_refuses_a_folder_of_other_files(tmp_path: Path, capsys: Any) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    argv = ["run", str(RECIPES / "tiny.yaml"), "samples.path=s.json", "model.name=m"]
    message = refused([*argv, "--out", str(folder)], folder, capsys)
    assert "not a bpo run (notes.txt)" in message
