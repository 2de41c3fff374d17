"""Tiny random vision-language models, one module per family, built offline by name.

`build_tiny_model(arch, out_dir)` writes a complete checkpoint (safetensors
weights, config, generation config, processor, tokenizer, chat template) that
`AutoModelForImageTextToText.from_pretrained(out_dir)` and
`AutoProcessor.from_pretrained(out_dir)` load back exactly like the hub
checkpoint its family module names, so CPU tests run the code path of the real
model. The idea follows TRL's tiny test models (huggingface/trl,
scripts/generate_tiny_models.py), except that nothing comes from the hub: each
family's own config, model, processor and tokenizer classes are built here, the
tokenizer trained on a small embedded English corpus and the weights random
(seeded).

Processors with a video part (Qwen2-VL, SmolVLM, InternVL ...) and Pixtral's
need torchvision in transformers 5 (transformers issue #48558). Where it is
missing (the CPU set-up: the PyPI wheel would replace the CPU torch),
`bpo.compat.allow_processors_without_torchvision` lets them load for images;
the builders and `load_tiny_model` apply it, and it is a no-op with torchvision.

Importing this package is light (no torch or transformers), so ``bpo --help``
can list the families.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import fields, replace
from pathlib import Path

from bpo.errors import ConfigError
from bpo.tiny_models.common import Family, TinySize, describe, load_tiny_model, save
from bpo.tiny_models.smoke import SmokeResult, smoke_test, synthetic_image

# name -> module in this package. Order: LLaVA, Qwen, then the others by name.
_MODULES = {
    "llava": "llava",
    "llava-next": "llava_next",
    "llava-onevision": "llava_onevision",
    "qwen2-vl": "qwen2_vl",
    "qwen2.5-vl": "qwen2_5_vl",
    "qwen3-vl": "qwen3_vl",
    "gemma3": "gemma3",
    "idefics3": "idefics3",
    "internvl": "internvl",
    "mistral3": "mistral3",
    "mllama": "mllama",
    "paligemma": "paligemma",
    "smolvlm": "smolvlm",
}
ARCHES = tuple(_MODULES)


def family(arch: str) -> Family:
    """The family registered as `arch`; unknown names raise `ConfigError` listing the valid ones."""
    if arch not in _MODULES:
        raise ConfigError(f"unknown tiny-model arch {arch!r}; valid: {', '.join(ARCHES)}")
    found: Family = importlib.import_module(f"{__name__}.{_MODULES[arch]}").FAMILY
    return found


def available_arches() -> tuple[str, ...]:
    """The families that can be built in this environment."""
    return tuple(arch for arch in ARCHES if family(arch).unavailable is None)


def tiny_size(arch: str, **overrides: int) -> TinySize:
    """The default sizes of `arch` with `overrides` applied; unknown names raise `ConfigError`."""
    default = family(arch).default_size
    valid = {field.name for field in fields(TinySize)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(
            f"unknown tiny-model size {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    for name, value in overrides.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"tiny-model size {name} must be a positive integer, got {value!r}")
    return replace(default, **overrides)


def build_tiny_model(
    arch: str, out_dir: str | os.PathLike[str], *, seed: int = 0, **sizes: int
) -> Path:
    """Build a tiny random VLM of family `arch` from configs and save it as a standard checkpoint.

    Args:
        arch: a family name, one of `ARCHES` (``"llava"``, ``"qwen2-vl"``, ``"gemma3"`` ...).
        out_dir: the folder to write (created; files of an earlier build are overwritten).
        seed: seeds the weights; the same seed gives identical weights.
        **sizes: overrides of `TinySize` fields, e.g. ``hidden_size=32``.

    Returns:
        The checkpoint folder, loadable with ``AutoModelForImageTextToText`` and
        ``AutoProcessor`` (without torchvision, after
        `bpo.compat.allow_processors_without_torchvision`; see `load_tiny_model`).

    Raises:
        ConfigError: an unknown arch or size, a family that cannot be built here, or an
            `out_dir` that is not a folder.
    """
    chosen = family(arch)
    if chosen.unavailable is not None:
        raise ConfigError(f"tiny-model arch {arch!r} cannot be built here: {chosen.unavailable}")
    size = tiny_size(arch, **sizes)
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"tiny-model output {target} exists and is not a folder")
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = chosen.build(size)
    return save(model, processor, target, describe(arch, seed, size))


__all__ = [
    "ARCHES",
    "Family",
    "SmokeResult",
    "TinySize",
    "available_arches",
    "build_tiny_model",
    "family",
    "load_tiny_model",
    "smoke_test",
    "synthetic_image",
    "tiny_size",
]
