"""A smoke check of a tiny checkpoint: load it the standard way and answer one question."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpo.tiny_models.common import load_tiny_model

if TYPE_CHECKING:
    from PIL import Image


def synthetic_image(size: int = 64) -> Image.Image:
    """A small RGB test card (colour gradient and a disc), made without any data file."""
    import numpy as np
    from PIL import Image

    axis = np.linspace(0.0, 1.0, size)
    red, green = np.meshgrid(axis, axis[::-1])
    disc = (red - 0.5) ** 2 + (green - 0.5) ** 2 < 0.08
    pixels = np.stack([red, green, disc.astype(float)], axis=-1)
    return Image.fromarray((pixels * 255).astype(np.uint8), mode="RGB")


@dataclass(frozen=True)
class SmokeResult:
    """What `smoke_test` saw: model size, timings and the generated text."""

    parameters: int
    load_seconds: float
    generate_seconds: float
    new_tokens: int
    text: str


def smoke_test(
    path: str | os.PathLike[str],
    *,
    question: str = "What is in the image?",
    max_new_tokens: int = 8,
) -> SmokeResult:
    """Load a checkpoint the standard way and answer `question` about a synthetic image."""
    import torch

    start = time.perf_counter()
    model, processor = load_tiny_model(path)
    loaded = time.perf_counter()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(
        images=[synthetic_image()], text=[prompt], add_special_tokens=False, return_tensors="pt"
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return SmokeResult(
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        load_seconds=loaded - start,
        generate_seconds=time.perf_counter() - loaded,
        new_tokens=int(new_tokens.numel()),
        text=processor.decode(new_tokens, skip_special_tokens=True),
    )
