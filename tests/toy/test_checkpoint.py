"""The base model shipped in the package: a standard checkpoint, and what the code rebuilds."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from bpo.toy.base_model import (
    BUILD_FILE,
    SHIPPED_SEED,
    SHIPPED_WORLD_SEED,
    BaseModelSettings,
    build_base_model,
    shipped_checkpoint,
)
from bpo.toy.world import ToyWorld, write_world


def test_shipped_checkpoint_is_small_and_records_how_it_was_built() -> None:
    path = shipped_checkpoint()
    assert sum(f.stat().st_size for f in path.iterdir()) < 5 * 1024 * 1024
    report = json.loads((path / BUILD_FILE).read_text())
    assert report["seed"] == SHIPPED_SEED
    assert report["world_seed"] == SHIPPED_WORLD_SEED
    assert report["settings"] == asdict(BaseModelSettings())  # the defaults: rebuildable


def test_shipped_checkpoint_loads_and_captions_a_toy_scene(toy_world_dir: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from bpo.data.images import load_image
    from bpo.data.records import chat_messages
    from bpo.lexicon import ObjectLexicon

    model = AutoModelForImageTextToText.from_pretrained(shipped_checkpoint())
    processor = AutoProcessor.from_pretrained(shipped_checkpoint())
    world = ToyWorld.load(toy_world_dir)
    sample = next(world.samples("test", task="caption"))
    prompt = processor.apply_chat_template(
        chat_messages(sample.prompt, with_image=True), add_generation_prompt=True
    )
    inputs = processor(
        images=[load_image(sample.image or "", world.root)],
        text=[prompt],
        add_special_tokens=False,
        return_tensors="pt",
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=32, do_sample=False)
    text = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    # A trained model: it lists objects of the world, and the large ones it sees.
    named = ObjectLexicon.default().objects(text)
    assert named and named <= set(world.spec.names)
    large = set(sample.meta["objects"]) - set(world.spec.dependents)
    assert large <= named


@pytest.mark.slow
def test_rebuilding_from_scratch_gives_the_shipped_weights(tmp_path: Path) -> None:
    world = write_world(tmp_path / "world", seed=SHIPPED_WORLD_SEED, progress=False)
    report = json.loads((shipped_checkpoint() / BUILD_FILE).read_text())
    assert ToyWorld.load(world).fingerprint == report["world"]
    rebuilt = build_base_model(world, tmp_path / "base", seed=SHIPPED_SEED, progress=False)
    # Bit for bit on the CPU type and torch build that wrote the checkpoint (see the note
    # in bpo.toy.base_model.shipped_checkpoint); elsewhere float rounding may differ.
    shipped = (shipped_checkpoint() / "model.safetensors").read_bytes()
    assert (rebuilt / "model.safetensors").read_bytes() == shipped
