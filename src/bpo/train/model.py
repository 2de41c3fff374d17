"""Loading the model and processor of a recipe, and choosing what trains.

LoRA by default: every linear layer of the language model (found with
``model.get_decoder()``, so the same code serves LLaVA, Qwen2-VL and any
transformers VLM), the vision tower frozen, the projector trained in full only
when asked. Full fine-tuning trains the language model (and the projector when
asked) and freezes the vision tower, as LLaVA's own fine-tuning does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch

from bpo import compat
from bpo.checkpoints import ModelSource
from bpo.config import ModelConfig, Recipe
from bpo.errors import ConfigError

if TYPE_CHECKING:
    from peft import LoraConfig as PeftLoraConfig
    from transformers import PreTrainedModel, ProcessorMixin

# Names of the vision-language projector in transformers' VLMs: LLaVA / LLaVA-NeXT /
# PaliGemma (multi_modal_projector), Qwen2-VL / Qwen2.5-VL (visual.merger), Idefics3 /
# SmolVLM (connector).
PROJECTOR_NAMES = ("multi_modal_projector", "visual.merger", "connector", "mm_projector")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_source(config: ModelConfig, *, weights: bool = True) -> ModelSource:
    """The recipe's model, resolved and checked (`bpo.checkpoints`): safetensors and no
    shipped code unless ``model.allow_pickle`` / ``model.trust_remote_code`` say otherwise."""
    if not config.name:
        raise ConfigError("model.name is not set: give a hub id or a local model folder")
    return ModelSource.resolve(
        config.name,
        revision=config.revision,
        trust_remote_code=config.trust_remote_code,
        allow_pickle=config.allow_pickle,
        weights=weights,
    )


def load_processor(config: ModelConfig) -> ProcessorMixin:
    """The model's processor, with a pad token (TRL pads with it; EOS stands in when there is none)."""
    from transformers import AutoProcessor, ProcessorMixin

    compat.allow_processors_without_torchvision()
    source = model_source(config, weights=False)
    processor = source.load(AutoProcessor, "processor", **config.processor_kwargs)
    if not isinstance(processor, ProcessorMixin):
        raise ConfigError(
            f"model.name {config.name!r} has a {type(processor).__name__}, not a multimodal "
            "processor: bpo trains vision-language models"
        )
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor


def load_model(config: ModelConfig) -> PreTrainedModel:
    """The model, through `AutoModelForImageTextToText.from_pretrained` (safetensors by default)."""
    from transformers import AutoModelForImageTextToText

    kwargs: dict[str, Any] = {"dtype": _DTYPES.get(config.dtype, "auto")}
    if config.attn_implementation is not None:
        kwargs["attn_implementation"] = config.attn_implementation
    model: PreTrainedModel = model_source(config).load_model(AutoModelForImageTextToText, **kwargs)
    return model


def _module_name(model: torch.nn.Module, target: torch.nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ConfigError(f"{type(model).__name__}: its language model is not one of its modules")


def language_model_prefix(model: PreTrainedModel) -> str:
    """The module path of the language model inside a VLM (e.g. ``model.language_model``)."""
    decoder = model.get_decoder()
    if decoder is None or decoder is model:
        raise ConfigError(
            f"{type(model).__name__} exposes no separate language model (get_decoder)"
        )
    return _module_name(model, decoder)


def projector_prefixes(model: torch.nn.Module, names: list[str] | None = None) -> list[str]:
    """Module paths of the vision-language projector (by `names`, else the known names)."""
    wanted = names or list(PROJECTOR_NAMES)
    found = [
        name
        for name, _ in model.named_modules()
        if any(name == n or name.endswith("." + n) for n in wanted)
    ]
    # Keep outermost matches only (e.g. not visual.merger.mlp when visual.merger matched).
    found = [n for n in found if not any(n != o and n.startswith(o + ".") for o in found)]
    if names and not found:
        raise ConfigError(f"lora.projector_modules: no module named {', '.join(names)}")
    return found


def lora_target_pattern(model: PreTrainedModel, target_modules: list[str] | None) -> str:
    """A PEFT ``target_modules`` regex: the chosen linear layers of the language model only.

    PEFT's ``"all-linear"`` would also adapt the vision tower and the projector.
    """
    prefix = language_model_prefix(model)
    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.startswith(prefix + ".")
        }
    )
    if target_modules:
        unknown = sorted(set(target_modules) - set(leaves))
        if unknown:
            raise ConfigError(
                f"lora.target_modules: {', '.join(unknown)} not among the language model's "
                f"linear layers ({', '.join(leaves)})"
            )
        leaves = sorted(set(target_modules))
    if not leaves:
        raise ConfigError(f"{type(model).__name__}: the language model has no linear layer")
    return rf"^{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, leaves))})$"


def peft_config(recipe: Recipe, model: PreTrainedModel) -> PeftLoraConfig | None:
    """The PEFT LoRA config of the recipe, or None for full fine-tuning."""
    from peft import LoraConfig as PeftLoraConfig

    lora = recipe.lora
    if not lora.enabled:
        return None
    modules_to_save = (
        projector_prefixes(model, lora.projector_modules) if lora.train_projector else None
    )
    if lora.train_projector and not modules_to_save:
        raise ConfigError(
            f"lora.train_projector: no projector found in {type(model).__name__}; "
            "name it with lora.projector_modules"
        )
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_pattern(model, lora.target_modules),
        modules_to_save=modules_to_save,
    )


def freeze_for_full_finetuning(model: PreTrainedModel, recipe: Recipe) -> None:
    """Full fine-tuning: the language model (and lm_head) train; vision tower and projector freeze.

    The projector trains too with ``lora.train_projector``.
    """
    language = language_model_prefix(model)
    projectors = projector_prefixes(model, recipe.lora.projector_modules)
    trainable = [language]
    if recipe.lora.train_projector:
        trainable += projectors
    output = model.get_output_embeddings()
    output_name = _module_name(model, output) if output is not None else None
    for name, parameter in model.named_parameters():
        inside = any(name.startswith(prefix + ".") for prefix in trainable)
        if output_name is not None and name.startswith(output_name + "."):
            inside = True
        parameter.requires_grad_(inside)
