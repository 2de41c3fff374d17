"""`bpo.train.distributed`: FSDP's layers, and a DeepSpeed launch refused before any load."""

from __future__ import annotations

import pytest

from bpo.errors import ConfigError
from bpo.train.runner import train
from tests.train.conftest import tiny_recipe


def test_fsdp_wraps_the_layers_the_model_holds(tiny_llava_path):
    from transformers import AutoModelForImageTextToText

    from bpo.train.distributed import fsdp_layer_classes

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_path)
    # LLaVA declares CLIP's text embeddings (from CLIPModel), which its vision tower lacks:
    # accelerate's auto wrap refused the model for it.
    assert "CLIPTextEmbeddings" in model._no_split_modules
    assert fsdp_layer_classes(model) == [
        "CLIPEncoderLayer",
        "CLIPVisionEmbeddings",
        "LlamaDecoderLayer",
    ]


def test_deepspeed_with_another_mixed_precision_than_the_recipe_is_refused(
    tiny_llava_path, pair_data, tmp_path, monkeypatch
):
    # What accelerate launch sets with recipes/accelerate/zero2.yaml; tiny.yaml: float32.
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    recipe = tiny_recipe(tiny_llava_path, pair_data, tmp_path / "run", None)
    with pytest.raises(ConfigError, match="mixed_precision bf16 and the recipe trains in no"):
        train(recipe)
    assert not (tmp_path / "run").exists()
