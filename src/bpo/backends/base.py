"""The one interface every generation backend implements: requests in, texts out.

A `GenerationRequest` carries a prompt in bpo's own form (the `Sample.prompt`
chat, image in the first user message) plus its sampling settings. A `Backend`
turns a sequence of requests into one text per request, in order; how it
batches, parallelises or retries is its own business.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bpo.data.records import chat_messages
from bpo.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class GenerationRequest:
    """One prompt to complete, with its sampling settings.

    Args:
        messages: the chat before the answer, ``{"role", "content": str}`` messages
            ending with a user message; the image, if any, belongs to the first
            user message.
        image: the image, or None for a text-only prompt.
        max_new_tokens: the most tokens to generate.
        temperature: sampling temperature; 0 means greedy decoding.
        top_p: nucleus sampling threshold (1.0 = off).
        seed: the random seed for this request, or None for an unseeded draw.
            How exactly a seed holds depends on the backend (see its docstring).
    """

    messages: list[dict[str, str]]
    image: Image.Image | None = None
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class Completion:
    """A generated text with the counts an OpenAI-style response reports."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence) or "length" (hit max_new_tokens)


@runtime_checkable
class Backend(Protocol):
    """What the bootstrap runner and the strategies call to generate text."""

    name: str
    model_name: str

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: bool = False
    ) -> list[str]:
        """One generated text per request, in the order of `requests`."""
        ...

    def close(self) -> None:
        """Release the model, the worker threads or the connections."""
        ...


def multimodal_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """The request's chat in the transformers multimodal form (typed content parts).

    With an image, an ``{"type": "image"}`` part opens the first user message,
    as processors' chat templates expect.
    """
    return chat_messages(request.messages, with_image=request.image is not None)


def image_data_url(image: Image.Image) -> str:
    """The image as a base64 PNG data URL, the form OpenAI-compatible servers accept.

    PNG is lossless, so the server sees exactly the pixels bpo weakened.
    """
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """The request's chat in the OpenAI chat-completions form.

    The message holding the image (the first user message) gets typed parts, the
    image as an ``image_url`` part with a data URL where the transformers form has
    its ``{"type": "image"}`` part; every other message keeps plain string content,
    which every server and chat template accepts.
    """
    rendered = []
    for message in multimodal_messages(request):
        parts = message["content"]
        if any(part["type"] == "image" for part in parts):
            assert request.image is not None
            url = image_data_url(request.image)
            content: Any = [
                {"type": "image_url", "image_url": {"url": url}}
                if part["type"] == "image"
                else part
                for part in parts
            ]
        else:
            content = parts[0]["text"]
        rendered.append({"role": message["role"], "content": content})
    return rendered


def sampling_key(request: GenerationRequest) -> tuple[int, float, float]:
    """The settings requests must share to be generated in one batch."""
    return (request.max_new_tokens, request.temperature, request.top_p)


def check_request(request: GenerationRequest) -> None:
    """Refuse sampling settings no backend can honour, with a clear message."""
    if request.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {request.max_new_tokens}")
    if request.temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {request.temperature}")
    if not 0 < request.top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {request.top_p}")
    if not request.messages or request.messages[-1].get("role") != "user":
        raise ConfigError("a generation request must end with a user message")
