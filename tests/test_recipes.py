"""Every shipped recipe and accelerate config loads and holds what it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpo.config import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RECIPE_FILES = sorted(RECIPES.glob("*.yaml"))
ACCELERATE_FILES = sorted((RECIPES / "accelerate").glob("*.yaml"))

# The BPO release's DPO settings (the released LLaVA-1.5 training scripts).
RELEASE = {
    ("lora", "r"): 32,
    ("lora", "alpha"): 256,
    ("lora", "dropout"): 0.05,
    ("train", "learning_rate"): 2e-6,
    ("train", "lr_scheduler_type"): "cosine",
    ("train", "warmup_ratio"): 0.03,
    ("train", "num_train_epochs"): 2,
    ("train", "beta"): 0.1,
    ("train", "per_device_train_batch_size"): 4,
    ("train", "bf16"): True,
    ("train", "gradient_checkpointing"): True,
    ("data", "max_length"): 2048,
}
MODELS = {
    "llava-1.5-7b": "llava-hf/llava-1.5-7b-hf",
    "llava-1.5-13b": "llava-hf/llava-1.5-13b-hf",
    "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2-vl-7b": "Qwen/Qwen2-VL-7B-Instruct",
    "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen3-vl-8b": "Qwen/Qwen3-VL-8B-Instruct",
    "gemma-3-4b": "google/gemma-3-4b-it",
    "gemma-3-12b": "google/gemma-3-12b-it",
    "internvl3-8b": "OpenGVLab/InternVL3-8B-hf",
    "smolvlm2-2.2b": "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
    "llava-onevision-7b": "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    "paligemma2-3b": "google/paligemma2-3b-mix-448",
    "llama-3.2-11b-vision": "meta-llama/Llama-3.2-11B-Vision-Instruct",
}
# Where a recipe leaves the release's settings, and why (each recipe's header says more).
DEVIATIONS = {
    # An image costs LLaVA-OneVision up to 7371 tokens, which bpo never cuts; 4 pairs per
    # device per step are kept as 1 x 4 accumulation steps.
    "llava-onevision-7b": {
        ("data", "max_length"): 8192,
        ("train", "per_device_train_batch_size"): 1,
    },
}


def test_the_promised_recipes_ship():
    assert {path.stem for path in RECIPE_FILES} >= {*MODELS, "tiny"}
    assert {path.stem for path in ACCELERATE_FILES} >= {"ddp", "zero2", "zero3"}


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_every_recipe_loads(path):
    recipe = load_recipe(path)  # unknown keys and wrong types raise
    assert recipe.model.name and recipe.data.pairs and recipe.train.output_dir
    assert recipe.lora.enabled


@pytest.mark.parametrize("name", list(MODELS))
def test_model_recipes_use_the_release_settings(name):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.model.name == MODELS[name]
    assert recipe.model.dtype == "bfloat16"
    for (section, key), value in {**RELEASE, **DEVIATIONS.get(name, {})}.items():
        assert getattr(getattr(recipe, section), key) == pytest.approx(value), f"{section}.{key}"
    assert recipe.train.loss_type == ["sigmoid"] and recipe.train.precompute_reference
    # The release's 4 pairs per device per optimizer step, however they are split.
    train = recipe.train
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps == 4
    # The vision tower stays frozen and the projector is not trained, as in the release.
    assert recipe.lora.enabled and not recipe.lora.train_projector


def test_tiny_recipe_builds_its_trl_config():
    from bpo.train.runner import dpo_config

    recipe = load_recipe(RECIPES / "tiny.yaml", ["train.output_dir=/tmp/unused"])
    args = dpo_config(recipe)
    assert args.use_cpu and not args.bf16 and args.max_steps == recipe.train.max_steps
    assert args.loss_type == ["sigmoid"] and args.precompute_ref_log_probs is False


@pytest.mark.parametrize("path", ACCELERATE_FILES, ids=lambda p: p.stem)
def test_accelerate_configs_load_with_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))  # accelerate's own loader: unknown keys raise
    expected = {
        "ddp": ("MULTI_GPU", None),
        "fsdp": ("FSDP", None),
        "zero2": ("DEEPSPEED", 2),
        "zero3": ("DEEPSPEED", 3),
    }
    distributed, stage = expected[path.stem]
    assert str(config.distributed_type).endswith(distributed)
    assert config.num_machines == 1 and config.use_cpu is False
    if stage is not None:
        assert config.deepspeed_config["zero_stage"] == stage
        assert config.mixed_precision == "bf16"
    if stage == 3:
        assert config.deepspeed_config["zero3_save_16bit_model"] is True
    if distributed == "FSDP":
        fsdp = config.fsdp_config
        assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        # bpo names the layers from the model (bpo.train.distributed); export reads checkpoints.
        assert "fsdp_transformer_layer_cls_to_wrap" not in fsdp
        assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
