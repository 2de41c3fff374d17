"""Strategies by name, built the same way for `bpo bootstrap` and `bpo run`."""

from __future__ import annotations

from typing import Any

from bpo.backends import Backend
from bpo.bootstrap.base import BootstrapStrategy
from bpo.errors import ConfigError

STRATEGIES = ("image-weakening", "llm-injection", "cooccurrence")
MODEL_STRATEGIES = ("image-weakening", "llm-injection")
IMAGE_STRATEGIES = ("image-weakening",)  # the runner loads each sample's image for these


def make_strategy(
    name: str,
    *,
    backend: Backend | None = None,
    distortion: str = "diffusion",
    distortion_params: dict[str, Any] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    style: str = "instruction",
    template: str | None = None,
    lexicon: str | None = None,
) -> BootstrapStrategy:
    """The strategy `name`, configured.

    Args:
        name: one of `STRATEGIES`.
        backend: the model: a VLM for image-weakening, a text LLM for llm-injection.
        distortion, distortion_params: image-weakening's distortion (`bpo.distort`).
        temperature, top_p, max_new_tokens: sampling of the model strategies.
        style, template: llm-injection's prompt style or template file.
        lexicon: cooccurrence: a lexicon file extending the COCO objects.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    if name == "cooccurrence":
        from bpo.bootstrap.cooccurrence import CooccurrenceInjector
        from bpo.lexicon import ObjectLexicon

        objects = ObjectLexicon.default()
        if lexicon:
            objects = objects.extend(ObjectLexicon.load(lexicon))
        return CooccurrenceInjector(objects)
    if backend is None:
        raise ConfigError(f"strategy {name} needs a model")
    if name == "llm-injection":
        from bpo.bootstrap.llm_injection import LlmInjector

        return LlmInjector(
            backend,
            style=style,
            template_path=template,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
        )
    from bpo.bootstrap.image_weakening import ImageWeakening

    return ImageWeakening(
        backend,
        distortion=distortion,
        distortion_params=distortion_params,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
    )


def strategy_settings(
    name: str,
    *,
    num_negatives: int,
    seed: int,
    model: str | None = None,
    backend: str | None = None,
    dtype: str | None = None,
    distortion: str = "diffusion",
    distortion_params: dict[str, Any] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    style: str = "instruction",
    template: str | None = None,
    lexicon: str | None = None,
) -> dict[str, Any]:
    """The settings that shape the negatives of strategy `name` (`bpo.provenance`).

    The same keywords as `make_strategy`, with the model named instead of built,
    so the settings can be checked before a model loads. Only what the strategy
    uses is kept (cooccurrence has no model), and files count by their content.
    """
    from bpo.provenance import file_digest

    settings: dict[str, Any] = {"strategy": name, "num_negatives": num_negatives, "seed": seed}
    if name in MODEL_STRATEGIES:
        settings.update(
            model=model,
            backend=backend,
            dtype=dtype,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
        )
    if name == "image-weakening":
        settings.update(distortion=distortion, distortion_params=dict(distortion_params or {}))
    elif name == "llm-injection":
        settings.update(style=style, template=file_digest(template) if template else None)
    elif name == "cooccurrence":
        settings["lexicon"] = file_digest(lexicon) if lexicon else None
    return settings
