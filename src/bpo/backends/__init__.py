"""Generation backends: one protocol (requests in, texts out), chosen by name.

- ``hf``: transformers on this machine, batched (`bpo.backends.hf.HFBackend`).
- ``openai``: any OpenAI-compatible chat-completions server over HTTP
  (`bpo.backends.openai.OpenAIBackend`): vLLM, TGI, `bpo serve`, hosted APIs.
- ``vllm``: vLLM's offline engine on a GPU (`bpo.backends.vllm.VLLMBackend`).

Importing this package is cheap; a backend's heavy dependencies load when it is built.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from bpo.backends.base import Backend, Completion, GenerationRequest
from bpo.errors import ConfigError

# name -> (module, class); imported on demand so that choosing "openai" never loads torch.
BACKENDS: dict[str, tuple[str, str]] = {
    "hf": ("bpo.backends.hf", "HFBackend"),
    "openai": ("bpo.backends.openai", "OpenAIBackend"),
    "vllm": ("bpo.backends.vllm", "VLLMBackend"),
}


def get_backend(name: str, **options: Any) -> Backend:
    """Build the backend registered under `name` with its keyword `options`.

    Raises:
        ConfigError: for an unknown name (the message lists the valid ones) or
            options the backend does not take.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name]
    backend_class = getattr(importlib.import_module(module_name), class_name)
    try:
        inspect.signature(backend_class).bind(**options)
    except TypeError as error:
        raise ConfigError(f"backend {name!r}: {error}") from None
    backend: Backend = backend_class(**options)
    return backend


def backend_options(
    name: str,
    *,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 8,
    device: str = "cpu",
    dtype: str = "auto",
    batch_size: int = 16,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    processor_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Of the common settings, the keyword options backend `name` takes (for `get_backend`).

    ``trust_remote_code`` and ``allow_pickle`` apply to the backends that load a model
    here (hf, vllm); both stay off unless asked (see `bpo.checkpoints`).
    ``processor_kwargs`` (the image sizes a recipe trains at) apply to the hf backend.
    """
    if name == "openai":
        if not base_url:
            raise ConfigError("an openai backend needs its server URL (--base-url)")
        return {"base_url": base_url, "api_key_env": api_key_env, "concurrency": concurrency}
    safety = {"trust_remote_code": trust_remote_code, "allow_pickle": allow_pickle}
    if name == "vllm":
        return {"dtype": dtype, **safety}
    options = {"device": device, "dtype": dtype, "batch_size": batch_size, **safety}
    if processor_kwargs:
        options["processor_kwargs"] = dict(processor_kwargs)
    return options


__all__ = [
    "BACKENDS",
    "Backend",
    "Completion",
    "GenerationRequest",
    "backend_options",
    "get_backend",
]
