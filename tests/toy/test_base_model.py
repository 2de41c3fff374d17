"""The toy base model: a tiny build saves, reloads like any checkpoint and generates."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from bpo.errors import ConfigError
from bpo.toy.base_model import BUILD_FILE, base_model_settings, build_base_model
from bpo.toy.world import ToyWorld

# Small enough for a few seconds a build; the stages and the code path are the real ones.
TINY: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "vision_hidden_size": 16,
    "vision_num_hidden_layers": 1,
    "vision_num_attention_heads": 2,
    "vision_steps": 3,
    "vision_batch_size": 8,
    "text_steps": 3,
    "text_batch_size": 8,
    "sft_steps": 3,
    "sft_batch_size": 4,
    "threads": 1,
}


@pytest.fixture(scope="module")
def tiny_base(toy_world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base_model(
        toy_world_dir, tmp_path_factory.mktemp("toy-base"), seed=0, progress=False, **TINY
    )


def test_build_reloads_with_auto_classes_and_generates(
    toy_world_dir: Path, tiny_base: Path
) -> None:
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        AutoProcessor,
        LlavaForConditionalGeneration,
    )

    from bpo.backends.base import GenerationRequest
    from bpo.backends.hf import HFBackend
    from bpo.data.images import load_image

    model = AutoModelForImageTextToText.from_pretrained(tiny_base)
    processor = AutoProcessor.from_pretrained(tiny_base)
    assert isinstance(model, LlavaForConditionalGeneration)
    assert processor.chat_template is not None
    assert model.config.bpo_toy_base["world"] == ToyWorld.load(toy_world_dir).fingerprint
    assert model.config.vision_config.patch_size == 12
    assert model.config.image_seq_length == (48 // 12) ** 2

    world = ToyWorld.load(toy_world_dir)
    samples = list(world.samples("test", task="caption"))[:2]
    backend = HFBackend(tiny_base, batch_size=2)
    requests = [
        GenerationRequest(
            messages=sample.prompt,
            image=load_image(sample.image or "", world.root),
            max_new_tokens=6,
            temperature=0,
        )
        for sample in samples
    ]
    completions = backend.complete(requests)
    assert all(1 <= c.completion_tokens <= 6 for c in completions)
    # The trained weights were saved: the tower differs from a fresh random one.
    torch.manual_seed(0)
    fresh = LlavaForConditionalGeneration(model.config).state_dict()
    trained = model.state_dict()
    patch = next(name for name in trained if name.endswith("patch_embedding.weight"))
    assert not torch.equal(fresh[patch], trained[patch])


def test_build_report(toy_world_dir: Path, tiny_base: Path) -> None:
    report = json.loads((tiny_base / BUILD_FILE).read_text())
    assert set(report["stages"]) == {"vision", "text", "sft"}
    probe = report["stages"]["vision"]["probe_accuracy"]
    assert set(probe) == set(ToyWorld.load(toy_world_dir).spec.names)
    assert all(0 <= accuracy <= 1 for accuracy in probe.values())
    assert report["settings"]["sft_steps"] == 3
    assert report["parameters"] > 0


def test_same_seed_same_weights_and_the_tower_stays_frozen_in_sft(
    toy_world_dir: Path, tiny_base: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    again = build_base_model(toy_world_dir, tmp_path / "again", seed=0, progress=False, **TINY)
    assert (again / "model.safetensors").read_bytes() == (
        tiny_base / "model.safetensors"
    ).read_bytes()

    longer = build_base_model(
        toy_world_dir, tmp_path / "longer", seed=0, progress=False, **{**TINY, "sft_steps": 5}
    )
    first, second = (
        load_file(tiny_base / "model.safetensors"),
        load_file(longer / "model.safetensors"),
    )
    tower = [name for name in first if "vision_tower" in name]
    language = [name for name in first if "language_model" in name]
    assert tower and language
    assert all(first[name].equal(second[name]) for name in tower)  # frozen after stage (a)
    assert not all(first[name].equal(second[name]) for name in language)


def test_settings_are_checked(toy_world_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown base-model setting"):
        base_model_settings(sft_stepz=3)
    with pytest.raises(ConfigError, match="integer"):
        base_model_settings(sft_steps=2.5)
    with pytest.raises(ConfigError, match="positive"):
        base_model_settings(sft_lr=0)
    with pytest.raises(ConfigError, match="no toy world"):
        build_base_model(tmp_path, tmp_path / "out")


def test_a_finished_build_is_not_redone(toy_world_dir: Path, tiny_base: Path) -> None:
    from bpo.toy.base_model import built_from

    before = (tiny_base / "model.safetensors").stat().st_mtime_ns
    assert build_base_model(toy_world_dir, tiny_base, seed=0, progress=False, **TINY) == tiny_base
    assert (tiny_base / "model.safetensors").stat().st_mtime_ns == before
    seed, world, settings = built_from(tiny_base) or (None, None, None)
    assert (seed, world) == (0, ToyWorld.load(toy_world_dir).fingerprint)
    assert settings == asdict(base_model_settings(**TINY))


def test_pixel_values_skip_only_identity_resizing(toy_world_dir: Path, tiny_base: Path) -> None:
    import torch
    from transformers import AutoProcessor

    from bpo.data.images import load_image
    from bpo.toy.base_model import _pixel_values

    processor = AutoProcessor.from_pretrained(tiny_base)
    world = ToyWorld.load(toy_world_dir)
    samples = list(world.samples("test", task="caption"))[:8]
    images = [load_image(s.image or "", world.root) for s in samples]
    full = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.equal(_pixel_values(processor, world, samples), full)
