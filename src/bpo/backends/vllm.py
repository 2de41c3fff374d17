"""Generation with vLLM's offline engine (`vllm.LLM`) on a GPU.

vLLM schedules all requests itself (continuous batching, paged attention), so
this backend hands it everything at once. Prompts go through `LLM.chat`, which
applies the checkpoint's chat template; images travel as data URLs in
``image_url`` parts, the form every vLLM version's chat parser accepts. Seeds
are per request (`SamplingParams.seed`): a request's text does not depend on
the other requests in the call.

vLLM is an optional dependency (``pip install "bpo[vllm]"``): it pins a CUDA
build of torch and its own transformers, so the CPU set-up never installs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bpo.backends.base import GenerationRequest, check_request, openai_messages
from bpo.errors import ConfigError


class VLLMBackend:
    """Generates with a `vllm.LLM` engine in this process.

    Args:
        model: a model directory or hub name.
        dtype: "auto", "float16", "bfloat16" or "float32".
        tensor_parallel_size: GPUs to shard the model over.
        gpu_memory_utilization: the share of GPU memory vLLM may take.
        max_model_len: the context length to allocate for (None: the model's).
        trust_remote_code: run code shipped with the checkpoint; off unless asked.
        allow_pickle: load pickle-based weights when the checkpoint has no safetensors;
            off unless asked (see `bpo.checkpoints`).
        engine_options: further keyword arguments for `vllm.LLM`.
    """

    name = "vllm"

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ConfigError(
                f'the vllm backend needs vLLM: pip install "bpo[vllm]" on a GPU machine ({error})'
            ) from None
        from bpo.checkpoints import ModelSource

        source = ModelSource.resolve(
            model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle
        )
        self.model_name = str(model)
        self._vllm = vllm
        # vLLM's load_format "safetensors" reads only *.safetensors; "auto" falls back to
        # pickle-based *.bin / *.pt files, so only when they are allowed.
        options: dict[str, Any] = {"load_format": "auto" if allow_pickle else "safetensors"}
        options.update(engine_options or {})
        with source.loading("model"):
            self.llm: Any = vllm.LLM(
                model=source.path,
                dtype=dtype,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                trust_remote_code=trust_remote_code,
                **options,
            )

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: bool = False
    ) -> list[str]:
        """One text per request, in order."""
        for request in requests:
            check_request(request)
        if not requests:
            return []
        sampling = [
            self._vllm.SamplingParams(
                max_tokens=request.max_new_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.seed,
            )
            for request in requests
        ]
        outputs = self.llm.chat(
            [openai_messages(request) for request in requests],
            sampling_params=sampling,
            use_tqdm=progress,
        )
        return [output.outputs[0].text.strip() for output in outputs]

    def close(self) -> None:
        """Drop the engine so its GPU memory can be reclaimed."""
        self.llm = None
