"""`bpo run` with rounds.count: 2 on the tiny LLaVA: layout, provenance, resume, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bpo.cli import main
from tests.crash.harness import Stage, bpo_command, kill_and_resume, reference_run
from tests.crash.stages import Workspace, build_workspace

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def workspace(tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return build_workspace(tmp_path_factory.mktemp("rounds-inputs"), tiny_llava_path, samples=6)


def run_args(space: Workspace, out: Path, *more: str) -> list[str]:
    """``bpo run`` of two rounds (tiny.yaml: 4 steps, a checkpoint every 2)."""
    return [
        *("run", str(RECIPES / "tiny.yaml"), f"model.name={space.model}"),
        *(f"samples.path={space.samples}", f"samples.image_root={space.images}"),
        *("bootstrap.batch_size=6", "bootstrap.max_new_tokens=6", f"eval.chair={space.chair}"),
        *("eval.max_new_tokens=6", "eval.batch_size=6", "rounds.count=2", *more),
        *("--out", str(out), "--no-progress"),
    ]


def digests(root: Path) -> dict[str, str]:
    """Every file under `root` by its SHA-256 (hidden ones too)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def two_rounds(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("rounds") / "run"
    assert main(run_args(workspace, run_dir)) == 0
    return run_dir


def test_each_round_is_a_run_from_the_previous_rounds_model(
    two_rounds: Path, workspace: Workspace
) -> None:
    run = two_rounds
    for number in (1, 2):
        for path in ("negatives/image-weakening.jsonl", "pairs.jsonl", "model/config.json"):
            assert (run / f"round-{number}" / path).exists(), f"round-{number}/{path}"
    assert not (run / "negatives").exists() and not (run / "stages").exists()
    assert (run / "report.html").exists() and (run / "round-2" / "report.html").exists()
    # Round 2 evaluates only its model: the base model's eval is round 1's.
    assert {p.name for p in (run / "round-1" / "eval").glob("*-chair")} == {
        "base-chair",
        "bpo-chair",
    }
    assert {p.name for p in (run / "round-2" / "eval").glob("*-chair")} == {"bpo-chair"}

    # Each negative names the model that made it.
    first = jsonl(run / "round-1" / "negatives" / "image-weakening.jsonl")
    second = jsonl(run / "round-2" / "negatives" / "image-weakening.jsonl")
    assert {n["params"]["model"] for n in first} == {str(workspace.model)}
    assert {n["params"]["model"] for n in second} == {str((run / "round-1" / "model").resolve())}

    summary = json.loads((run / "rounds.json").read_text())
    assert list(summary["models"]) == ["base", "round-1", "round-2"]
    chair = summary["metrics"]["chair"]
    assert set(chair["chair_s"]) == {"base", "round-1", "round-2"}
    page = (run / "report.html").read_text()
    assert "Rounds" in page and "round-2" in page


def test_a_rerun_changes_nothing_and_other_settings_are_refused_by_name(
    two_rounds: Path, workspace: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = lambda rel: not rel.endswith("report.html")  # noqa: E731 (the report shows its time)
    before = digests(two_rounds)
    assert main(run_args(workspace, two_rounds)) == 0
    after = digests(two_rounds)
    assert {k: v for k, v in after.items() if keep(k)} == {
        k: v for k, v in before.items() if keep(k)
    }

    capsys.readouterr()
    assert main(run_args(workspace, two_rounds, "pairs.max_words=10")) == 2
    err = capsys.readouterr().err
    assert "pairs.max_words 350 → 10" in err
    assert main(run_args(workspace, two_rounds, "rounds.reference=base")) == 2
    assert "rounds.reference previous → base" in capsys.readouterr().err
    # A one-round run is not mixed into a run of rounds.
    one_round = [a for a in run_args(workspace, two_rounds) if a != "rounds.count=2"]
    assert main(one_round) == 2
    assert "several rounds" in capsys.readouterr().err
    assert digests(two_rounds) == after, "a refused run changed the folder"


def test_a_changed_round_folder_is_refused_by_name(
    two_rounds: Path, workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_rounds, run)
    # Round 2's record says it was made from another model: refused before anything runs.
    record = run / "round-2" / "settings.json"
    data = json.loads(record.read_text())
    data["settings"]["train.beta"] = 0.5
    record.write_text(json.dumps(data))
    before = digests(run)
    capsys.readouterr()
    assert main(run_args(workspace, run)) == 2
    err = capsys.readouterr().err
    assert "round-2" in err and "train.beta 0.5 → 0.1" in err
    assert digests(run) == before


def test_reference_base_trains_round_2_against_the_base_model(
    two_rounds: Path, workspace: Workspace, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert main(run_args(workspace, run, "rounds.reference=base")) == 0
    config = (run / "round-2" / "train" / "config.yaml").read_text()
    assert f"reference_model: {workspace.model}" in config
    # Round 2's pairs are the same (round 1 is), their reference log-probs are not.
    same = "round-2/pairs.jsonl"
    assert (run / same).read_bytes() == (two_rounds / same).read_bytes()

    def reference(root: Path) -> list[dict]:
        (store,) = (root / "round-2" / "train" / "cache").glob("reference-*/reference_logps.jsonl")
        return sorted(jsonl(store), key=lambda row: row["id"])

    base, previous = reference(run), reference(two_rounds)
    assert [row["id"] for row in base] == [row["id"] for row in previous]
    assert base != previous

    # They are the base model's: those `bpo train` of the base model computes on the pairs.
    alone = tmp_path / "alone"
    argv = [
        *("train", "--config", str(RECIPES / "tiny.yaml"), f"model.name={workspace.model}"),
        *(f"data.pairs={run / same}", f"data.image_root={workspace.images}", "train.max_steps=1"),
        *("--output-dir", str(alone)),
    ]
    assert main(argv) == 0
    (store,) = (alone / "cache").glob("reference-*/reference_logps.jsonl")
    expected = sorted(jsonl(store), key=lambda row: row["id"])
    assert [row["id"] for row in expected] == [row["id"] for row in base]
    for got, want in zip(base, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_more_rounds_go_on_from_a_finished_run(
    two_rounds: Path, workspace: Workspace, tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_rounds, run)
    before = digests(run / "round-2")
    argv = [a if a != "rounds.count=2" else "rounds.count=3" for a in run_args(workspace, run)]
    assert main(argv) == 0
    assert (run / "round-3" / "stages" / "eval-bpo.json").exists()
    negatives = jsonl(run / "round-3" / "negatives" / "image-weakening.jsonl")
    assert {n["params"]["model"] for n in negatives} == {str((run / "round-2" / "model").resolve())}
    after = digests(run / "round-2")
    # Round 2's outputs are kept; its resolved recipe names round 1's model where the
    # copy now lies (the record names it relative to the round, so the copy resumes).
    moved = ("report.html", "config.yaml")
    assert {k: v for k, v in after.items() if k not in moved} == {
        k: v for k, v in before.items() if k not in moved
    }
    assert list(json.loads((run / "rounds.json").read_text())["models"])[-1] == "round-3"


def _round_2_cache(rel: str) -> bool:
    # Round 2's caches (tokens, reference log-probs) are keyed by round 1's model folder,
    # file times included, and train_result.json names the reference cache's folder: a
    # rerun writes round 1's model anew. What training made of the caches (adapter,
    # merged model, metrics) is compared; the reports show when they were made.
    return (
        "/cache/" in rel
        or rel.endswith("report.html")
        or rel == "run/round-2/train/train_result.json"
    )


def test_kill_9_in_round_2_then_rerun_matches_an_uninterrupted_run(
    workspace: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    def argv(out: Path) -> list[str]:
        return bpo_command(*run_args(workspace, out / "run"))

    def in_process(command: list[str]) -> None:
        assert main(command[3:]) == 0

    round_2 = lambda out: out / "run" / "round-2"  # noqa: E731
    stage = Stage(
        "rounds",
        argv,
        started=lambda out: (out / "run" / "round-1").exists(),
        finished=lambda out: (out / "run" / "rounds.json").exists(),
        # Round 2's step 3 logged: its checkpoint-2 is saved, step 4 under way.
        ready=lambda out: (
            (path := round_2(out) / "train" / "metrics.jsonl").exists()
            and path.read_bytes().count(b"\n") >= 3
        ),
        skip=_round_2_cache,
    )
    out = tmp_path_factory.mktemp("rounds-crash")
    reference = reference_run(stage, out, run=in_process)
    trial = kill_and_resume(stage, out, reference, resume=in_process)

    assert trial.kill.killed and trial.mid_output, f"the kill missed round 2: {trial.kill}"
    assert trial.half_written == []
    assert trial.comparison.lost == 0 and trial.comparison.duplicated == 0
    assert trial.comparison.differences == []
    for rel in (
        "run/round-2/negatives/image-weakening.jsonl",
        "run/round-2/pairs.jsonl",
        "run/round-2/train/adapter/adapter_model.safetensors",
        "run/round-2/model/model.safetensors",
    ):
        assert rel in reference, rel


def test_rounds_keys_are_checked(tmp_path: Path) -> None:
    from bpo.config import load_recipe
    from bpo.errors import ConfigError

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("rounds: 3\n")
    assert load_recipe(recipe).rounds.count == 3  # `rounds: N` is short for rounds.count
    with pytest.raises(ConfigError, match=r"previous.*base"):
        load_recipe(None, ["rounds.reference=last"])
    with pytest.raises(ConfigError, match=r"rounds\.count must be positive"):
        load_recipe(None, ["rounds.count=0"])


def test_train_reference_model_is_left_to_the_rounds(tmp_path: Path) -> None:
    from bpo.config import load_recipe
    from bpo.errors import ConfigError
    from bpo.pipeline import run_pipeline

    recipe = load_recipe(
        None, ["rounds.count=2", "samples.path=s.jsonl", "model.name=m", "train.reference_model=m"]
    )
    with pytest.raises(ConfigError, match=r"rounds\.reference"):
        run_pipeline(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_reference_cache_key_names_the_reference_model(tiny_llava_path: Path) -> None:
    from bpo.config import load_recipe
    from bpo.train.reference import reference_fingerprint

    own = load_recipe(None, [f"model.name={tiny_llava_path}"])
    other = load_recipe(None, [f"model.name={tiny_llava_path}", "train.reference_model=base/m"])
    assert reference_fingerprint(own, "d", mixed_precision="no") != reference_fingerprint(
        other, "d", mixed_precision="no"
    )


def test_one_round_and_rounds_do_not_mix_unless_overwritten(
    two_rounds: Path, workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    # A one-round run's folder (its record and stage markers) is not continued as rounds.
    one = tmp_path / "one"
    (one / "stages").mkdir(parents=True)
    shutil.copy(two_rounds / "settings.json", one / "settings.json")
    capsys.readouterr()
    assert main(run_args(workspace, one)) == 2
    assert "holds a run of one round" in capsys.readouterr().err

    # --overwrite replaces a run of rounds with a one-round run: no round-K/ is left.
    run = tmp_path / "run"
    shutil.copytree(two_rounds, run)
    one_round = [a for a in run_args(workspace, run) if a != "rounds.count=2"]
    assert main([*one_round, "--overwrite", "--stages", "report"]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "report.html", "settings.json"]


def test_rounds_start_from_a_copy_of_a_one_round_run_of_the_same_settings(
    two_rounds: Path, workspace: Workspace, tmp_path: Path
) -> None:
    from bpo.config import load_recipe
    from bpo.errors import ConfigError
    from bpo.pipeline.rounds import run_rounds

    one_round = tmp_path / "one"
    argv = [
        a if a != "rounds.count=2" else "rounds.count=1" for a in run_args(workspace, one_round)
    ]
    assert main(argv) == 0
    overrides = [a for a in run_args(workspace, tmp_path)[2:] if "=" in a]
    stages = ("bootstrap", "pairs", "train", "export", "eval")

    # Other settings than round 1's: refused before a byte is written.
    other = tmp_path / "other"
    recipe = load_recipe(RECIPES / "tiny.yaml", [*overrides, "train.beta=0.3"])
    with pytest.raises(ConfigError, match=r"train\.beta"):
        run_rounds(recipe, other, stages=stages, progress=False, first_round=one_round)
    assert not other.exists()

    run = tmp_path / "run"
    recipe = load_recipe(RECIPES / "tiny.yaml", overrides)
    run_rounds(recipe, run, stages=stages, progress=False, first_round=one_round)
    # Round 1 is the copy (not trained again); round 2 trains from it as it would have.
    for rel in ("model/model.safetensors", "train/metrics.jsonl", "pairs.jsonl"):
        assert (run / "round-1" / rel).read_bytes() == (one_round / rel).read_bytes(), rel
    second = jsonl(run / "round-2" / "negatives" / "image-weakening.jsonl")
    assert {n["params"]["model"] for n in second} == {str((run / "round-1" / "model").resolve())}
    rel = "round-2/model/model.safetensors"
    assert (run / rel).read_bytes() == (two_rounds / rel).read_bytes()
    losses = [
        [row["loss"] for row in jsonl(root / "round-2/train/metrics.jsonl") if "loss" in row]
        for root in (run, two_rounds)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 4
