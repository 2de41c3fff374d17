"""Recipes: YAML + dotted overrides, loud errors naming the key and the file, round trips."""

from __future__ import annotations

import math

import pytest

from bpo.cli import main
from bpo.config import (
    Recipe,
    TrainConfig,
    describe,
    load_recipe,
    recipe_to_dict,
    save_recipe,
)
from bpo.errors import ConfigError


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "model:\n  name: some/model\n"
        "train:\n  learning_rate: 2e-6\n  loss_type: ipo\n"  # 2e-6: a string to PyYAML
        "lora:\n  target_modules: [q_proj, v_proj]\n"
    )
    return path


def test_values_come_from_the_file_then_the_overrides(recipe_file):
    recipe = load_recipe(recipe_file)
    assert recipe.model.name == "some/model"
    assert recipe.train.learning_rate == pytest.approx(2e-6)
    assert recipe.train.loss_type == ["ipo"]  # a lone value stands for a list of one
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.lora.r == Recipe().lora.r  # untouched keys keep their defaults

    recipe = load_recipe(
        recipe_file,
        ["train.learning_rate=1e-5", "lora.r=8", "lora.target_modules=null", "train.bf16=true",
         "train.trl.ld_alpha=0.5", "model.processor_kwargs={max_pixels: 3136}"],
    )  # fmt: skip
    assert recipe.train.learning_rate == pytest.approx(1e-5)
    assert recipe.lora.r == 8 and recipe.lora.target_modules is None
    assert recipe.train.bf16 is True
    assert recipe.train.trl == {"ld_alpha": 0.5}
    assert recipe.model.processor_kwargs == {"max_pixels": 3136}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "train:\n  learnin_rate: 1.0\n",
            r"unknown key 'train.learnin_rate'; did you mean 'train.learning_rate'",
        ),
        ("trian:\n  seed: 1\n", r"unknown key 'trian'; did you mean 'train'"),
        ("lora:\n  r: eight\n", r"lora.r: expected int, got 'eight'"),
        ("train:\n  bf16: 1\n", r"train.bf16: expected bool or null, got 1"),
        ("train:\n  loss_type: [sigmoid, dpo]\n", r"train.loss_type: 'dpo' is not one of"),
        ("model:\n  dtype: fp8\n", r"model.dtype: 'fp8' is not one of"),
        ("lora: 8\n", r"lora must be a mapping"),
        ("- a\n- b\n", r"a recipe must be a mapping"),
        ("train:\n  loss_type: [sigmoid, sft]\n  loss_weights: [1.0]\n", r"2 loss types"),
    ],
)
def test_bad_recipes_are_refused_naming_the_key_and_the_file(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_recipe(path)
    assert "bad.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "train.lerning_rate=1",
            r"override 'train.lerning_rate=1': unknown key 'train.lerning_rate'",
        ),
        ("lora.r=1.5", r"override 'lora.r=1.5': lora.r: expected int"),
        ("lora.r", r"expected key=value"),
        ("train.seed.x=1", r"train.seed is not a section"),
    ],
)
def test_bad_overrides_are_refused_naming_the_override(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_recipe(None, [override])


def test_a_saved_recipe_loads_back_the_same(recipe_file, tmp_path):
    recipe = load_recipe(recipe_file, ["train.trl.ld_alpha=0.5", "data.max_length=null"])
    path = save_recipe(recipe, tmp_path / "run" / "config.yaml")
    assert recipe_to_dict(load_recipe(path)) == recipe_to_dict(recipe)


def test_rpo_is_dpo_plus_a_weighted_sft_term():
    recipe = load_recipe(None, ["train.loss_type=[rpo, hinge]", "train.loss_weights=[1.0, 0.5]",
                                "train.rpo_alpha=2"])  # fmt: skip
    assert recipe.loss_types() == (["sigmoid", "sft", "hinge"], [1.0, 2.0, 0.5])


def test_every_key_has_help_text():
    keys = list(describe())
    assert {"model.name", "data.pairs", "lora.r", "train.learning_rate"} <= {k for k, *_ in keys}
    assert all(help_text.strip() for *_, help_text in keys)
    default = {key: value for key, _, value, _ in describe(TrainConfig)}
    assert math.isclose(default["learning_rate"], 2e-6)  # the BPO release's


def test_cli_prints_the_resolved_recipe_and_refuses_unknown_keys(recipe_file, capsys):
    assert main(["train", "--config", str(recipe_file), "lora.r=4", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "r: 4" in out and "some/model" in out
    assert main(["train", "--config", str(recipe_file), "lora.rank=4"]) == 2
    assert "unknown key 'lora.rank'" in capsys.readouterr().err
    assert main(["train", "--help-config"]) == 0
    assert "train.precompute_reference" in capsys.readouterr().out
