"""The registry of tiny families: names, sizes, seeds, errors and the `bpo tiny-model` command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import bpo.tiny_models as tiny_models
from bpo.cli import main
from bpo.errors import ConfigError
from bpo.tiny_models import ARCHES, build_tiny_model, family, tiny_size

FAMILIES = (
    "llava",
    "llava-next",
    "llava-onevision",
    "qwen2-vl",
    "qwen2.5-vl",
    "qwen3-vl",
    "gemma3",
    "idefics3",
    "internvl",
    "mistral3",
    "mllama",
    "paligemma",
    "smolvlm",
)


def test_every_family_is_registered_under_its_own_name():
    assert set(ARCHES) == set(FAMILIES)
    for arch in ARCHES:
        found = family(arch)
        assert found.name == arch
        assert found.reference.count("/") == 1  # a hub id: owner/name
        assert found.model_class.endswith("ForConditionalGeneration")


def test_every_family_builds_here():
    # mistral3 needs Pixtral's processor, which bpo.compat makes load without torchvision.
    assert tiny_models.available_arches() == ARCHES


def test_unknown_arch_names_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"llava, llava-next, .*, smolvlm") as error:
        build_tiny_model("llama-vision", tmp_path)
    assert all(arch in str(error.value) for arch in ARCHES)
    assert not any(tmp_path.iterdir())


def test_unknown_or_bad_size_is_refused():
    with pytest.raises(ConfigError, match="hidden_size"):
        tiny_size("llava", hidden_sise=8)
    with pytest.raises(ConfigError, match="positive"):
        tiny_size("gemma3", hidden_size=0)
    with pytest.raises(ConfigError, match="positive"):
        tiny_size("gemma3", hidden_size=True)
    assert tiny_size("qwen3-vl", hidden_size=32).hidden_size == 32
    assert tiny_size("qwen3-vl").image_size == 96  # each family keeps its own defaults


def test_geometry_a_family_cannot_use_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="multiple of"):
        build_tiny_model("llava", tmp_path, image_size=30)
    with pytest.raises(ConfigError, match="even integer"):
        build_tiny_model("gemma3", tmp_path, image_size=24)  # 3x3 patches cannot pool 2x2


def test_a_family_unavailable_here_says_why(tmp_path, monkeypatch):
    real = tiny_models.family

    def unavailable(arch: str):
        return replace(real(arch), unavailable="its processor needs torchvision")

    monkeypatch.setattr(tiny_models, "family", unavailable)
    with pytest.raises(ConfigError, match=r"mistral3.*cannot be built here: its processor needs"):
        build_tiny_model("mistral3", tmp_path)
    assert "mistral3" not in tiny_models.available_arches()


@pytest.mark.parametrize("arch", ["qwen2-vl", "gemma3", "mllama"])
def test_same_seed_same_weights(tmp_path, arch):
    def weights(name, seed):
        return load_file(build_tiny_model(arch, tmp_path / name, seed=seed) / "model.safetensors")

    first, again, other = weights("a", 7), weights("b", 7), weights("c", 8)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_the_checkpoint_records_how_it_was_built(tiny_checkpoint):
    config = json.loads((tiny_checkpoint("smolvlm") / "config.json").read_text())
    assert config["bpo_tiny_model"]["arch"] == "smolvlm"
    assert config["bpo_tiny_model"]["seed"] == 0
    assert config["bpo_tiny_model"]["image_size"] == family("smolvlm").default_size.image_size


def test_importing_the_registry_loads_no_torch():
    code = (
        "import sys, bpo.tiny_models as t; t.family('gemma3'); t.tiny_size('mllama'); "
        "print([m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_lists_every_family_in_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["tiny-model", "--help"])
    printed = " ".join(capsys.readouterr().out.split())
    assert all(arch in printed for arch in ARCHES)


def test_cli_refuses_an_unknown_family_naming_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["tiny-model", "--arch", "llama-vision", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'llama-vision'" in error and "'paligemma'" in error
    assert not (tmp_path / "x").exists()


def test_cli_builds_and_smoke_tests(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["tiny-model", "--arch", "gemma3", "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "parameters:" in printed
    assert re.search(r"smoke: [1-8] new tokens", printed)
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
