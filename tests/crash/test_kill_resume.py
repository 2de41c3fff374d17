"""kill -9 mid-output, rerun: every stage ends as an uninterrupted run, nothing half-written.

One test per stage (issue 8, item 1), each a `tests.crash.harness` trial at a
fixed point of the stage's output (`tests.crash.stages`); `bench/crash.py` runs
many trials at random points. The killed run is a real `bpo` process; the
uninterrupted run and the rerun are the same command run here, in-process, which
spares two interpreter start-ups per test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bpo.cli import main
from tests.crash.harness import kill_and_resume, reference_run
from tests.crash.stages import Workspace, build_workspace, stages

STAGES = ("bootstrap", "pairs", "pairs-mix", "reference", "train", "eval", "pipeline")


@pytest.fixture(scope="module")
def workspace(tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return build_workspace(tmp_path_factory.mktemp("crash-inputs"), tiny_llava_path)


@pytest.fixture(scope="module")
def references() -> dict[str, dict[str, Any]]:
    """Uninterrupted runs' snapshots by command, shared by the stages that run the same one."""
    return {}


def in_process(argv: list[str]) -> None:
    assert main(argv[3:]) == 0  # argv: python -m bpo.cli ARGS


@pytest.mark.parametrize("name", STAGES)
def test_kill_9_then_rerun_matches_an_uninterrupted_run(
    name: str,
    workspace: Workspace,
    references: dict[str, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    stage = stages(workspace)[name]
    out = tmp_path_factory.getbasetemp() / "crash-runs" / stage.command
    if stage.command not in references:
        references[stage.command] = reference_run(stage, out, run=in_process)

    trial = kill_and_resume(stage, out, references[stage.command], resume=in_process)

    assert trial.kill.killed and trial.mid_output, f"the kill missed the output: {trial.kill}"
    assert trial.half_written == [], "a file under its final name was left half-written"
    assert trial.comparison.lost == 0
    assert trial.comparison.duplicated == 0
    assert trial.comparison.differences == []
