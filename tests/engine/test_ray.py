"""--engine ray on a local Ray cluster: the local engine's records, through kills and reruns.

One cluster for the module (``ray.init(num_cpus=2)``, the size of a CI runner), two
replicas of the tiny LLaVA. Each test compares with one local-engine run of the same
command (`local_run`): id by id, text by text. The killed-driver test starts a second
interpreter and cluster, so it is marked slow: ``pytest tests/engine --runslow``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bpo.cli import main
from tests.bootstrap.conftest import write_dataset

ray = pytest.importorskip("ray")

REPLICA = "Replica"  # the actor class of bpo.engine.ray_engine, in Ray's actor names


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
    deadline = time.monotonic() + 30  # the actors' processes exit once their raylet is gone
    while replica_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert replica_pids() == [], "replica processes outlived the cluster"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("engine-data"), 12)


def bootstrap_args(dataset: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """Image-weakening with sampling and a seed: two negatives per sample, batches of 2."""
    argv = ["bootstrap", str(dataset), "--strategy", "image-weakening", "--model", str(model)]
    argv += ["--image-root", str(dataset.parent / "images"), "--out", str(out)]
    argv += ["--num-negatives", "2", "--batch-size", "2", "--seed", "3", "--max-new-tokens", "12"]
    return [*argv, "--temperature", "1.0", "--no-progress", *extra]


def records(path: Path) -> dict[str, Any]:
    """A JSONL file's records by id; an id written twice fails the test."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    counts = Counter(line["id"] for line in lines)
    assert [i for i, n in counts.items() if n > 1] == [], f"ids written twice in {path}"
    return {line["id"]: line for line in lines}


@pytest.fixture(scope="module")
def local_run(
    dataset: Path, tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("local") / "negatives.jsonl"
    assert main(bootstrap_args(dataset, tiny_llava_path, out)) == 0
    return records(out)


def replica_pids() -> list[int]:
    """The pids of the live engine actors (Ray titles an actor's process with its class)."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in listing.splitlines() if f"({REPLICA})" in line]


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kill_a_replica_once_written(out: Path, stop: threading.Event) -> dict[str, int]:
    """From a thread: SIGKILL one replica's process once `out` holds a negative."""
    report: dict[str, int] = {}

    def watch() -> None:
        while not stop.is_set():
            pids = replica_pids()
            if pids and lines(out) >= 1:
                report["written"] = lines(out)
                os.kill(pids[0], signal.SIGKILL)
                report["pid"] = pids[0]
                return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return report


def test_bootstrap_on_ray_writes_the_local_engines_negatives_through_a_killed_replica(
    cluster: None, dataset: Path, tiny_llava_path: Path, local_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "negatives.jsonl"
    argv = bootstrap_args(dataset, tiny_llava_path, out, "--engine", "ray", "--replicas", "2")
    stop = threading.Event()
    kill = kill_a_replica_once_written(out, stop)
    try:
        assert main(argv) == 0
    finally:
        stop.set()

    assert "pid" in kill and kill["written"] < 24, f"the kill missed the run: {kill}"
    got = records(out)  # no id twice
    assert len(local_run) == 24  # 12 samples x 2 negatives, none empty
    assert sorted(got) == sorted(local_run)  # none lost
    for negative_id, negative in local_run.items():
        assert got[negative_id]["text"] == negative["text"], negative_id
        assert got[negative_id]["params"] == negative["params"], negative_id
    assert len({n["text"] for n in got.values()}) > 1  # sampled, not one text repeated
    statuses = {r["sample_id"]: r["status"] for r in records(Path(f"{out}.log.jsonl")).values()}
    assert statuses == {f"s{i:03d}": "ok" for i in range(12)}


def test_eval_on_ray_gives_the_local_engines_answers(
    cluster: None, dataset: Path, tiny_llava_path: Path, tmp_path: Path
) -> None:
    questions = tmp_path / "coco_pope_random.json"
    with questions.open("w") as handle:
        for i in range(6):
            record = {"question_id": i, "image": f"{i:03d}.png", "label": ["yes", "no"][i % 2]}
            handle.write(json.dumps({**record, "text": "Is there a cat in the image?"}) + "\n")
    answers = {}
    for engine in ("local", "ray"):
        argv = [
            "eval",
            "--bench",
            "pope",
            "--data",
            str(questions),
            "--model",
            str(tiny_llava_path),
        ]
        argv += ["--image-root", str(dataset.parent / "images"), "--out", str(tmp_path / engine)]
        argv += ["--batch-size", "2", "--max-new-tokens", "6", "--temperature", "0.7"]
        argv += ["--seed", "1", "--no-progress", "--engine", engine, "--replicas", "2"]
        assert main(argv) == 0
        answers[engine] = records(tmp_path / engine / "predictions.jsonl")

    assert len(answers["local"]) == 6
    assert answers["ray"] == answers["local"]  # same ids, same answers, same fields


def session_processes(session: int) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True)
    return [line for line in listing.stdout.splitlines() if line.split()[1] == str(session)]


@pytest.mark.slow  # ~40 s (a second interpreter and cluster): pytest tests/engine --runslow
def test_a_killed_driver_reruns_to_the_same_negatives_and_other_settings_are_refused(
    cluster: None,
    dataset: Path,
    tiny_llava_path: Path,
    local_run: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "negatives.jsonl"
    argv = bootstrap_args(dataset, tiny_llava_path, out, "--engine", "ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "bpo.cli", *argv, "--ray-address", "local"],
        env=env,
        start_new_session=True,  # its own process group: the driver and the Ray it started
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while lines(out) < 1 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        written = lines(out)
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert driver.returncode == -signal.SIGKILL and 1 <= written < 24, (driver.returncode, written)
    deadline = time.monotonic() + 30  # Ray's idle workers exit once their raylet is gone
    while session_processes(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_processes(driver.pid) == [], "Ray processes outlived the killed driver"

    # The rerun, on this module's cluster with another replica count, resumes.
    assert (
        main(bootstrap_args(dataset, tiny_llava_path, out, "--engine", "ray", "--replicas", "2"))
        == 0
    )
    got = records(out)  # no id twice
    assert {k: v["text"] for k, v in got.items()} == {k: v["text"] for k, v in local_run.items()}

    # The engine is no setting (a local rerun finds everything done); the seed is one.
    assert main(bootstrap_args(dataset, tiny_llava_path, out)) == 0
    assert records(out) == got
    capsys.readouterr()
    assert (
        main([*bootstrap_args(dataset, tiny_llava_path, out, "--engine", "ray"), "--seed", "4"])
        == 2
    )
    refusal = capsys.readouterr().err
    assert "other settings: seed 3 → 4" in refusal, refusal
    assert records(out) == got


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--replicas", "0"], "--replicas 0: need at least 1"),
        (["--gpus-per-replica", "1"], "need 1 GPUs; the cluster has 0"),
    ],
)
def test_options_that_cannot_run_are_refused_in_one_line(
    cluster: None,
    dataset: Path,
    tiny_llava_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    out = tmp_path / "negatives.jsonl"
    assert main(bootstrap_args(dataset, tiny_llava_path, out, "--engine", "ray", *flags)) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error, error
    assert not out.exists()
