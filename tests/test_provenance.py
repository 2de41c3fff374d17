"""`bpo.provenance`: the settings record, the comparison, and refusals that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo.errors import ConfigError
from bpo.provenance import Provenance, differences, file_record, folder_record
from tests.snapshot import folder_digest


def record(tmp_path: Path, settings: dict, **kwargs: object) -> Provenance:
    out = tmp_path / "out.jsonl"
    return Provenance(
        stage="bootstrap", record=file_record(out), settings=settings, outputs=[out], **kwargs
    )


def test_differences_name_each_setting_old_to_new() -> None:
    before = {"strategy": "image-weakening", "seed": 0, "params": {"step": 500}, "old": 1}
    after = {"strategy": "image-weakening", "seed": 1, "params": {"step": 700}, "new": 2}
    assert differences(before, after) == ['params {"step": 500} → {"step": 700}', "seed 0 → 1"]
    # A key only the record has counts when nothing shared differs; one only the run has never.
    assert differences({"a": 1, "old": 1}, {"a": 1, "new": 2}) == ["old 1 → (not set)"]
    assert differences({"a": "two words"}, {"a": ""}) == ['a "two words" → ""']


def test_a_fresh_output_is_recorded_at_commit_and_a_rerun_is_checked(tmp_path: Path) -> None:
    first = record(tmp_path, {"seed": 0})
    first.check()
    assert not file_record(tmp_path / "out.jsonl").exists()  # nothing written before commit
    first.commit()
    (tmp_path / "out.jsonl").write_text('{"id": "a"}\n')
    saved = json.loads(file_record(tmp_path / "out.jsonl").read_text())
    assert saved["stage"] == "bootstrap" and saved["settings"] == {"seed": 0}

    record(tmp_path, {"seed": 0}).check()  # the same settings resume
    before = folder_digest(tmp_path)
    with pytest.raises(ConfigError, match=r"other settings: seed 0 → 1\. .*--overwrite"):
        record(tmp_path, {"seed": 1}).check()
    assert folder_digest(tmp_path) == before


def test_overwrite_removes_the_old_output_only_at_commit(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    record(tmp_path, {"seed": 0}).commit()
    out.write_text('{"id": "a"}\n')
    replacing = record(tmp_path, {"seed": 1}, overwrite=True)
    replacing.check()
    assert out.exists()  # a run that fails before its first byte keeps the old output
    replacing.commit()
    assert not out.exists()
    assert json.loads(file_record(out).read_text())["settings"] == {"seed": 1}


def test_output_without_a_record_or_of_another_stage_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a"}\n')
    with pytest.raises(ConfigError, match="no record says which settings made it"):
        record(tmp_path, {"seed": 0}).check()
    record(tmp_path, {"seed": 0}, overwrite=True).check()  # replacing it is asked for

    folder = tmp_path / "run"
    train = Provenance(
        stage="train", record=folder_record(folder), settings={}, outputs=[folder / "adapter"]
    )
    train.commit()
    evaluation = Provenance(
        stage="eval",
        record=folder_record(folder),
        settings={},
        outputs=[folder / "predictions.jsonl"],
        overwrite=True,
    )
    with pytest.raises(ConfigError, match="holds the output of `bpo train`, not of `bpo eval`"):
        evaluation.check()  # another command's folder: refused even with --overwrite


def test_an_unreadable_record_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a"}\n')
    file_record(out).write_text("not json")
    with pytest.raises(ConfigError, match="not a bpo settings record"):
        record(tmp_path, {}).check()
