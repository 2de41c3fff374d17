"""The README's tour of the CLI, every command as written, on tiny data (slow).

The commands are read from the README's bash block under "A tour of the CLI" and run
in order, in a folder holding what they name: photo.png, samples.json and images/,
pope/ and val2014/, llava_instruct.json and coco/train2017/, and the repo's recipes/.
Two things stand in for a GPU machine: ``bpo train`` and ``bpo run`` get overrides
for the tiny model on a CPU (the recipes name a 7B hub model in bf16), and
``bpo serve ... &`` is started in the background and stopped at the end. A comment
line (``# ...``) is not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.bootstrap.conftest import CAPTIONS

REPO = Path(__file__).resolve().parents[1]
# The tiny model and a CPU, in place of the recipes' 7B model on a GPU.
ON_A_CPU = [
    "model.name=runs/tiny-llava",
    "model.dtype=float32",
    "train.bf16=false",
    "train.max_steps=2",
    "train.logging_steps=1",
    "train.dataloader_num_workers=0",
]
RUN_ON_A_CPU = [*ON_A_CPU, "bootstrap.max_new_tokens=8", "eval.max_new_tokens=8"]


def tour_commands() -> list[str]:
    """The tour's commands, continuation lines joined, comments and blank lines left out."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## A tour of the CLI") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "no bash block in the tour"
    joined = block.group(1).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split("  #")[0].strip()  # a trailing comment
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def make_inputs(root: Path) -> None:
    """Every file the tour names, small: real photos from skimage.data."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    Image.fromarray(photos[0]).resize((96, 96)).save(root / "photo.png")
    for folder in ("images", "val2014", "coco/train2017"):
        (root / folder).mkdir(parents=True)
    samples = []
    for i, photo in enumerate(photos):
        name = f"{i:03d}.jpg"
        Image.fromarray(photo).resize((64, 64)).save(root / "images" / name)
        Image.fromarray(photo).resize((64, 64)).save(root / "coco" / "train2017" / name)
        coco = f"COCO_val2014_{i + 1:012d}.jpg"
        Image.fromarray(photo).resize((64, 64)).save(root / "val2014" / coco)
        samples.append(
            {
                "id": f"s{i}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the image briefly."},
                    {"from": "gpt", "value": CAPTIONS[i]},
                ],
            }
        )
    for name in ("samples.json", "llava_instruct.json"):
        (root / name).write_text(json.dumps(samples), encoding="utf-8")
    (root / "pope").mkdir()
    for split in ("random", "adversarial"):
        rows = [
            {
                "question_id": k,
                "image": f"COCO_val2014_{k + 1:012d}.jpg",
                "text": f"Is there a {thing} in the image?",
                "label": label,
            }
            for k, (thing, label) in enumerate((("person", "yes"), ("cat", "no"), ("cup", "yes")))
        ]
        with open(root / "pope" / f"coco_pope_{split}.json", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    (root / "recipes").symlink_to(REPO / "recipes")


def wait_for(url: str, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "bpo serve exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.mark.slow
def test_every_command_of_the_tour_runs_as_written(tmp_path: Path) -> None:
    make_inputs(tmp_path)
    bpo = str(Path(sys.executable).parent / "bpo")
    env = {**os.environ, "PATH": f"{Path(bpo).parent}{os.pathsep}{os.environ['PATH']}"}
    commands = tour_commands()
    assert len(commands) >= 15, commands
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            words = shlex.split(command)
            assert words[0] == "bpo", f"the tour runs bpo only: {command}"
            if words[1] in ("train", "run"):
                words += ON_A_CPU if words[1] == "train" else RUN_ON_A_CPU
            if words[-1] == "&":
                server = subprocess.Popen(words[:-1], cwd=tmp_path, env=env)
                servers.append(server)
                wait_for("http://127.0.0.1:8000/health", server)
                continue
            done = subprocess.run(
                words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
            )
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    finally:
        for server in servers:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    for made in (
        "negatives.jsonl",
        "injected.jsonl",
        "llm.jsonl",
        "shards/injected.jsonl",
        "pairs.jsonl",
        "pairs_trl",
        "pairs_llamafactory.json",
        "runs/bpo/adapter",
        "runs/bpo-merged/config.json",
        "eval/base/results.json",
        "eval/bpo/results.json",
        "runs/bpo/report.html",
        "runs/llava-bpo/report.html",
    ):
        assert (tmp_path / made).exists(), made
