"""Choosing a backend by name, and the messages when that cannot work."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from bpo.backends import BACKENDS, Backend, get_backend
from bpo.errors import ConfigError


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        get_backend("llamacpp")
    for name in ("hf", "openai", "vllm"):
        assert name in str(error.value)
    assert set(BACKENDS) == {"hf", "openai", "vllm"}


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="openai"):
        get_backend("openai", model="m", base_url="http://127.0.0.1:9/v1", temprature=0.5)


def test_openai_backend_satisfies_the_protocol() -> None:
    backend = get_backend("openai", model="m", base_url="http://127.0.0.1:9/v1")
    try:
        assert isinstance(backend, Backend)
        assert (backend.name, backend.model_name) == ("openai", "m")
    finally:
        backend.close()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_without_vllm_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match=r'pip install "bpo\[vllm\]"'):
        get_backend("vllm", model="some/model")


def test_importing_backends_loads_no_heavy_module() -> None:
    # Choosing the openai backend must not pay for torch.
    code = (
        "import sys; import bpo.backends, bpo.backends.openai, bpo.backends.server; "
        "print([m for m in ('torch', 'transformers', 'PIL') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
