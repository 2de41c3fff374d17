"""Safe model loading: safetensors by default, no shipped code, clear errors for bad paths.

Every checkpoint here is real and on disk: the tiny LLaVA saved by `save_pretrained`,
its weights re-saved with `torch.save` (a pickle, as transformers 4 wrote
``pytorch_model.bin``), a PEFT adapter, a folder whose config maps to custom code.
`torch.load` is replaced by a trap in the refusal tests, so they prove the refusal comes
before anything is unpickled.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from bpo.checkpoints import ModelSource, UnsafeCheckpointError, load_adapter, resolve_model_path
from bpo.config import ModelConfig
from bpo.errors import BpoError, ConfigError


def _copy_without_weights(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    return target


@pytest.fixture(scope="module")
def tiny_state(tiny_llava_path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(tiny_llava_path / "model.safetensors"))


@pytest.fixture(scope="module")
def pickle_model(tiny_llava_path: Path, tiny_state, tmp_path_factory) -> Path:
    """The tiny LLaVA with its weights in pytorch_model.bin (torch.save) and no safetensors."""
    folder = _copy_without_weights(tiny_llava_path, tmp_path_factory.mktemp("pickle") / "model")
    torch.save(tiny_state, folder / "pytorch_model.bin")
    return folder


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any torch.load a test failure: a refusal must come before unpickling."""

    def trap(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"torch.load was called on {args[:1]}")

    monkeypatch.setattr(torch, "load", trap)


# --- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("./does/not/exist", "no such directory"),
        ("a/b/c", "not a Hugging Face hub id"),
        ("", "no model given"),
        ("   ", "no model given"),
        ("org/na--me", "not a Hugging Face hub id"),
    ],
)
def test_a_path_that_is_no_model_is_a_clear_error(model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        resolve_model_path(model)
    assert repr(model) in str(error.value) or not model.strip()


def test_a_file_is_not_a_model(tiny_llava_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a file"):
        resolve_model_path(tiny_llava_path / "config.json")


def test_folders_and_hub_ids_resolve(tiny_llava_path: Path) -> None:
    assert resolve_model_path(tiny_llava_path) == str(tiny_llava_path)
    assert resolve_model_path("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"


def test_a_hub_id_offline_and_not_cached_is_a_clear_error(offline_hub) -> None:
    from bpo.backends.hf import HFBackend
    from bpo.train.model import load_model

    name = "bpo-tests/not-a-cached-model"
    for load in (lambda: HFBackend(name), lambda: load_model(ModelConfig(name=name))):
        with pytest.raises(ConfigError) as error:
            load()
        message = str(error.value)
        assert name in message and "Hugging Face hub" in message and "offline" in message
        assert "\n" not in message  # one line, not transformers' paragraph


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline mode with an empty hub cache of our own; returns the cache folder."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _cache_repo(cache: Path, repo_id: str, files: Path) -> None:
    """Put `files` in the hub cache as the snapshot of `repo_id` at main (huggingface_hub layout)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(files, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


# --- pickle-based weights -------------------------------------------------------------------


def test_pickle_weights_are_refused_before_unpickling(pickle_model: Path, no_unpickling) -> None:
    from bpo.backends.hf import HFBackend
    from bpo.train.model import load_model

    loads = (
        lambda: HFBackend(pickle_model),
        lambda: load_model(ModelConfig(name=str(pickle_model))),
        lambda: ModelSource.resolve(pickle_model),
    )
    for load in loads:
        with pytest.raises(UnsafeCheckpointError) as error:
            load()
        message = str(error.value)
        assert "pytorch_model.bin" in message and "--allow-pickle" in message
        assert "model.allow_pickle" in message and "safetensors" in message


def test_pickle_weights_load_when_allowed(pickle_model: Path, tiny_llava_path: Path) -> None:
    from bpo.backends import get_backend
    from bpo.commands.options import add_model_options, backend_options
    from bpo.train.model import load_model

    parser = argparse.ArgumentParser()
    add_model_options(parser, title="model")
    args = parser.parse_args(["--model", str(pickle_model), "--allow-pickle"])
    options = backend_options("hf", args, base_url=None, api_key_env="", batch_size=2)
    assert options["allow_pickle"] is True and options["trust_remote_code"] is False
    backend: Any = get_backend("hf", model=args.model, **options)
    trained = load_model(ModelConfig(name=str(pickle_model), allow_pickle=True))
    reference = load_model(ModelConfig(name=str(tiny_llava_path))).state_dict()
    for model in (backend.model, trained):
        state = model.state_dict()
        assert state.keys() == reference.keys()
        for name, tensor in reference.items():
            assert torch.equal(state[name], tensor), name
    assert parser.parse_args([]).allow_pickle is False  # off unless asked


@pytest.mark.parametrize(
    "name", ["model.pt", "consolidated.pth", "pytorch_model-00001-of-00002.bin"]
)
def test_any_pickle_weights_file_is_named(tiny_llava_path: Path, tmp_path: Path, name) -> None:
    folder = _copy_without_weights(tiny_llava_path, tmp_path / "model")
    (folder / name).write_bytes(b"not even read")
    (folder / "optimizer.pt").write_bytes(b"a trainer's state, not weights")
    with pytest.raises(UnsafeCheckpointError, match=re.escape(name)) as error:
        ModelSource.resolve(folder)
    assert "optimizer.pt" not in str(error.value)


def test_a_folder_without_weights(tiny_llava_path: Path, tmp_path: Path) -> None:
    folder = _copy_without_weights(tiny_llava_path, tmp_path / "model")
    with pytest.raises(ConfigError, match="no model weights"):
        ModelSource.resolve(folder)
    assert ModelSource.resolve(folder, weights=False).is_local  # a processor needs none


def test_config_naming_pickle_weights_is_refused(
    tiny_llava_path: Path, tmp_path: Path, tiny_state, no_unpickling
) -> None:
    """config.json's transformers_weights makes transformers load that file whatever
    use_safetensors says; the safetensors file beside it must not make it pass."""
    folder = Path(shutil.copytree(tiny_llava_path, tmp_path / "model"))
    (folder / "adapter_model.bin").write_bytes(b"never read")
    config = json.loads((folder / "config.json").read_text())
    config["transformers_weights"] = "adapter_model.bin"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeCheckpointError, match=r"transformers_weights: adapter_model\.bin"):
        ModelSource.resolve(folder).load_config()


def test_a_pickle_adapter_is_refused_unless_allowed(
    tiny_llava_path: Path, tmp_path: Path, monkeypatch
) -> None:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_path)
    adapter = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    adapter.save_pretrained(tmp_path / "adapter")
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()
    torch.save(weights, tmp_path / "adapter" / "adapter_model.bin")

    base = AutoModelForImageTextToText.from_pretrained(tiny_llava_path)
    with (
        monkeypatch.context() as patch,
        pytest.raises(UnsafeCheckpointError, match=r"adapter_model\.bin.*--allow-pickle"),
    ):
        patch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled"))
        load_adapter(base, tmp_path / "adapter", allow_pickle=False)
    loaded = load_adapter(base, tmp_path / "adapter", allow_pickle=True)
    assert any("lora_A" in name for name, _ in loaded.named_parameters())
    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        load_adapter(base, tiny_llava_path, allow_pickle=True)


# --- code shipped with a checkpoint ---------------------------------------------------------


@pytest.fixture
def remote_code_model(tiny_llava_path: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint whose config maps to its own code; importing that code leaves a marker."""
    folder = Path(shutil.copytree(tiny_llava_path, tmp_path / "custom"))
    marker = tmp_path / "code-ran"
    code = f"open({str(marker)!r}, 'w').close()\n"
    for module in ("configuration_custom", "modeling_custom"):
        (folder / f"{module}.py").write_text(code)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "bpo-custom-vlm"
    config["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForImageTextToText": "modeling_custom.CustomModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_shipped_code_is_refused_without_the_flag(remote_code_model) -> None:
    from bpo.backends.hf import HFBackend
    from bpo.train.model import load_model, load_processor

    folder, marker = remote_code_model
    loads = (
        lambda: HFBackend(folder),
        lambda: load_model(ModelConfig(name=str(folder))),
        lambda: load_processor(ModelConfig(name=str(folder))),
    )
    for load in loads:
        with pytest.raises(UnsafeCheckpointError) as error:
            load()
        message = str(error.value)
        assert "configuration_custom.CustomConfig" in message and "--trust-remote-code" in message
        assert "model.trust_remote_code" in message
    assert not marker.exists()
    ModelSource.resolve(folder, trust_remote_code=True)  # asked for: the check lets it through


def test_shipped_code_transformers_finds_is_refused_too(tiny_llava_path, tmp_path) -> None:
    """A processor that maps to custom code (a built-in model type, so the config check passes):
    transformers' own refusal becomes the same clear error."""
    from bpo.train.model import load_processor

    folder = Path(shutil.copytree(tiny_llava_path, tmp_path / "custom-processor"))
    config = json.loads((folder / "processor_config.json").read_text())
    config["processor_class"] = "BpoCustomProcessor"
    config["auto_map"] = {"AutoProcessor": "processing_custom.BpoCustomProcessor"}
    (folder / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeCheckpointError, match="--trust-remote-code"):
        load_processor(ModelConfig(name=str(folder)))


def test_a_built_in_model_type_with_an_auto_map_loads_without_its_code(remote_code_model) -> None:
    """transformers uses its own class when it knows the model_type; no shipped code runs."""
    folder, marker = remote_code_model
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llava"
    (folder / "config.json").write_text(json.dumps(config))
    source = ModelSource.resolve(folder)
    assert type(source.load_config()).__name__ == "LlavaConfig"
    assert not marker.exists()


# --- vLLM -----------------------------------------------------------------------------------


def test_vllm_reads_safetensors_only_unless_pickle_is_allowed(
    tiny_llava_path: Path, pickle_model: Path, monkeypatch
) -> None:
    """vLLM is not installed here: a stand-in module records what the engine is given."""
    from bpo.backends.vllm import VLLMBackend

    engines: list[dict[str, Any]] = []
    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kwargs: engines.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", fake)

    VLLMBackend(tiny_llava_path)
    assert engines[-1]["load_format"] == "safetensors"
    assert engines[-1]["trust_remote_code"] is False
    with pytest.raises(UnsafeCheckpointError, match=r"pytorch_model\.bin"):
        VLLMBackend(pickle_model)
    assert len(engines) == 1  # refused before the engine was built
    VLLMBackend(pickle_model, allow_pickle=True)
    assert engines[-1]["load_format"] == "auto"
    with pytest.raises(ConfigError, match="no such directory"):
        VLLMBackend("./does/not/exist")


def test_every_refusal_is_a_bpo_error() -> None:
    assert issubclass(UnsafeCheckpointError, BpoError)


def test_train_and_export_take_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from bpo.cli import main

    assert main(["train", "--print-config"]) == 0
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["allow_pickle"] is False and model["trust_remote_code"] is False
    assert main(["train", "--allow-pickle", "--trust-remote-code", "--print-config"]) == 0
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["allow_pickle"] is True and model["trust_remote_code"] is True
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "--allow-pickle" in capsys.readouterr().out


def test_bpo_run_applies_the_recipes_model_flags_to_bootstrap(
    pickle_model: Path, tmp_path: Path
) -> None:
    from bpo.config import load_recipe
    from bpo.pipeline import run_pipeline

    from .bootstrap.conftest import write_dataset

    samples = write_dataset(tmp_path / "data", 2)
    recipe_path = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"
    overrides = [
        f"model.name={pickle_model}",
        f"samples.path={samples}",
        f"samples.image_root={samples.parent / 'images'}",
        "bootstrap.strategies=[image-weakening]",
        "bootstrap.max_new_tokens=4",
    ]
    with pytest.raises(UnsafeCheckpointError, match=r"pytorch_model\.bin"):
        run_pipeline(load_recipe(recipe_path, overrides), tmp_path / "refused", progress=False)
    allowed = load_recipe(recipe_path, [*overrides, "model.allow_pickle=true"])
    run = run_pipeline(allowed, tmp_path / "allowed", stages=("bootstrap",), progress=False)
    assert run.path("negatives", "image-weakening.jsonl").read_text().count("\n") == 2
