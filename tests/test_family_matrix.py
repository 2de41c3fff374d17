"""Every stage on every VLM family of `bpo.tiny_models`: the family × stage matrix.

For each family, on its tiny checkpoint and two real photos: bootstrap through the hf
backend (image-weakening) and without a model (co-occurrence), pairs, training with
LoRA and in full (the reference log-probs cached), `bpo export --merge` and a reload
with `from_pretrained`, evaluation of the merged model, and `bpo serve` answering an
image request over HTTP (a real server process on loopback). The README's family
table is this test's result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import bpo
from bpo.backends import GenerationRequest
from bpo.cli import main
from bpo.tiny_models import available_arches
from tests.bootstrap.conftest import write_dataset
from tests.servers import wait_for_url

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def train_overrides(model: Path, pairs: Path, images: Path) -> list[str]:
    return [
        f"model.name={model}",
        f"data.pairs={pairs}",
        f"data.image_root={images}",
        "train.max_steps=1",
        "train.logging_steps=1",
    ]


def serve_answers(model: Path, image: Path, folder: Path) -> str:
    """One chat completion with an image from `bpo serve --model model`, in its own process."""
    from PIL import Image

    from bpo.backends.openai import OpenAIBackend

    stderr = folder / "serve.err"
    argv = [sys.executable, "-m", "bpo.cli", "serve", "--model", str(model), "--port", "0"]
    argv += ["--served-model-name", "tiny"]
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr.open("w"), text=True)
    try:
        url = wait_for_url(popen, stderr)
        client = OpenAIBackend("tiny", base_url=f"{url}/v1")
        messages = [{"role": "user", "content": "Describe the image."}]
        request = GenerationRequest(messages, image=Image.open(image), max_new_tokens=4)
        (text,) = client.generate([request])
        client.close()
        return text
    finally:
        popen.terminate()
        popen.wait(timeout=60)


@pytest.mark.parametrize("arch", available_arches())
def test_every_stage_runs_on_the_family(
    arch: str, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForImageTextToText

    model = tiny_checkpoint(arch)
    samples = write_dataset(tmp_path / "data", 2)
    images = samples.parent / "images"

    weakened = bpo.bootstrap(
        samples,
        strategy="image-weakening",
        out=tmp_path / "iw.jsonl",
        model=model,
        image_root=images,
        max_new_tokens=4,
        no_progress=True,
    )
    assert weakened.samples_done == 2
    bpo.bootstrap(samples, strategy="cooccurrence", out=tmp_path / "co.jsonl", num_negatives=2)
    stats = bpo.pairs(
        samples, [tmp_path / "iw.jsonl", tmp_path / "co.jsonl"], out=tmp_path / "p.jsonl"
    )
    assert stats.written >= 2

    overrides = train_overrides(model, tmp_path / "p.jsonl", images)
    lora = bpo.train(
        config=RECIPES / "tiny.yaml", overrides=overrides, output_dir=tmp_path / "lora"
    )
    assert lora.global_step == 1 and lora.reference is not None
    full = bpo.train(
        config=RECIPES / "tiny.yaml",
        overrides=[*overrides, "lora.enabled=false"],
        output_dir=tmp_path / "full",
    )
    assert full.global_step == 1 and full.output.name == "model"

    merged = tmp_path / "merged"
    assert main(["export", str(tmp_path / "lora"), "--merge", "--out", str(merged)]) == 0
    reloaded = AutoModelForImageTextToText.from_pretrained(merged)
    assert (
        reloaded.config.model_type
        == AutoModelForImageTextToText.from_pretrained(model).config.model_type
    )

    chair = tmp_path / "chair.jsonl"
    chair.write_text(json.dumps({"id": "c0", "image": "000.png", "objects": ["person"]}) + "\n")
    results = bpo.evaluate(
        bench="chair",
        data=chair,
        image_root=images,
        model=merged,
        max_new_tokens=4,
        out=tmp_path / "eval",
        no_progress=True,
    )
    assert results["counts"]["answered"] == 1

    assert isinstance(serve_answers(merged, images / "000.png", tmp_path), str)
