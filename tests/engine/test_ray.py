"""--engine ray on a local Ray cluster: the local engine's records, through kills and reruns.

One cluster for the module (``ray.init(num_cpus=2)``, the size of a CI runner), two
replicas of the tiny LLaVA. Each test compares with one local-engine run of the same
command (`local_run`): id by id, text by text.
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
from bpo.errors import ConfigError
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


def test_bootstrap_on_ray_writes_the_local_engines_negatives(
    cluster: None, dataset: Path, tiny_llava_path: Path, local_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "negatives.jsonl"
    argv = bootstrap_args(dataset, tiny_llava_path, out, "--engine", "ray", "--replicas", "2")
    assert main(argv) == 0

    got = records(out)
    assert len(local_run) == 24  # 12 samples x 2 negatives, none empty
    assert sorted(got) == sorted(local_run)
    for negative_id, negative in local_run.items():
        assert got[negative_id]["text"] == negative["text"], negative_id
        assert got[negative_id]["params"] == negative["params"], negative_id
    assert len({n["text"] for n in got.values()}) > 1  # sampled, not one text repeated
    statuses = {r["sample_id"]: r["status"] for r in records(Path(f"{out}.log.jsonl")).values()}
    assert statuses == {f"s{i:03d}": "ok" for i in range(12)}
