"""What trains: LoRA on the language model's linear layers only, the projector on request."""

from __future__ import annotations

import re

import pytest
import torch
from peft import get_peft_model

from bpo.config import load_recipe
from bpo.errors import ConfigError
from bpo.train.model import (
    freeze_for_full_finetuning,
    load_model,
    lora_target_pattern,
    peft_config,
    projector_prefixes,
)

PROJECTORS = {
    "tiny_llava_path": "model.multi_modal_projector",
    "tiny_qwen2vl_path": "model.visual.merger",
}


@pytest.mark.parametrize("fixture", list(PROJECTORS))
def test_lora_adapts_the_language_model_and_the_projector_on_request(fixture, request):
    path = request.getfixturevalue(fixture)
    recipe = load_recipe(None, [f"model.name={path}", "lora.train_projector=true"])
    model = load_model(recipe.model)
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    pattern = re.compile(lora_target_pattern(model, None))
    adapted = [name for name in linear if pattern.fullmatch(name)]
    # Every linear layer of the language model, nothing of the vision side, not lm_head.
    assert adapted == [name for name in linear if ".language_model." in name]
    assert projector_prefixes(model) == [PROJECTORS[fixture]]

    peft_model = get_peft_model(model, peft_config(recipe, model))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable)
    projector = [n for n in trainable if PROJECTORS[fixture].split(".")[-1] in n]
    assert projector and all("modules_to_save" in n for n in projector)
    assert not any("vision_tower" in n or ".blocks." in n for n in trainable)


def test_chosen_target_modules_and_unknown_ones(tiny_llava_path):
    recipe = load_recipe(None, [f"model.name={tiny_llava_path}"])
    model = load_model(recipe.model)
    pattern = re.compile(lora_target_pattern(model, ["q_proj", "v_proj"]))
    adapted = [n for n, _ in model.named_modules() if pattern.fullmatch(n)]
    assert adapted and all(n.endswith(("q_proj", "v_proj")) for n in adapted)
    with pytest.raises(ConfigError, match="fc1 not among the language model's linear layers"):
        lora_target_pattern(model, ["fc1"])  # a CLIP layer


def test_full_finetuning_freezes_the_vision_side(tiny_llava_path):
    recipe = load_recipe(None, [f"model.name={tiny_llava_path}", "lora.enabled=false"])
    model = load_model(recipe.model)
    assert peft_config(recipe, model) is None
    freeze_for_full_finetuning(model, recipe)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.language_model.") for n in trainable)
    assert "lm_head.weight" in trainable
    assert not any("vision_tower" in n or "multi_modal_projector" in n for n in trainable)
