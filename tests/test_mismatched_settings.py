"""Every stage refuses to add to output made with other settings, and a refusal changes no byte.

One test per case a new user met (issue "Never a silent wrong result"): each reruns
a stage onto existing output with a setting changed, expects exit 2 with the
setting named old → new, and compares a hash of every file in the folder before
and after. The model is never loaded for a refused run (its loaders are trapped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bpo.cli import main
from tests.bootstrap.conftest import write_dataset
from tests.snapshot import folder_digest
from tests.train.conftest import RECIPES

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading any model or processor fail the test: a refusal must come first."""
    import bpo.backends
    import bpo.train.model

    def trapped(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(bpo.backends, "get_backend", trapped)
    monkeypatch.setattr(bpo.train.model, "load_processor", trapped)
    monkeypatch.setattr(bpo.train.model, "load_model", trapped)


def refused(argv: list[str], folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `argv`, expect exit 2 and an unchanged `folder`; return the one-line error."""
    before = folder_digest(folder)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert folder_digest(folder) == before, "a refused run changed the folder"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bpo "), err
    return lines[0]


# --- bpo bootstrap ---------------------------------------------------------------------


@pytest.fixture
def weakened(tmp_path: Path, tiny_llava_path: Path) -> tuple[list[str], Path]:
    """Image-weakening negatives of 4 samples; returns the command and the output."""
    samples = write_dataset(tmp_path / "data", 4)
    out = tmp_path / "out" / "negatives.jsonl"
    argv = [
        *("bootstrap", str(samples), "--strategy", "image-weakening", "--out", str(out)),
        *("--model", str(tiny_llava_path), "--image-root", str(samples.parent / "images")),
        *("--max-new-tokens", "4", "--no-progress"),
    ]
    assert main(argv) == 0
    return argv, out


def test_bootstrap_refuses_another_strategy_step_or_count(
    weakened: tuple[list[str], Path], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    argv, out = weakened
    no_model_loads(monkeypatch)
    other = [*argv[:3], "cooccurrence", *argv[4:]]
    message = refused(other, out.parent, capsys)
    assert "strategy image-weakening → cooccurrence" in message
    assert "another --out" in message and "--overwrite" in message
    message = refused([*argv, "--step", "700"], out.parent, capsys)
    assert 'distortion_params {"step": 500} → {"step": 700}' in message
    message = refused([*argv, "--num-negatives", "2"], out.parent, capsys)
    assert "num_negatives 1 → 2" in message
    message = refused([*argv, "--temperature", "0.5"], out.parent, capsys)
    assert "temperature 1.0 → 0.5" in message


def test_bootstrap_resumes_with_settings_that_cannot_change_the_result(
    weakened: tuple[list[str], Path], capsys: Any
) -> None:
    argv, out = weakened
    negatives = out.read_bytes()
    assert main([*argv, "--batch-size", "3"]) == 0
    assert out.read_bytes() == negatives


def test_bootstrap_overwrite_replaces_the_output_and_its_record(
    weakened: tuple[list[str], Path],
) -> None:
    argv, out = weakened
    assert main([*argv[:3], "cooccurrence", *argv[4:], "--overwrite"]) == 0
    strategies = {json.loads(line)["strategy"] for line in out.read_text().splitlines()}
    assert strategies == {"cooccurrence"}
    record = json.loads(Path(f"{out}.settings.json").read_text())
    assert record["stage"] == "bootstrap" and record["settings"]["strategy"] == "cooccurrence"
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["strategy"] == "cooccurrence" and summary["samples_resumed"] == 0


def test_merge_refuses_shards_made_with_other_settings(tmp_path: Path, capsys: Any) -> None:
    samples = write_dataset(tmp_path / "data", 4)
    parts = [tmp_path / f"part{i}.jsonl" for i in range(2)]
    for i, part in enumerate(parts):
        argv = ["bootstrap", str(samples), "--strategy", "cooccurrence", "--out", str(part)]
        assert main([*argv, "--shard", f"{i}/2", "--seed", str(i), "--no-progress"]) == 0
    merged = tmp_path / "merged" / "negatives.jsonl"
    message = refused(["merge", *map(str, parts), "--out", str(merged)], tmp_path, capsys)
    assert "seed 0 → 1" in message and "only shards of one run" in message


def test_empty_samples_file_is_an_error_and_writes_nothing(tmp_path: Path, capsys: Any) -> None:
    samples = tmp_path / "samples.json"
    samples.write_text("[]")
    out = tmp_path / "negatives.jsonl"
    message = refused(
        ["bootstrap", str(samples), "--strategy", "cooccurrence", "--out", str(out)],
        tmp_path,
        capsys,
    )
    assert "holds no samples" in message
    assert not out.exists()


def test_a_failed_run_leaves_no_empty_output(
    tmp_path: Path, tiny_llava_path: Path, capsys: Any
) -> None:
    samples = write_dataset(tmp_path / "data", 2)
    (samples.parent / "images" / "001.png").unlink()  # the second sample's image
    out = tmp_path / "out" / "negatives.jsonl"
    argv = [
        *("bootstrap", str(samples), "--strategy", "image-weakening", "--out", str(out)),
        *("--model", str(tiny_llava_path), "--image-root", str(samples.parent / "images")),
    ]
    assert main(argv) == 2
    assert "001.png" in capsys.readouterr().err
    assert not out.parent.exists() or not any(out.parent.iterdir())

    # An evaluation whose model cannot load leaves its folder as it was: absent.
    chair = tmp_path / "chair.jsonl"
    chair.write_text(json.dumps({"id": "c0", "image": "000.png", "objects": ["cat"]}) + "\n")
    evaluation = tmp_path / "eval"
    argv = ["eval", "--bench", "chair", "--data", str(chair), "--out", str(evaluation)]
    images = str(samples.parent / "images")
    assert main([*argv, "--image-root", images, "--model", str(tmp_path / "no-model")]) == 2
    assert not evaluation.exists()


def test_a_missing_image_root_is_caught_before_any_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    samples = write_dataset(tmp_path / "data", 2)
    no_model_loads(monkeypatch)
    argv = [
        *("bootstrap", str(samples), "--strategy", "image-weakening"),
        *("--out", str(tmp_path / "negatives.jsonl"), "--model", "any"),
    ]
    message = refused(argv, tmp_path, capsys)
    assert "record 's000'" in message and "--image-root" in message


# --- bpo pairs -------------------------------------------------------------------------


def test_pairs_refuses_other_options_and_changed_inputs(tmp_path: Path, capsys: Any) -> None:
    samples = write_dataset(tmp_path / "data", 6)
    negatives = tmp_path / "negatives.jsonl"
    argv = ["bootstrap", str(samples), "--strategy", "cooccurrence", "--out", str(negatives)]
    assert main([*argv, "--num-negatives", "2", "--no-progress"]) == 0
    out = tmp_path / "pairs" / "pairs.jsonl"
    pairs = ["pairs", str(samples), str(negatives), "--out", str(out)]
    assert main(pairs) == 0
    message = refused([*pairs, "--max-words", "5"], out.parent, capsys)
    assert "max_words 350 → 5" in message

    # Fewer negatives than the pairs were made from: refused before anything is written.
    kept = negatives.read_text().splitlines(keepends=True)[:3]
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(kept))
    message = refused(["pairs", str(samples), str(fewer), "--out", str(out)], out.parent, capsys)
    assert "pairs that this run does not select" in message


def test_unsafe_image_paths_never_reach_the_pairs_file(tmp_path: Path, capsys: Any) -> None:
    samples = write_dataset(tmp_path / "data", 4)
    lines = samples.read_text().splitlines()
    evil = json.loads(lines[2])  # s002: the injector has a negative for it
    evil["image"] = "../../etc/passwd"
    lines[2] = json.dumps(evil)
    samples.write_text("\n".join(lines) + "\n")
    negatives = tmp_path / "negatives.jsonl"
    argv = ["bootstrap", str(samples), "--strategy", "cooccurrence", "--out", str(negatives)]
    assert main([*argv, "--no-progress"]) == 0
    images = samples.parent / "images"
    for root in (["--image-root", str(images)], []):
        out = tmp_path / f"pairs{len(root)}.jsonl"
        pairs = ["pairs", str(samples), str(negatives), "--out", str(out), *root]
        message = refused(pairs, tmp_path, capsys)
        assert "s002" in message and "'..'" in message
        assert main([*pairs, "--on-error", "skip", "--export", "llamafactory"]) == 0
        written = out.read_text() + (tmp_path / f"{out.stem}_llamafactory.json").read_text()
        assert "passwd" not in written
        assert json.loads(Path(f"{out}.skipped.json").read_text())["counts"] == {"unsafe-path": 1}


# --- recipes and the command line ------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.beta=0", "train.beta must be positive, got 0.0"),
        ("train.learning_rate=-1e-5", "train.learning_rate must be positive"),
        ("lora.r=0", "lora.r must be positive, got 0"),
        ("train.warmup_ratio=1.5", "train.warmup_ratio must be in [0, 1]"),
        ("bootstrap.top_p=0", "bootstrap.top_p must be above 0"),
        ("train.max_steps=0", "train.max_steps must be -1"),
    ],
)
def test_recipe_values_are_range_checked_naming_the_override(
    override: str, expected: str, capsys: Any
) -> None:
    assert main(["train", "--config", str(RECIPES / "tiny.yaml"), override]) == 2
    err = capsys.readouterr().err
    assert f"override {override!r}: {expected}" in err


def test_a_bad_value_in_the_file_names_the_file(tmp_path: Path, capsys: Any) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  beta: -0.1\n")
    assert main(["train", "--config", str(recipe)]) == 2
    assert f"{recipe}: train.beta must be positive" in capsys.readouterr().err


def test_overrides_go_before_or_after_the_options(capsys: Any) -> None:
    config = str(RECIPES / "tiny.yaml")
    argv = ["train", "--config", config, "lora.r=4", "--print-config", "train.beta=0.2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "r: 4" in printed and "beta: 0.2" in printed
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--config", config, "--print-config", "--no-such-flag"])
    assert stopped.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
