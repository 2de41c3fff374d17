"""Pairs on real photos and recipes for the tiny models, shared by the training tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bpo.config import Recipe, load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
CHOSEN = {
    "astronaut": "An astronaut in a white suit stands in front of a flag.",
    "chelsea": "A brown cat with stripes looks to the left.",
    "coffee": "A cup of coffee sits on a white plate.",
    "rocket": "A rocket stands on the launch pad under a blue sky.",
}
# Launched runs (2 processes, float32 on CPU) against `one_process_run`: they differ only
# in the order of the sums (the gradient mean over processes, FSDP's reduce-scatter).
# Measured: losses within 6e-7, reward margins within 1.2e-6 over the 4 steps.
LOSS_TOLERANCE = 1e-5
REJECTED = (
    "There are two dogs and a red car next to the table.",
    "A man is holding a knife and a fork in the kitchen.",
)


@dataclass
class PairData:
    """A pairs JSONL file and the image folder its paths are relative to."""

    pairs: Path
    image_root: Path
    rows: list[dict[str, Any]]


def write_pairs(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def pair_data(tmp_path_factory: pytest.TempPathFactory, photo_by_name: Any) -> PairData:
    """8 pairs on 4 photos of skimage.data, one with a system prompt and an earlier turn."""
    root = tmp_path_factory.mktemp("pairs")
    images = root / "images"
    images.mkdir()
    for name in PHOTOS:
        photo_by_name(name).resize((64, 48)).save(images / f"{name}.jpg")
    rows = []
    for k, rejected in enumerate(REJECTED):
        for name in PHOTOS:
            prompt = [{"role": "user", "content": "Describe the image in detail."}]
            if name == "coffee" and k == 1:
                prompt = [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "What is this?"},
                    {"role": "assistant", "content": "A photo."},
                    {"role": "user", "content": "What is on the plate?"},
                ]
            rows.append(
                {
                    "id": f"{name}/llm-injection/{k}",
                    "image": f"{name}.jpg",
                    "prompt": prompt,
                    "chosen": CHOSEN[name],
                    "rejected": rejected,
                    "strategy": "llm-injection",
                }
            )
    return PairData(write_pairs(root / "pairs.jsonl", rows), images, rows)


@pytest.fixture(scope="session")
def train_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the session: tokenized pairs and reference log-probs are reused."""
    return tmp_path_factory.mktemp("train-cache")


@pytest.fixture(scope="session")
def one_process_run(
    tiny_llava_path: Path, pair_data: PairData, train_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:  # fmt: skip
    """recipes/tiny.yaml in one process with the global batch of 2 processes of 2 pairs.

    2 pairs a micro-batch, 2 micro-batches a step: in each step the pairs that 2 processes
    take, padded the same way (each process pads its own 2). The runs under
    ``accelerate launch`` are compared with it.
    """
    from bpo.train.runner import train

    out = tmp_path_factory.mktemp("one-process")
    recipe = tiny_recipe(
        tiny_llava_path, pair_data, out, train_cache, "train.gradient_accumulation_steps=2"
    )
    return train(recipe)


def tiny_recipe(
    model: Path, data: PairData, output_dir: Path, cache: Path | None, *overrides: str
) -> Recipe:
    """recipes/tiny.yaml on `model` and `data`, writing to `output_dir`."""
    base = [
        f"model.name={model}",
        f"data.pairs={data.pairs}",
        f"data.image_root={data.image_root}",
        f"train.output_dir={output_dir}",
    ]
    if cache is not None:
        base.append(f"data.cache_dir={cache}")
    return load_recipe(RECIPES / "tiny.yaml", [*base, *overrides])


def accelerate_launch(
    config: str, model: Path, data: PairData, output_dir: Path, *overrides: str,
    processes: int = 2, entry: str = "bpo.cli", launch_args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`bpo train` on recipes/tiny.yaml under ``accelerate launch`` with a shipped config.

    `config` names a file of recipes/accelerate (``"ddp"``, ``"fsdp"`` ...); `entry` is the
    module run (`tests.train.fsdp_on_cpu` lets FSDP run on CPU); `launch_args` go to
    ``accelerate launch`` (``--mixed_precision no`` ...). The processes run on CPU (gloo),
    one thread each, from the repository root.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch",
        "--config_file", str(RECIPES / "accelerate" / f"{config}.yaml"),
        "--num_processes", str(processes), "--main_process_port", str(port), *launch_args,
        "-m", entry, "train", "--config", str(RECIPES / "tiny.yaml"),
        f"model.name={model}", f"data.pairs={data.pairs}",
        f"data.image_root={data.image_root}", f"train.output_dir={output_dir}", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=300, cwd=RECIPES.parent
    )
